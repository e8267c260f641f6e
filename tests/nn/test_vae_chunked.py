"""The VAE's causal chunked pass (the default) against the whole-sequence pass: same latents, same videos, and
working memory that does not grow with the number of frames."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.nn import vae


def _model(dtype=jnp.float32):
  cfg = vae.VAEConfig(base_dim=8, dtype=dtype, latent_stats='bf16' if dtype == jnp.bfloat16 else 'fp32')
  params = vae.init_params(cfg, jax.random.key(0))
  # Fresh output projections are zero (the attention would be the identity); make every weight matter.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [(p + 0.1 * jax.random.normal(k, p.shape, jnp.float32)).astype(dtype) for p, k in zip(leaves, keys)]
  return cfg, jax.tree.unflatten(tree, leaves)


def _close(ours, ref, rtol, name):
  ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
  err = float(np.abs(ours - ref).max())
  scale = float(np.abs(ref).max())
  assert ours.shape == ref.shape, (name, ours.shape, ref.shape)
  assert err <= rtol * scale, f'{name}: chunked vs whole max abs error {err:.3g}, relative {err / scale:.3g}'


@pytest.mark.parametrize('chunk_latents', [1, 2])
def test_chunked_encode_and_decode_equal_whole_sequence(chunk_latents):
  cfg, params = _model()
  whole = dataclasses.replace(cfg, chunk_latents=0)
  chunked = dataclasses.replace(cfg, chunk_latents=chunk_latents)
  # 13 frames = frame 0 + 3 latents: with 2 latents per chunk, one scan step and a remainder chunk.
  video = jax.random.uniform(jax.random.key(2), (2, 13, 16, 24, 3), minval=-1.0, maxval=1.0)
  with jax.default_matmul_precision('highest'):
    z_whole = vae.encode(params, whole, video)
    z_chunked = vae.encode(params, chunked, video)
    _close(z_chunked, z_whole, 1e-5, 'encode')
    _close(vae.decode(params, chunked, z_whole), vae.decode(params, whole, z_whole), 1e-5, 'decode')


@pytest.mark.slow
def test_chunked_bfloat16_close_to_whole_sequence():
  cfg, params = _model(jnp.bfloat16)
  video = jax.random.uniform(jax.random.key(3), (1, 9, 16, 16, 3), minval=-1.0, maxval=1.0).astype(jnp.bfloat16)
  whole = dataclasses.replace(cfg, chunk_latents=0)
  z_whole = vae.encode(params, whole, video)
  # bf16: the two passes round the same sums in different orders; a few bf16 units apart.
  _close(vae.encode(params, cfg, video), z_whole, 0.03, 'bf16 encode')
  _close(vae.decode(params, cfg, z_whole), vae.decode(params, whole, z_whole), 0.05, 'bf16 decode')


def _temp_bytes(fn, *shapes) -> int:
  return fn.lower(*shapes).compile().memory_analysis().temp_size_in_bytes


def test_chunked_memory_does_not_grow_with_frames():
  cfg = vae.VAEConfig(base_dim=8)
  params = vae.abstract_params(cfg)
  temps = {}
  for name, mode in (('chunked', cfg), ('whole', dataclasses.replace(cfg, chunk_latents=0))):
    for frames in (9, 41):
      video = jax.ShapeDtypeStruct((1, frames, 32, 32, 3), jnp.float32)
      temps[name, frames] = _temp_bytes(vae._encode_mean, params, mode, video)
  assert temps['chunked', 41] <= 1.5 * temps['chunked', 9], temps
  assert temps['whole', 41] >= 3 * temps['whole', 9], temps  # what the chunked pass avoids
  assert temps['chunked', 41] < temps['whole', 41], temps


def test_chunk_latents_must_be_a_non_negative_int():
  with pytest.raises(ValueError, match='chunk_latents'):
    vae.VAEConfig(chunk_latents=-1)
