"""Min-max (un)normalisation of proprio and actions with the dataset statistics, to [-1, 1] and back.

x_n = 2 * ((x - min) / (max - min)) - 1, and x = 0.5 * (x_n + 1) * (max - min) + min, in the official operation
order (official cosmos_policy/datasets/dataset_utils.py:rescale_data and
cosmos_policy/experiments/robot/cosmos_utils.py:unnormalize_actions). The official code divides by zero on a
constant dimension; here that is a ValueError naming the dimension. Array-namespace agnostic (numpy or jax.numpy
inputs); `stats` maps `<key>_min` / `<key>_max` to 1-D arrays (cosmos_jax.data.stats reads the file).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def check_range(lo: np.ndarray, hi: np.ndarray, key: str, source: str) -> None:
  """max > min in every dimension, else a ValueError naming the dimensions."""
  constant = np.flatnonzero(~(hi > lo))
  if constant.size:
    details = ', '.join(f'dimension {d} (min {lo[d]!r}, max {hi[d]!r})' for d in constant)
    raise ValueError(f'{source}: {key} statistics have max <= min in {details}; min-max normalisation would divide '
                     'by zero (the official code produces inf/nan here). Drop or fix that dimension.')


def _bounds(stats: Mapping[str, Any], key: str, x) -> tuple[np.ndarray, np.ndarray]:
  lo_name, hi_name = f'{key}_min', f'{key}_max'
  if lo_name not in stats or hi_name not in stats:
    raise ValueError(f'statistics have no {lo_name!r}/{hi_name!r}; available: {sorted(stats)}')
  lo, hi = np.asarray(stats[lo_name]), np.asarray(stats[hi_name])
  if np.shape(x)[-1:] != lo.shape:
    raise ValueError(f'{key}: last dimension of the input {np.shape(x)} does not match the statistics ({lo.shape[0]} '
                     'dimensions)')
  check_range(lo, hi, key, 'statistics')
  return lo, hi


def normalize(x, stats: Mapping[str, Any], key: str):
  """Min-max to [-1, 1]: 2 * ((x - min) / (max - min)) - 1 (same operation order as the official code)."""
  lo, hi = _bounds(stats, key, x)
  return 2 * ((x - lo) / (hi - lo)) - 1


def unnormalize(x_normalized, stats: Mapping[str, Any], key: str):
  """Inverse of `normalize`: 0.5 * (x_n + 1) * (max - min) + min."""
  lo, hi = _bounds(stats, key, x_normalized)
  return 0.5 * (x_normalized + 1) * (hi - lo) + lo
