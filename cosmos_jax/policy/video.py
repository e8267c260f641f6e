"""The policy's pixel video: one frame per latent slot -> the 1 + 4(T-1) pixel frames the Wan2.1 VAE encodes.

Slot 0 is a single blank frame; every further slot is its frame repeated `vae.TEMPORAL_COMPRESSION` (4) times, so
slot k >= 1 becomes latent frame k (official cosmos_policy/datasets/aloha_dataset.py:ALOHADataset.__getitem__,
`num_duplicates_per_image`). Proprio, action and value slots are black frames whose latents are overwritten later.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.nn import vae as vae_lib

Array = jax.Array


def slot_frames_to_video(frames: Array) -> Array:
  """[..., state_t, H, W, 3] one frame per slot -> [..., 1 + 4·(state_t − 1), H, W, 3] pixel frames."""
  frames = jnp.asarray(frames)
  return jnp.concatenate([frames[..., :1, :, :, :],
                          jnp.repeat(frames[..., 1:, :, :, :], vae_lib.TEMPORAL_COMPRESSION, axis=-4)], axis=-4)


@functools.lru_cache(maxsize=None)
def _unit_table(dtype_name: str) -> np.ndarray:
  dtype = jnp.dtype(dtype_name)
  # numpy (and ml_dtypes for bf16) round each step exactly like PyTorch does on a tensor of that dtype.
  return np.arange(256).astype(dtype) / np.asarray(127.5, dtype) - np.asarray(1.0, dtype)


def pixels_to_unit(frames: Array, dtype: Any = jnp.float32) -> Array:
  """uint8 [0, 255] -> [-1, 1] as the policy does it: cast to dtype, / 127.5, - 1, each step rounded in dtype.

  A 256-entry table rather than arithmetic: XLA compiles float division by a constant to a multiplication by its
  reciprocal (not correctly rounded), which would move about half the values by one unit in the last place.
  """
  if frames.dtype != jnp.uint8:
    raise ValueError(f'expected uint8 pixels, got dtype {frames.dtype}')
  return jnp.asarray(_unit_table(jnp.dtype(dtype).name))[frames]


def policy_pixel_sequence(items: Sequence[Array | None], height: int, width: int,
                          batch_size: int | None = None) -> Array:
  """The uint8 video [B, 1 + 4*len(items), H, W, 3] Cosmos Policy feeds the VAE.

  Frame 0 is black; then each item fills one 4-frame slot: an image [B, H, W, 3] uint8, or black for None (the
  proprio / action / value placeholders).
  """
  images = [item for item in items if item is not None]
  if batch_size is None:
    if not images:
      raise ValueError('policy_pixel_sequence: every item is None; pass batch_size')
    batch_size = images[0].shape[0]
  expected = (batch_size, height, width, 3)
  for index, item in enumerate(items):
    if item is None:
      continue
    if tuple(item.shape) != expected:
      raise ValueError(f'policy_pixel_sequence: item {index} has shape {tuple(item.shape)}, expected {expected}')
    if item.dtype != jnp.uint8:
      raise ValueError(f'policy_pixel_sequence: item {index} has dtype {item.dtype}, expected uint8')
  black = jnp.zeros(expected, jnp.uint8)
  slots = [black] + [black if item is None else jnp.asarray(item) for item in items]
  return slot_frames_to_video(jnp.stack(slots, axis=1))


def encode_policy_sequence(params, cfg: vae_lib.VAEConfig, items: Sequence[Array | None], height: int, width: int,
                           batch_size: int | None = None) -> Array:
  """Latents [B, 1 + len(items), H/8, W/8, z_dim] (float32) of the policy sequence, encoded in ONE causal pass.

  Latent k depends on every slot before it, so encoding the items one at a time would be wrong.
  """
  video = policy_pixel_sequence(items, height, width, batch_size)
  return vae_lib.encode(params, cfg, pixels_to_unit(video, cfg.dtype))
