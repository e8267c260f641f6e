"""grain input pipeline: global shuffle, per-process sharding, worker processes, checkpointable iterator state.

    dataset = aloha.load_dataset(data_dir, SampleConfig(...))
    loader = make_loader(dataset, batch_size=8, seed=0, worker_count=2)
    it = iter(loader)                      # batches of numpy arrays
    state = it.get_state(); it.set_state(state)   # (bytes) checkpoint / restore with the train state

The data source is the epoch index space of a `PolicyDataset` ([demos | success | failure], see mixture.py).
`grain.IndexSampler` shuffles it globally with `seed` (a fresh permutation every epoch) and shards it by
`jax.process_index()`; each record is built by a `RandomMapTransform` whose numpy Generator grain derives from
(seed, record index), so the world-model/value coin and the augmentation draw do not depend on worker count.

Batch layout (leading axis = per-process batch): `video` (B, state_t, S, S, 3) uint8 (one frame per slot, see
sample.py), float32 `actions` (B, chunk, A), `proprio`/`future_proprio` (B, P), `value_function_return` (B,),
int32 mode masks `rollout_data_mask`, `world_model_sample_mask`, `value_function_sample_mask`, ..., int32 slot
indices `*_latent_idx` and `text_index` (row of `text_table(store, dataset)`), or with `text_store=` the
(B, 512, 1024) bf16 `t5_text_embeddings` themselves.
"""

from __future__ import annotations

from collections.abc import Mapping

import grain.python as grain
import numpy as np

from cosmos_jax.data.sample import PolicyDataset
from cosmos_jax.data.text import TextStore


class EpochIndexSource(grain.RandomAccessDataSource):
  """Records are the epoch indices themselves; the sample is built in the (random) map."""

  def __init__(self, length: int):
    self._length = int(length)

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> int:
    return int(index)

  def __repr__(self) -> str:
    # grain compares the source repr when restoring an iterator state; keep it free of object addresses.
    return f'EpochIndexSource(length={self._length})'


class BuildSample(grain.RandomMapTransform):
  """Epoch index -> training sample (coin + augmentation driven by grain's per-record Generator)."""

  def __init__(self, dataset: PolicyDataset, text_store: TextStore | None = None):
    self.dataset = dataset
    self.text_table = text_table(text_store, dataset) if text_store is not None else None

  def random_map(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    sample = self.dataset.sample(element, rng)
    if self.text_table is not None:
      sample['t5_text_embeddings'] = self.text_table[int(sample['text_index'])]
    return sample


def text_table(store: TextStore, dataset: PolicyDataset) -> np.ndarray:
  """(num_tasks, 512, 1024) bf16: row `text_index` of a sample is its task's embedding (errors on unknown tasks)."""
  return store.table(dataset.tasks)


def make_loader(dataset: PolicyDataset, batch_size: int, *, seed: int = 0, worker_count: int = 0,
                num_epochs: int | None = None, shuffle: bool = True, text_store: TextStore | None = None,
                shard_options: grain.ShardOptions | None = None, worker_buffer_size: int = 2) -> grain.DataLoader:
  """A grain DataLoader of per-process batches (drop_remainder, like the official drop_last)."""
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  if worker_count > 0:
    _ensure_absl_flags_parsed()
  shard_options = shard_options or grain.ShardByJaxProcess(drop_remainder=True)
  sampler = grain.IndexSampler(num_records=len(dataset), shard_options=shard_options, shuffle=shuffle,
                               num_epochs=num_epochs, seed=seed)
  return grain.DataLoader(
      data_source=EpochIndexSource(len(dataset)), sampler=sampler,
      operations=[BuildSample(dataset, text_store), grain.Batch(batch_size, drop_remainder=True)],
      worker_count=worker_count, worker_buffer_size=worker_buffer_size)


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app (pytest, notebooks) mark them parsed with
  their defaults instead of failing with UnparsedFlagAccessError."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def to_global_batch(batch: Mapping[str, np.ndarray], sharding) -> dict:
  """Per-process numpy batch -> global jax.Arrays laid out by `sharding` (e.g. NamedSharding(mesh, P(('data',
  'fsdp')))), via `jax.make_array_from_process_local_data`; ready for a jitted, sharded train step."""
  import jax  # pylint: disable=g-import-not-at-top

  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
