"""One entry point from a benchmark name and an on-disk format to its `PolicyDataset`: the readers of every format
feed the same sample construction, mixture and pipeline.

    dataset = datasets.load_dataset('aloha', data_dir, config=SampleConfig.for_layout('aloha'))  # the official files
    dataset = datasets.load_dataset('aloha', builder_dir, data_format='rlds', features={...})     # RLDS / TFDS

Formats: 'native' (the benchmark's official files: ALOHA HDF5 + MP4, LIBERO/RoboCasa HDF5), 'rlds' (a TFDS
directory, rlds/reader.py), 'lerobot' (a LeRobot v2.1 / v3.0 dataset, lerobot.py). `features` maps the format's
keys to the layout (ignored by 'native').
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from cosmos_jax.data import aloha, lerobot, libero, readers, robocasa
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data.episodes import Episode
from cosmos_jax.data.rlds import reader as rlds_reader


@dataclasses.dataclass(frozen=True)
class Reader:
  """How one benchmark's native files are read: `read_demos(path, image_size, lazy=)` -> the demos of one file,
  `read_rollout(path, image_size, lazy=)` -> one rollout, and the path component demo files sit under (None: every
  HDF5 file under the data directory is a demo file)."""

  read_demos: Callable[..., list[Episode]]
  read_rollout: Callable[..., Episode]
  split: str | None


READERS = {
    'aloha': Reader(aloha.read_demos, aloha.read_rollout, split='train'),
    'libero': Reader(libero.read_demos, libero.read_rollout, split=None),
    'robocasa': Reader(robocasa.read_demos, robocasa.read_rollout, split=None),
}
FORMATS = ('native', 'rlds', 'lerobot')


def load_native(benchmark: str, data_dir: str, config: sample_lib.SampleConfig, *, stats_path: str | None = None,
                run_copy: stats_lib.RunCopy | None = None, rollout_dir: str | None = None, tasks=None,
                lazy: bool = False, skip_mismatched_rollouts: bool = False) -> sample_lib.PolicyDataset:
  """The demos under `data_dir` and the rollouts under `rollout_dir` in `benchmark`'s official files. Rollout
  frame/action count mismatches are errors unless `skip_mismatched_rollouts`."""
  reader = READERS[benchmark]
  files = readers.find_episode_files(data_dir, reader.split)
  if not files:
    where = f' with a {reader.split!r} path component' if reader.split else ''
    raise FileNotFoundError(f'no HDF5 demo files{where} under {data_dir}')
  demos = [e for path in files for e in reader.read_demos(path, config.image_size, lazy=lazy)]
  rollouts = readers.read_rollouts(rollout_dir, lambda f: reader.read_rollout(f, config.image_size, lazy=True),
                                   skip_mismatched=skip_mismatched_rollouts) if rollout_dir else []
  return readers.build_dataset(data_dir, demos, config, rollouts=rollouts, stats_path=stats_path,
                               run_copy=run_copy, tasks=tasks)


def _load_rlds(data_dir, config, *, features=None, rollout_dir=None, **kwargs):
  features = dict(features or {})
  if rollout_dir:
    raise ValueError(f'RLDS dataset {data_dir}: rollouts come from a split of the same dataset '
                     f'(features.rollout_split), not a rollout directory ({rollout_dir!r})')
  split = features.pop('split', '') or 'train'
  rollout_split = features.pop('rollout_split', '') or None
  return rlds_reader.load_policy_dataset(data_dir, config, split=split, rollout_split=rollout_split,
                                         features=features, **kwargs)


def load_dataset(benchmark: str, data_dir: str, config: sample_lib.SampleConfig | None = None, *,
                 data_format: str = 'native', features=None, **kwargs) -> sample_lib.PolicyDataset:
  """The `PolicyDataset` of `benchmark`'s layout ('aloha', 'libero', 'robocasa') from `data_dir` in `data_format`;
  `config` defaults to the benchmark's (`SampleConfig.for_layout`). Keyword arguments go to the reader
  (stats_path, rollout_dir, run_copy, ...; statistics: see `stats.resolve_statistics`)."""
  if benchmark not in READERS:
    raise ValueError(f'no dataset reader for benchmark {benchmark!r}; known: {sorted(READERS)}')
  config = config or sample_lib.SampleConfig.for_layout(benchmark)
  if config.layout.name != benchmark:
    raise ValueError(f'SampleConfig.layout is {config.layout.name!r} but the benchmark is {benchmark!r}')
  if data_format == 'native':
    return load_native(benchmark, data_dir, config, **kwargs)
  if data_format == 'rlds':
    return _load_rlds(data_dir, config, features=features, **kwargs)
  if data_format == 'lerobot':
    features = {k: v for k, v in dict(features or {}).items() if k not in ('split', 'rollout_split')}
    return lerobot.load_dataset(data_dir, config, features=features, **kwargs)
  raise ValueError(f'unknown data format {data_format!r}; known: {list(FORMATS)}')
