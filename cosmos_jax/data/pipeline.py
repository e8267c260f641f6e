"""The grain input pipeline: process-count-invariant global batches, worker processes, checkpointable state.

    dataset = datasets.load_dataset('aloha', data_dir, SampleConfig(...))
    it = make_loader(dataset, global_batch_size=8, seed=0, worker_count=2)   # this process's share of each batch
    batch = next(it)                                                          # dict of numpy arrays
    state = it.get_state(); it.set_state(state)     # checkpoint / restore (orbax: grain.PyGrainCheckpointSave)

Global batch k is positions [k·G, (k+1)·G) of an endless sequence of epochs; epoch e is a permutation of the
dataset's epoch index space ([demos | success | failure], see mixture.py) seeded by (seed, e). Process p of P
builds positions [k·G + p·G/P, k·G + (p+1)·G/P). Every sample's randomness (the world-model/value coin and the
augmentation draw) is seeded by (seed, global position). So the global batches are the same for any process
count, any worker count and after a restore: one process with 4 devices and two processes with 2 devices each
train on identical data. (The official DistributedSampler also reshuffles every epoch, but with torch's RNG and a
rank-strided split; only the mixture statistics, not the exact order, are reproduced here.)

Worker processes (`worker_count > 0`) use grain's `mp_prefetch`: worker w builds local batches w, w + n, ... and
grain interleaves them back in order, so the batch sequence is identical to the in-process one.

Batch layout (leading axis = local batch G/P): `video` (B, state_t, S, S, 3) uint8 (one frame per slot, see
sample.py), float32 `actions` (B, chunk, A), `proprio`/`future_proprio` (B, P), `value_function_return` (B,),
int32 masks `rollout_data_mask`, `world_model_sample_mask`, `value_function_sample_mask`, ..., int32 slot
indices `*_latent_idx`, `text_index` (row of `text_table(store, dataset)`) and int64 `index` (epoch index) and
`position` (global position); with `text_store=` also the (B, 512, 1024) bf16 `t5_text_embeddings`. `keys=`
keeps only the named entries (less to ship from worker processes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import grain
import jax
import numpy as np
from absl import flags

from cosmos_jax.data import text as text_lib
from cosmos_jax.data.sample import PolicyDataset
from cosmos_jax.data.text import TextStore

# Records in an "endless" run (grain map datasets have a length; 2**62 positions never run out).
ENDLESS_POSITIONS = 2**62
# Stream id of the per-sample Generator seed (seed, stream, position), apart from the epoch permutations (seed, e).
_SAMPLE_STREAM = 1


def text_table(store: TextStore, dataset: PolicyDataset, trim_padding: bool = False) -> np.ndarray:
  """(num_tasks, 512, 1024) bf16: row `text_index` of a sample is its task's embedding (errors on unknown tasks);
  with `trim_padding` only the leading tokens that hold any non-zero value (text.trim_padding)."""
  table = store.table(dataset.tasks)
  return text_lib.trim_padding(table) if trim_padding else table


class _BuildSample(grain.transforms.Map):
  """Process-local record index -> the sample at its global position (picklable for worker processes)."""

  def __init__(self, dataset: PolicyDataset, *, seed: int, shuffle: bool, global_batch_size: int,
               process_index: int, process_count: int, table: np.ndarray | None, keys: Sequence[str] | None):
    self.dataset, self.seed, self.shuffle, self.table = dataset, seed, shuffle, table
    self.keys = tuple(keys) if keys is not None else None
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.process_index = process_index

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

  def global_position(self, local_index: int) -> int:
    b = self.local_batch_size
    return (local_index // b) * self.global_batch_size + self.process_index * b + local_index % b

  def epoch_index(self, position: int) -> int:
    epoch, offset = divmod(position, len(self.dataset))
    return int(self._permutation(epoch)[offset]) if self.shuffle else offset

  def map(self, local_index: int) -> dict[str, np.ndarray]:
    position = self.global_position(int(local_index))
    sample = self.dataset.sample(self.epoch_index(position),
                                 np.random.default_rng([self.seed, _SAMPLE_STREAM, position]))
    sample['position'] = np.int64(position)
    if self.table is not None:
      sample['t5_text_embeddings'] = self.table[int(sample['text_index'])]
    if self.keys is None:
      return sample
    missing = [k for k in self.keys if k not in sample]
    if missing:
      raise KeyError(f'keys {missing} are not in the samples; they have {sorted(sample)}')
    return {k: sample[k] for k in self.keys}


def make_dataset(dataset: PolicyDataset, global_batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 num_batches: int | None = None, text_store: TextStore | None = None,
                 trim_text_padding: bool = False, keys: Sequence[str] | None = None, read_threads: int = 4,
                 prefetch_batches: int = 2, worker_count: int = 0, worker_buffer_size: int = 2) -> grain.IterDataset:
  """The grain dataset of this process's local batches (see the module docstring).

  `process_index`/`process_count` default to jax's. `num_batches` bounds the run (None: endless). `shuffle=False`
  walks the epoch index space in order (evaluation). Batches drop nothing: every one is full (the official
  DataLoader's drop_last is moot for an endless epoch sequence). Each process (or worker) builds samples with
  `read_threads` threads, at most `prefetch_batches` local batches ahead (grain's default, 500 samples ahead,
  would hold ~0.8 GB of 224-px ALOHA samples).
  """
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size <= 0:
    raise ValueError(f'global_batch_size must be positive, got {global_batch_size}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is outside [0, {process_count})')
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by the {process_count} processes')
  if read_threads <= 0 or prefetch_batches <= 0:
    raise ValueError(f'read_threads ({read_threads}) and prefetch_batches ({prefetch_batches}) must be positive')
  if num_batches is not None and num_batches <= 0:
    raise ValueError(f'num_batches must be positive or None, got {num_batches}')
  local = global_batch_size // process_count
  records = ENDLESS_POSITIONS // global_batch_size * local if num_batches is None else num_batches * local
  build = _BuildSample(dataset, seed=seed, shuffle=shuffle, global_batch_size=global_batch_size,
                       process_index=process_index, process_count=process_count,
                       table=(text_table(text_store, dataset, trim_text_padding) if text_store is not None
                              else None), keys=keys)
  read = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches * local)
  ds = grain.MapDataset.range(records).map(build).batch(local, drop_remainder=True).to_iter_dataset(read)
  if worker_count > 0:
    _ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
  return ds


def make_loader(dataset: PolicyDataset, global_batch_size: int, **kwargs) -> grain.DatasetIterator:
  """`iter(make_dataset(...))`: the checkpointable iterator of local batches (get_state / set_state)."""
  return iter(make_dataset(dataset, global_batch_size, **kwargs))


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app (pytest, notebooks) mark them parsed with
  their defaults instead of failing with UnparsedFlagAccessError."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()

