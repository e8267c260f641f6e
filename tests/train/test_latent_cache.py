"""train/latent_cache.py: a cached latent is the latent the step would encode, each distinct sample is encoded once,
and the cache is refused where it could never hit."""

import jax
import numpy as np
import pytest

from configs import aloha
from cosmos_jax.train import data as train_data
from cosmos_jax.train import latent_cache as latent_cache_lib
from cosmos_jax.train import optim
from cosmos_jax.train import sharding as sharding_lib
from cosmos_jax.train import state as state_lib
from cosmos_jax.train import trainer


def _frames(seed: int, shape=(2, 3, 16, 16, 3)) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_each_distinct_sample_is_encoded_once_and_returned_in_batch_order():
  calls = []

  def encode_one(frames):
    calls.append(frames.copy())
    return frames[..., :2].astype(np.float32) / 255.0

  cache = latent_cache_lib.LatentCache(encode_one, max_entries=8)
  video = _frames(0)
  first = cache.latents(video)
  again = cache.latents(video[::-1])  # the same samples, other order
  assert len(calls) == 2 and all(c.shape == (1, 3, 16, 16, 3) for c in calls)
  np.testing.assert_array_equal(first, video[..., :2] / np.float32(255.0))
  np.testing.assert_array_equal(again, first[::-1])
  assert (cache.hits, cache.misses) == (2, 2) and cache.hit_rate() == 0.5

  changed = video.copy()
  changed[0, 0, 0, 0, 0] ^= 1  # one bit of one frame: a different sample
  cache.latents(changed[:1])
  assert len(calls) == 3


def test_least_recently_used_entries_go_first():
  encoded = []
  cache = latent_cache_lib.LatentCache(lambda f: (encoded.append(1), f.astype(np.float32))[1], max_entries=2)
  a, b, c = (_frames(i, (1, 1, 4, 4, 3)) for i in range(3))
  cache.latents(a), cache.latents(b), cache.latents(a), cache.latents(c)  # b is the least recently used
  assert len(cache) == 2 and len(encoded) == 3
  cache.latents(a)
  assert len(encoded) == 3  # a kept
  cache.latents(b)
  assert len(encoded) == 4  # b was evicted


def test_bad_input_is_refused():
  cache = latent_cache_lib.LatentCache(lambda f: f, max_entries=1)
  with pytest.raises(ValueError, match='uint8 slot frames'):
    cache.latents(np.zeros((1, 2, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match='max_entries'):
    latent_cache_lib.LatentCache(lambda f: f, max_entries=0)


def test_latent_cache_with_augmentation_is_refused():
  config = aloha.get_config('tiny')
  config.data.latent_cache = 10
  with pytest.raises(ValueError, match='augment=False'):
    train_data.make_training_data(config, trainer.step_config(config).layout, process_index=0, process_count=1)


def test_training_step_on_cached_latents_equals_the_step_that_encodes():
  config = aloha.get_config('tiny')
  config.data.augment = False
  config.optim.schedule.warm_up_steps = [0, 0]
  cfg = trainer.step_config(config)
  mesh = sharding_lib.make_mesh(1, 1, jax.devices()[:1])
  dit_params, vae_params = trainer.initial_params(config, cfg.dit, cfg.vae)
  dit_params = jax.device_get(dit_params)
  tx = optim.make_optimizer(config.optim)

  def one_step(data):
    batch = data.next_global_batch(mesh)
    state = state_lib.init_state(dit_params, tx, config.seed)
    step, _ = state_lib.jit_train_step(cfg, tx, mesh, jax.eval_shape(lambda s: s, state),
                                       jax.eval_shape(lambda p: p, vae_params), data.abstract_global_batch())
    return batch, jax.device_get(step(state, vae_params, batch))

  plain = train_data.make_training_data(config, cfg.layout, process_index=0, process_count=1)
  cached = train_data.make_training_data(config, cfg.layout, process_index=0, process_count=1)
  cache = trainer.make_latent_cache(cfg, vae_params, max_entries=16)
  cached.attach_latent_cache(cache, cfg.vae.z_dim)
  plain_batch, (plain_state, plain_metrics) = one_step(plain)
  cached_batch, (cached_state, cached_metrics) = one_step(cached)

  np.testing.assert_array_equal(np.asarray(cached_batch['video']), np.asarray(plain_batch['video']))
  assert cache.misses == config.batch_size and state_lib.LATENT_KEY in cached_batch
  encoded = jax.device_get(jax.jit(lambda v: state_lib.encode_slot_frames(vae_params, cfg.vae, v))(
      plain_batch['video']))
  # One sample per encode (the cache) against lax.map over the batch (the step): another XLA program, same math.
  cached_latent = np.asarray(cached_batch[state_lib.LATENT_KEY])
  err = np.abs(cached_latent - encoded)
  assert err.max() <= 1e-5, f'cached latent vs encoded: max abs {err.max():.3g}, max rel {(err / np.abs(encoded).clip(1e-30)).max():.3g}'
  for name in ('loss', 'grad_norm'):
    a, b = float(cached_metrics[name]), float(plain_metrics[name])
    assert abs(a - b) <= 1e-5 * abs(b), f'{name}: cached {a} vs encoding {b} (rel {abs(a - b) / abs(b):.3g})'
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(cached_state.params),
                          jax.tree.leaves(plain_state.params)):
    err = float(np.abs(np.asarray(a) - np.asarray(b)).max())
    assert err <= 1e-6, f'{jax.tree_util.keystr(path)}: max abs {err:.3g} between cached and encoding step'


def test_bad_latent_in_batch_is_refused():
  batch = {k: np.zeros((1,), np.float32) for k in state_lib.BATCH_KEYS}
  batch['video'] = np.zeros((1, 3, 16, 16, 3), np.uint8)
  batch['latent'] = np.zeros((1, 3, 4, 4, 16), np.float32)
  with pytest.raises(ValueError, match=r"batch\['latent'\] must be float32 \[1,3,2,2,z\]"):
    state_lib.check_batch(batch)
