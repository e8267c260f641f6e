"""Shared helpers for the golden-vector parity tests.

Golden cases are folders (produced by the official PyTorch code) in `tests/golden/`, or in the directory named by
the environment variable `COSMOS_JAX_GOLDEN_DIR`; tests discover them by folder-name prefix so new cases run
without code changes.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

DEFAULT_GOLDEN_DIR = pathlib.Path(__file__).resolve().parent / 'golden'


def golden_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get('COSMOS_JAX_GOLDEN_DIR', DEFAULT_GOLDEN_DIR))


def golden_cases(prefix: str) -> list:
  """One `pytest.param` per folder named `{prefix}*`, with the folder name as the test id.

  A golden directory without any such folder is an error (not an empty parametrization, which would pass silently).
  """
  root = golden_dir()
  folders = sorted(p for p in root.glob(f'{prefix}*') if p.is_dir())
  if not folders:
    raise FileNotFoundError(f'no golden case folders named {prefix}* in {root} (set COSMOS_JAX_GOLDEN_DIR?)')
  return [pytest.param(p, id=p.name) for p in folders]


def load_config(folder: pathlib.Path) -> dict:
  return json.loads((folder / 'config.json').read_text())


def errors(actual, expected) -> tuple[float, float, float]:
  """(max abs error, relative L2 error, max relative error) in float64."""
  a = np.asarray(actual, dtype=np.float64)
  e = np.asarray(expected, dtype=np.float64)
  diff = np.abs(a - e)
  max_abs = float(diff.max()) if diff.size else 0.0
  rel_l2 = float(np.linalg.norm(diff) / max(np.linalg.norm(e), 1e-30))
  max_rel = float((diff / np.maximum(np.abs(e), 1e-12)).max()) if diff.size else 0.0
  return max_abs, rel_l2, max_rel


def assert_close(actual, expected, *, name: str, rel_l2: float = 1e-5, max_abs: float | None = None) -> None:
  """Fails with the max abs and relative errors in the message."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, f'{name}: shape {actual.shape} != expected {expected.shape}'
  got_abs, got_rel, got_max_rel = errors(actual, expected)
  ok = got_rel <= rel_l2 and (max_abs is None or got_abs <= max_abs)
  assert ok, (f'{name}: max abs error {got_abs:.3e} (limit {max_abs}), relative L2 error {got_rel:.3e} '
              f'(limit {rel_l2:.0e}), max elementwise relative error {got_max_rel:.3e}')


# ----------------------------------------------------------------------------------------------------------------
# References whose float32 rounding depends on the CPU (torch, OpenCV, an XLA program with or without FMA).


def near_rounding_tie(reference, tolerance: float) -> np.ndarray:
  """Where a float64 reference value lies within `tolerance` of a half-integer k + 0.5, the boundary of
  round-to-nearest (nearest-neighbour sampling, rounding to uint8).

  Float32 pipelines on different CPUs (fused multiply-add or not, vector width, summation order) each land within a
  few float32 ulps of the exact value. Where that value is this close to a boundary they may round to either
  neighbour, so there a float32 result is not a property of the math and no implementation matches all of them.
  """
  reference = np.asarray(reference, np.float64)
  return np.abs(reference - np.floor(reference) - 0.5) <= tolerance


def assert_equal_away_from_ties(actual, expected, near_tie, *, name: str, max_tie_fraction: float,
                                tie_ok=None) -> tuple[int, int]:
  """Exact equality wherever `near_tie` is False; at most `max_tie_fraction` of the positions may be near a tie.

  Where `near_tie` is True the values may differ, but only where `tie_ok` is True when it is given (for example:
  both values are one of the neighbours the tie lies between). The fraction bound keeps the exemption from hiding
  a real error: rounding ties are rare in generic data. Returns (positions near a tie, positions that differ).
  """
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, f'{name}: shape {actual.shape} != expected {expected.shape}'
  near_tie = np.broadcast_to(np.asarray(near_tie, bool), actual.shape)
  differ = actual != expected
  ties, differing = int(near_tie.sum()), int(differ.sum())
  summary = (f'{name}: {ties} of {actual.size} values ({ties / max(actual.size, 1):.2e}) near a rounding tie, '
             f'{differing} differ')

  def where(mask):
    index = np.argwhere(mask)[:5]
    return ', '.join(f'{tuple(int(i) for i in ix)}: {actual[tuple(ix)]} vs {expected[tuple(ix)]}' for ix in index)

  wrong = differ & ~near_tie
  assert not wrong.any(), f'{summary}; {int(wrong.sum())} differ away from any tie, first at {where(wrong)}'
  if tie_ok is not None:
    wrong = differ & ~np.broadcast_to(np.asarray(tie_ok, bool), actual.shape)
    assert not wrong.any(), (f'{summary}; {int(wrong.sum())} near a tie differ by more than its rounding allows, '
                             f'first at {where(wrong)}')
  assert ties <= max_tie_fraction * actual.size, (f'{summary}: more than the bound {max_tie_fraction:.1e}, so the '
                                                  'tie tolerance is too wide to be a rounding margin')
  print(summary)
  return ties, differing
