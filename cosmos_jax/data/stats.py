"""Dataset statistics (`dataset_statistics.json`, official schema): read, validate, compute, write.

The official file is a JSON object with `{actions,proprio}_{min,max,mean,std,median}`, each a list of D floats
computed per dimension over every timestep of the demonstration episodes (official
cosmos_policy/datasets/dataset_utils.py:calculate_dataset_statistics). Only min and max are used, by the min-max
(un)normalisation in cosmos_jax/policy/normalization.py. A constant dimension (max <= min) is refused on reading.

Where the statistics come from (`resolve_statistics`): the dataset's file when it has one (the official behaviour),
else computed from the demonstrations. The official code then writes the file into the dataset folder from every
process; here a dataset folder is never written (it may be read-only, and processes would race). A training run
keeps its statistics in its own folder instead (`RunCopy`): process 0 writes them there, the others wait for that
file, and a resumed run reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from etils import epath

from cosmos_jax.policy import normalization

STAT_KEYS = ('actions', 'proprio')
STAT_NAMES = ('min', 'max', 'mean', 'std', 'median')
STATISTICS_FILENAME = 'dataset_statistics.json'

Statistics = dict[str, np.ndarray]


def _required_fields() -> list[str]:
  return [f'{key}_{name}' for key in STAT_KEYS for name in STAT_NAMES]


def validate_statistics(stats: Mapping[str, Any], *, source: str = '<statistics>', keys=STAT_KEYS) -> None:
  """Checks the schema: every `{key}_{min,max,...}` present, 1-D, one length per key, max > min everywhere."""
  for key in keys:
    fields = [f'{key}_{name}' for name in STAT_NAMES]
    missing = [f for f in fields if f not in stats]
    if missing:
      raise ValueError(f'{source}: missing statistics {missing} (expected keys {_required_fields()})')
    lengths = {f: np.shape(stats[f]) for f in fields}
    if len(set(lengths.values())) != 1 or len(next(iter(lengths.values()))) != 1:
      raise ValueError(f'{source}: statistics for {key!r} must be 1-D lists of one length, got shapes {lengths}')
    normalization.check_range(np.asarray(stats[f'{key}_min']), np.asarray(stats[f'{key}_max']), key, source)


def load_statistics(path: str | os.PathLike) -> Statistics:
  """Reads an official-schema statistics JSON into float64 numpy arrays (as the official `np.array(list)` does).

  A directory is accepted and means `<dir>/dataset_statistics.json`. The schema is validated (including max > min
  for every dimension), and errors name the file.
  """
  path = epath.Path(path)  # any epath: a local file or a bucket URL (gs://...)
  if path.is_dir():
    path = path / STATISTICS_FILENAME
  if not path.exists():
    raise FileNotFoundError(f'statistics file {path} does not exist (compute it with compute_statistics / '
                            'save_statistics, or point at the released <bench>_dataset_statistics.json)')
  try:
    raw = json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from e
  if not isinstance(raw, dict):
    raise ValueError(f'{path}: expected a JSON object of statistics, got {type(raw).__name__}')
  stats = {name: np.asarray(value, dtype=np.float64) for name, value in raw.items()}
  validate_statistics(stats, source=os.fspath(path))
  return stats


def save_statistics(stats: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes statistics in the official JSON layout (lists of floats, indent 4).

  Written to a temporary sibling and renamed into place, so a reader waiting for the file never sees half of it (in
  a bucket, where an object appears whole when its upload completes, written directly).
  """
  text = json.dumps({name: np.asarray(value).tolist() for name, value in stats.items()}, indent=4)
  if '://' in os.fspath(path):
    epath.Path(path).write_text(text, encoding='utf-8')
    return
  path = os.fspath(path)
  partial = f'{path}.partial-{os.getpid()}'
  with open(partial, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(partial, path)


@dataclasses.dataclass(frozen=True)
class RunCopy:
  """The statistics file a training run keeps in its own folder, and whether this process writes it.

  Exactly one process writes (`writer`: process 0); the others wait up to `timeout_s` for the file and read it, so
  every process normalises with the same numbers.
  """

  path: str
  writer: bool
  timeout_s: float = 600.0
  poll_s: float = 0.1


def resolve_statistics(source: str | os.PathLike, compute: Callable[[], Mapping[str, Any]], *,
                       run_copy: RunCopy | None = None) -> Statistics:
  """The statistics to normalise with; `source` is the dataset's (or an explicitly named) statistics file.

  1. The run copy exists: the run's own statistics (a resumed run keeps what it started with). When `source` exists
     too, the two must agree.
  2. `source` exists: read it (the official behaviour); the writer saves a copy with the run.
  3. Neither: `compute()` from the demonstrations. With a run copy the writer computes and saves it and every other
     process waits for that file; without one the statistics stay in memory.
  Nothing is ever written next to `source`.
  """
  source = os.fspath(source)
  if run_copy is not None and epath.Path(run_copy.path).exists():
    stats = load_statistics(run_copy.path)
    if epath.Path(source).exists():
      dataset_stats = load_statistics(source)
      differing = sorted(k for k in set(stats) | set(dataset_stats)
                         if k not in stats or k not in dataset_stats or not np.array_equal(stats[k], dataset_stats[k]))
      if differing:
        raise ValueError(f'the run statistics {run_copy.path} differ from {source} in {differing}: the run started '
                         'with other statistics. Use a new --workdir for the new ones, or restore that file.')
    return stats
  if epath.Path(source).exists():
    stats = load_statistics(source)
    if run_copy is not None and run_copy.writer:
      _make_parent(run_copy.path)
      save_statistics(stats, run_copy.path)
    return stats
  if run_copy is None:
    stats = {name: np.asarray(value, np.float64) for name, value in compute().items()}
    validate_statistics(stats, source=f'statistics computed from the demonstrations (no {source})')
    return stats
  if run_copy.writer:
    _make_parent(run_copy.path)
    save_statistics(compute(), run_copy.path)
    return load_statistics(run_copy.path)  # the same JSON round trip the other processes read
  deadline = time.monotonic() + run_copy.timeout_s
  while not epath.Path(run_copy.path).exists():
    if time.monotonic() > deadline:
      raise TimeoutError(f'waited {run_copy.timeout_s:g} s for the dataset statistics {run_copy.path}, which process '
                         f'0 computes (there is no {source}); is process 0 running, with the same --workdir on a '
                         'shared filesystem?')
    time.sleep(run_copy.poll_s)
  return load_statistics(run_copy.path)


def _make_parent(path: str) -> None:
  if '://' in path:
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def compute_statistics(episodes: Iterable[Mapping[str, Any]], keys=STAT_KEYS) -> Statistics:
  """Per-dimension min/max/mean/std/median over every timestep of every episode, for each of `keys`.

  `episodes` yields mappings with `(T, D)` arrays under each key (raw, un-normalised values). As in the official
  `calculate_dataset_statistics`, the reduction runs over the concatenated timesteps in the arrays' own dtype
  (float32 for ALOHA HDF5 data).
  """
  collected: dict[str, list[np.ndarray]] = {key: [] for key in keys}
  for i, episode in enumerate(episodes):
    for key in keys:
      value = np.asarray(episode[key])
      if value.ndim != 2:
        raise ValueError(f'episode {i}: {key} must be (T, D), got shape {value.shape}')
      collected[key].append(value)
  stats: Statistics = {}
  for key in keys:
    if not collected[key]:
      raise ValueError(f'compute_statistics: no episodes given for {key!r}')
    values = np.concatenate(collected[key], axis=0)
    stats[f'{key}_min'] = np.min(values, axis=0)
    stats[f'{key}_max'] = np.max(values, axis=0)
    stats[f'{key}_mean'] = np.mean(values, axis=0)
    stats[f'{key}_std'] = np.std(values, axis=0)
    stats[f'{key}_median'] = np.median(values, axis=0)
  return stats
