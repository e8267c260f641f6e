"""Training input: the policy dataset through the one grain pipeline (cosmos_jax.data.pipeline), whose global
batches do not depend on the process count, plus what the trainer needs to shape and shard them.

The iterator's grain state is checkpointed with the train state, so a restored run continues on the same data.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.data import datasets
from cosmos_jax.data import pipeline
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.train import latent_cache as latent_cache_lib
from cosmos_jax.train import sharding as sharding_lib
from cosmos_jax.train import state as state_lib

log = logging.getLogger(__name__)

# Switches of the official datasets that every recipe keeps on; the slot layouts assume them.
REQUIRED_SWITCHES = ('use_proprio', 'use_wrist_images', 'use_third_person_images', 'return_value_function_returns')


def sample_config(config, layout: layout_lib.SlotLayout) -> sample_lib.SampleConfig:
  """The dataset's sample settings from config.data (the recipe's mix; see configs/common.py)."""
  d = config.data
  for switch in REQUIRED_SWITCHES:
    if not d[switch]:
      raise ValueError(f'data.{switch}=False is not supported: the {layout.name} slot layout always carries the '
                       'proprio, wrist, third-person and value slots (as every official recipe)')
  if d.treat_demos_as_success_rollouts and layout.name != 'aloha':
    raise ValueError(f'data.treat_demos_as_success_rollouts is an option of the official ALOHA dataset only, not '
                     f'{layout.name}\'s')
  return sample_lib.SampleConfig.for_layout(
      layout.name, layout=layout, image_size=d.image_size, augment=d.augment,
      demonstration_sampling_prob=float(d.demonstration_sampling_prob),
      success_rollout_sampling_prob=float(d.success_rollout_sampling_prob), p_world_model=float(d.p_world_model),
      treat_demos_as_success_rollouts=bool(d.treat_demos_as_success_rollouts),
      treat_success_rollouts_as_demos=bool(d.treat_success_rollouts_as_demos),
      episode_start_steps=int(d.episode_start_steps), episode_start_repeats=int(d.episode_start_repeats))


def sample_type_probabilities(dataset: sample_lib.PolicyDataset) -> dict[str, float]:
  """Probability that a uniformly drawn epoch item is a policy, world-model or value sample."""
  e, p_wm = dataset.epoch, dataset.config.p_world_model
  rollouts = (e.success_count + e.failure_count) / e.length
  return {'policy': e.demo_count / e.length, 'world_model': rollouts * p_wm, 'value': rollouts * (1 - p_wm)}


def missing_sample_types(dataset: sample_lib.PolicyDataset) -> list[str]:
  """The sample types the dataset never yields, by the episodes they would come from."""
  e, p_wm = dataset.epoch, dataset.config.p_world_model
  kinds = [k for k, p in (('world-model', p_wm), ('value', 1 - p_wm)) if p > 0]
  missing = []
  for count, outcome in ((e.success_count, 'successful'), (e.failure_count, 'failed')):
    if count == 0:
      missing += [f'{kind} samples of {outcome} episodes' for kind in kinds]
  return missing


def run_statistics_path(assets_dir: str) -> str:
  """Where a run keeps the dataset statistics it trains with: `<workdir>/assets/dataset_statistics.json`."""
  return os.path.join(assets_dir, stats_lib.STATISTICS_FILENAME)


class TrainingData:
  """The dataset, its statistics and text, and the checkpointable iterator of process-local batches."""

  def __init__(self, config, layout: layout_lib.SlotLayout, *, process_index: int, process_count: int,
               assets_dir: str | None = None):
    d = config.data
    if d.get('latent_cache', 0) and d.augment:
      raise ValueError(f'data.latent_cache={d.latent_cache} needs data.augment=False: augmented frames differ every '
                       'draw, so no latent would ever be reused')
    self.latent_cache: latent_cache_lib.LatentCache | None = None
    dataset_dir = d.dataset_dir
    if not dataset_dir:
      raise ValueError("config.data.dataset_dir is empty: set it to the benchmark's episodes (the tiny variants, "
                       'e.g. configs/aloha.py:tiny, use the bundled sample)')
    if not os.path.isdir(dataset_dir):
      raise FileNotFoundError(f'data.dataset_dir {dataset_dir!r} is not a directory')
    # The run keeps its statistics in <assets_dir>: written by process 0 only, awaited and read by the others; the
    # dataset folder is only read (it may be read-only).
    run_copy = stats_lib.RunCopy(run_statistics_path(assets_dir), writer=process_index == 0) if assets_dir else None
    self.dataset = datasets.load_dataset(layout.name, dataset_dir, sample_config(config, layout),
                                         stats_path=d.statistics or None, rollout_dir=d.rollouts_dir or None,
                                         run_copy=run_copy, data_format=d.get('format', 'native'),
                                         features=d.get('features'))
    if d.official_rollouts and not d.rollouts_dir:
      missing = missing_sample_types(self.dataset)
      log.warning('data.rollouts_dir is empty but the official %s recipe trains on rollouts (%s): this run has no %s. '
                  'Sample mix: %s', config.experiment, d.official_rollouts, ', '.join(missing) or 'rollout samples',
                  {k: round(v, 3) for k, v in sample_type_probabilities(self.dataset).items()})
    store_dir = d.text_store or os.path.join(dataset_dir, 'text_store')
    if not os.path.isdir(store_dir):
      raise FileNotFoundError(f'text store {store_dir!r} not found (make one with python -m cosmos_jax.data.text '
                              'import --pickle=<t5_embeddings.pkl> --out=<dir>, and set data.text_store)')
    # Tasks without an embedding are encoded once with data.t5 into <assets_dir>/text_store (reused on resume).
    store = text_lib.complete_store(
        text_lib.TextStore.load(store_dir), self.dataset.tasks, t5_dir=d.get('t5') or None, store_name=store_dir,
        cache_dir=os.path.join(assets_dir, 'text_store') if assets_dir else None, write_cache=process_index == 0)
    self.text_store = store  # the store the run uses, saved into every checkpoint's assets
    trim_text_padding = bool(d.get('trim_text_padding'))
    self.text_table = pipeline.text_table(store, self.dataset, trim_text_padding)
    self.layout = layout
    self.image_size = d.image_size
    self.global_batch_size = config.batch_size
    # Enough batches for every step of the run (plus one): the iterator state stays a small integer.
    self.iterator = pipeline.make_loader(
        self.dataset, config.batch_size, seed=config.seed, process_index=process_index,
        process_count=process_count, num_batches=config.total_steps + 1, text_store=store,
        trim_text_padding=trim_text_padding,
        keys=state_lib.BATCH_KEYS, prefetch_batches=max(1, d.prefetch), worker_count=d.num_workers)

  def attach_latent_cache(self, cache: latent_cache_lib.LatentCache, latent_channels: int) -> None:
    """From now on every batch also carries `latent` ([B, state_t, h, w, latent_channels] float32), looked up in
    (or added to) `cache`."""
    self.latent_cache, self.latent_channels = cache, latent_channels

  def latent_shape(self) -> tuple[int, int, int]:
    s = self.image_size // 8
    return self.layout.state_t, s, s

  def text_tokens(self) -> int:
    return self.text_table.shape[1]

  def abstract_global_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    g, s = self.global_batch_size, self.image_size
    chunk, a, p = self.layout.chunk_size, self.layout.action_dim, self.layout.proprio_dim
    batch = {
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
    if self.latent_cache is not None:
      t, h, w = self.latent_shape()
      batch[state_lib.LATENT_KEY] = jax.ShapeDtypeStruct((g, t, h, w, self.latent_channels), jnp.float32)
    return batch

  def next_global_batch(self, mesh) -> dict[str, jax.Array]:
    local = next(self.iterator)
    abstract = self.abstract_global_batch()
    if self.latent_cache is not None:
      local = {**local, state_lib.LATENT_KEY: self.latent_cache.latents(np.asarray(local['video']))}
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
                       process_count: int, assets_dir: str | None = None) -> TrainingData:
  return TrainingData(config, layout, process_index=process_index, process_count=process_count,
                      assets_dir=assets_dir)
