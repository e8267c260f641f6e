"""One entry point from a benchmark name to its `PolicyDataset`: the readers of every on-disk format feed the same
sample construction, mixture and pipeline.

    dataset = datasets.load_dataset('aloha', data_dir, rollout_dir=None, config=SampleConfig.for_layout('aloha'))
"""

from __future__ import annotations

from cosmos_jax.data import aloha, libero, robocasa
from cosmos_jax.data import sample as sample_lib

# Benchmark (policy layout name) -> loader(data_dir, config, *, stats_path, rollout_dir, ...) -> PolicyDataset.
LOADERS = {
    'aloha': aloha.load_dataset,
    'libero': libero.load_dataset,
    'robocasa': robocasa.load_dataset,
}


def load_dataset(benchmark: str, data_dir: str, config: sample_lib.SampleConfig | None = None, **kwargs):
  """The `PolicyDataset` of `benchmark` ('aloha', ...) under `data_dir`; `config` defaults to the benchmark's
  layout, chunk size and gamma. Keyword arguments go to the benchmark's loader (stats_path, rollout_dir, ...)."""
  if benchmark not in LOADERS:
    raise ValueError(f'no dataset reader for benchmark {benchmark!r}; known: {sorted(LOADERS)}')
  config = config or sample_lib.SampleConfig.for_layout(benchmark)
  if config.layout.name != benchmark:
    raise ValueError(f'SampleConfig.layout is {config.layout.name!r} but the benchmark is {benchmark!r}')
  return LOADERS[benchmark](data_dir, config, **kwargs)
