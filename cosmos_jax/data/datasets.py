"""One entry point from a benchmark name and an on-disk format to its `PolicyDataset`: the readers of every format
feed the same sample construction, mixture and pipeline.

    dataset = datasets.load_dataset('aloha', data_dir, config=SampleConfig.for_layout('aloha'))  # the official files
    dataset = datasets.load_dataset('aloha', builder_dir, data_format='rlds', features={...})     # RLDS / TFDS

Formats: 'native' (the benchmark's official files: ALOHA HDF5 + MP4, LIBERO/RoboCasa HDF5), 'rlds' (a TFDS
directory, rlds/reader.py), 'lerobot' (a LeRobot v2.1 / v3.0 dataset, lerobot.py). `features` maps the format's keys to the layout (ignored by 'native').
"""

from __future__ import annotations

from cosmos_jax.data import aloha, lerobot, libero, robocasa
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data.rlds import reader as rlds_reader

# Benchmark (policy layout name) -> loader(data_dir, config, *, stats_path, rollout_dir, ...) -> PolicyDataset.
LOADERS = {
    'aloha': aloha.load_dataset,
    'libero': libero.load_dataset,
    'robocasa': robocasa.load_dataset,
}
FORMATS = ('native', 'rlds', 'lerobot')


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
                 data_format: str = 'native', features=None, **kwargs):
  """The `PolicyDataset` of `benchmark`'s layout ('aloha', ...) from `data_dir` in `data_format`; `config` defaults
  to the benchmark's layout, chunk size and gamma. Keyword arguments go to the reader (stats_path, rollout_dir,
  run_copy, ...)."""
  if benchmark not in LOADERS:
    raise ValueError(f'no dataset reader for benchmark {benchmark!r}; known: {sorted(LOADERS)}')
  config = config or sample_lib.SampleConfig.for_layout(benchmark)
  if config.layout.name != benchmark:
    raise ValueError(f'SampleConfig.layout is {config.layout.name!r} but the benchmark is {benchmark!r}')
  if data_format == 'native':
    return LOADERS[benchmark](data_dir, config, **kwargs)
  if data_format == 'rlds':
    return _load_rlds(data_dir, config, features=features, **kwargs)
  if data_format == 'lerobot':
    features = {k: v for k, v in dict(features or {}).items() if k not in ('split', 'rollout_split')}
    return lerobot.load_dataset(data_dir, config, features=features, **kwargs)
  raise ValueError(f'unknown data format {data_format!r}; known: {list(FORMATS)}')
