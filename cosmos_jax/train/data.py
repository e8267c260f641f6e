"""Training input: the policy dataset as a grain pipeline whose global batches do not depend on the process count.

Global batch k is positions [k·G, (k+1)·G) of an endless sequence of epochs, each a fresh seeded permutation of
the dataset's epoch index space; process p of P builds positions [k·G + p·G/P, k·G + (p+1)·G/P). The per-sample
randomness (world-model/value coin, augmentation) is seeded by (seed, global position). So one process with 4
devices and two processes with 2 devices each see identical global batches, and a restored iterator continues
exactly where it stopped (the grain iterator state is checkpointed with the train state).
"""

from __future__ import annotations

import functools
import os
import grain
import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.data import aloha
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.train import config_lib
from cosmos_jax.train import sharding as sharding_lib
from cosmos_jax.train import state as state_lib

BUNDLED_SAMPLE_DIR = config_lib.BUNDLED_SAMPLE_DIR

# Data layouts (camera roles) by policy layout name.
_DATA_LAYOUTS = {'aloha': sample_lib.ALOHA_LAYOUT, 'libero': sample_lib.LIBERO_LAYOUT,
                 'robocasa': sample_lib.ROBOCASA_LAYOUT}


class _BuildSample(grain.transforms.Map):
  """Process-local record index -> the training sample at its global position (picklable for worker processes)."""

  def __init__(self, dataset: sample_lib.PolicyDataset, text_table: np.ndarray, seed: int, global_batch: int,
               process_index: int, process_count: int):
    self.dataset, self.text_table, self.seed = dataset, text_table, seed
    self.global_batch, self.local_batch = global_batch, global_batch // process_count
    self.process_index = process_index

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

  def map(self, local_index: int) -> dict[str, np.ndarray]:
    b = self.local_batch
    position = (local_index // b) * self.global_batch + self.process_index * b + local_index % b
    epoch, offset = divmod(position, len(self.dataset))
    record = int(self._permutation(epoch)[offset])
    sample = self.dataset.sample(record, np.random.default_rng([self.seed, 1, position]))
    out = {k: sample[k] for k in state_lib.BATCH_KEYS if k in sample}
    out['t5_text_embeddings'] = self.text_table[int(sample['text_index'])]
    return out


class TrainingData:
  """The dataset, its statistics and text, and the checkpointable iterator of process-local batches."""

  def __init__(self, config, layout: layout_lib.SlotLayout, *, process_index: int, process_count: int):
    d = config.data
    dataset_dir = d.dataset_dir or str(BUNDLED_SAMPLE_DIR)
    if not os.path.isdir(dataset_dir):
      raise FileNotFoundError(f'data.dataset_dir {dataset_dir!r} is not a directory')
    if layout.name not in _DATA_LAYOUTS:
      raise ValueError(f'no data layout for {layout.name!r}')
    sample_cfg = sample_lib.SampleConfig(layout=_DATA_LAYOUTS[layout.name], chunk_size=layout.chunk_size,
                                         gamma=layout.gamma, image_size=d.image_size, augment=d.augment)
    self.dataset = aloha.load_dataset(dataset_dir, sample_cfg, stats_path=d.statistics or None,
                                      rollout_dir=d.rollouts_dir or None)
    store_dir = d.text_store or os.path.join(dataset_dir, 'text_store')
    if not os.path.isdir(store_dir):
      raise FileNotFoundError(f'text store {store_dir!r} not found (make one with python -m cosmos_jax.data.text '
                              'import --pickle <t5_embeddings.pkl> --out <dir>, and set data.text_store)')
    self.text_table = text_lib.TextStore.load(store_dir).table(self.dataset.tasks)
    self.layout = layout
    self.image_size = d.image_size
    self.global_batch_size = config.batch_size
    if config.batch_size % process_count:
      raise ValueError(f'batch_size {config.batch_size} is not divisible by the {process_count} processes')
    local = config.batch_size // process_count
    # Enough records for every step of the run (grain needs a finite length); epochs repeat inside.
    num_local_records = local * (config.total_steps + 1)
    ds = grain.MapDataset.range(num_local_records).map(
        _BuildSample(self.dataset, self.text_table, config.seed, config.batch_size, process_index, process_count))
    ds = ds.batch(local, drop_remainder=True).to_iter_dataset()
    if d.num_workers > 0:
      ds = ds.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(num_workers=d.num_workers))
    self.iterator = iter(ds)

  def latent_shape(self) -> tuple[int, int, int]:
    s = self.image_size // 8
    return self.layout.state_t, s, s

  def text_tokens(self) -> int:
    return self.text_table.shape[1]

  def abstract_global_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    g, s = self.global_batch_size, self.image_size
    chunk, a, p = self.layout.chunk_size, self.layout.action_dim, self.layout.proprio_dim
    return {
        'video': jax.ShapeDtypeStruct((g, self.layout.state_t, s, s, 3), jnp.uint8),
        't5_text_embeddings': jax.ShapeDtypeStruct((g,) + self.text_table.shape[1:], self.text_table.dtype),
        'actions': jax.ShapeDtypeStruct((g, chunk, a), jnp.float32),
        'proprio': jax.ShapeDtypeStruct((g, p), jnp.float32),
        'future_proprio': jax.ShapeDtypeStruct((g, p), jnp.float32),
        'value_function_return': jax.ShapeDtypeStruct((g,), jnp.float32),
        'rollout_data_mask': jax.ShapeDtypeStruct((g,), jnp.int32),
        'world_model_sample_mask': jax.ShapeDtypeStruct((g,), jnp.int32),
        'value_function_sample_mask': jax.ShapeDtypeStruct((g,), jnp.int32),
    }

  def next_global_batch(self, mesh) -> dict[str, jax.Array]:
    local = next(self.iterator)
    abstract = self.abstract_global_batch()
    out = {}
    for key, spec in abstract.items():
      value = np.asarray(local[key])
      if value.dtype != spec.dtype:
        raise ValueError(f'batch[{key!r}] has dtype {value.dtype}, expected {spec.dtype}')
      out[key] = jax.make_array_from_process_local_data(sharding_lib.batch_sharding(mesh, value.ndim), value,
                                                        spec.shape)
    return out

  def statistics_json(self) -> dict:
    return {k: np.asarray(v).tolist() for k, v in self.dataset.stats.items()}


def make_training_data(config, layout: layout_lib.SlotLayout, *, process_index: int,
                       process_count: int) -> TrainingData:
  return TrainingData(config, layout, process_index=process_index, process_count=process_count)
