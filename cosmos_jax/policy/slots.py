"""Writing vectors into latent slots and reading them back (official
cosmos_policy/models/policy_text2world_model.py:replace_latent_with_action_chunk, replace_latent_with_proprio;
cosmos_policy/experiments/robot/cosmos_utils.py:extract_action_chunk_from_latent_sequence,
extract_value_from_latent_sequence).

Latents are channels-last [B, T, H, W, C]. The official code flattens a slot in PyTorch (C, H, W) order,
i = c*H*W + h*W + w, so every function here transposes the slot to (C, H, W) before flattening and back after;
flattening the channels-last slot directly would put every element in the wrong place.

* Injection tiles the vector cyclically over the flattened slot and truncates the last copy (no zero padding).
* Readout averages only the floor(L/n) full copies (ALOHA actions: 17 copies, the trailing 644 elements ignored).
* The value is the mean of the whole slot, mapped to [0, 1] with (v+1)/2 and clamped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import einops
import jax.numpy as jnp
import numpy as np

from cosmos_jax.policy import layout as layout_lib

Array = Any


def round_to_bf16(x: Array) -> Array:
  """Round to the nearest bfloat16 and return float32 (where the official code casts to bf16: every float target
  in the training batch, the current proprio at inference)."""
  return jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32)


def _check_rank(latent: Array) -> None:
  if latent.ndim != 5:
    raise ValueError(f'latent must be channels-last [B, T, H, W, C], got shape {tuple(latent.shape)}')


def _check_slot(latent: Array, slot: int) -> int:
  _check_rank(latent)
  t = latent.shape[1]
  if not -t <= slot < t:
    raise ValueError(f'slot {slot} out of range for a latent with T={t} frames (shape {tuple(latent.shape)})')
  return slot % t


def slot_elements(latent: Array) -> int:
  """L = C * H * W, the number of values in one slot."""
  _check_rank(latent)
  _, _, h, w, c = latent.shape
  return h * w * c


def flatten_slot(latent: Array, slot: int) -> Array:
  """[B, C*H*W]: slot `slot` in the official (C, H, W) C-major order."""
  slot = _check_slot(latent, slot)
  return einops.rearrange(latent[:, slot], 'b h w c -> b (c h w)')


def write_flat_slot(latent: Array, slot: int, flat: Array) -> Array:
  """Inverse of `flatten_slot`: writes [B, C*H*W] (official order) into slot `slot`."""
  slot = _check_slot(latent, slot)
  b, _, h, w, c = latent.shape
  if flat.shape != (b, c * h * w):
    raise ValueError(f'flat slot values must be [B, C*H*W] = {(b, c * h * w)}, got {tuple(flat.shape)}')
  frame = einops.rearrange(flat, 'b (c h w) -> b h w c', c=c, h=h, w=w)
  return latent.at[:, slot].set(frame.astype(latent.dtype))


def tile_cyclic(vector: Array, length: int) -> Array:
  """[B, n] -> [B, length] with out[:, i] = vector[:, i mod n] (official `repeat` then truncate)."""
  n = vector.shape[-1]
  if n == 0:
    raise ValueError('cannot tile an empty vector into a latent slot')
  if n > length:
    raise ValueError(f'vector of length {n} does not fit into a latent slot of {length} elements')
  return vector[:, np.arange(length) % n]


def inject_vector(latent: Array, slot: int, vector: Array) -> Array:
  """Overwrites slot `slot` with `vector` [B, n] tiled cyclically over the (C, H, W)-flattened slot."""
  _check_rank(latent)
  if vector.ndim != 2 or vector.shape[0] != latent.shape[0]:
    raise ValueError(f'vector must be [B={latent.shape[0]}, n], got shape {tuple(vector.shape)}')
  return write_flat_slot(latent, slot, tile_cyclic(vector.astype(latent.dtype), slot_elements(latent)))


def check_actions(layout: layout_lib.SlotLayout, actions: Array, batch: int | None = None) -> None:
  expected = (layout.chunk_size, layout.action_dim)
  if actions.ndim != 3 or tuple(actions.shape[1:]) != expected:
    raise ValueError(f'{layout.name} actions must be [B, chunk={expected[0]}, action_dim={expected[1]}], got shape '
                     f'{tuple(actions.shape)}')
  if batch is not None and actions.shape[0] != batch:
    raise ValueError(f'actions batch {actions.shape[0]} does not match the latent batch {batch}')


def check_proprio(layout: layout_lib.SlotLayout, proprio: Array, batch: int | None = None) -> None:
  if proprio.ndim != 2 or proprio.shape[1] != layout.proprio_dim:
    raise ValueError(f'{layout.name} proprio must be [B, proprio_dim={layout.proprio_dim}], got shape '
                     f'{tuple(proprio.shape)}')
  if batch is not None and proprio.shape[0] != batch:
    raise ValueError(f'proprio batch {proprio.shape[0]} does not match the latent batch {batch}')


def inject_actions(latent: Array, layout: layout_lib.SlotLayout, actions: Array) -> Array:
  """Writes the normalised action chunk [B, chunk, action_dim] (flattened row-major) into the action slot."""
  layout_lib.check_latent(layout, latent.shape)
  check_actions(layout, actions, latent.shape[0])
  return inject_vector(latent, layout.index(layout_lib.ACTION), actions.reshape(actions.shape[0], -1))


def inject_proprio(latent: Array, layout: layout_lib.SlotLayout, proprio: Array,
                   slot: str = layout_lib.CURRENT_PROPRIO) -> Array:
  """Writes a normalised proprio vector [B, proprio_dim] into `slot` (current or future proprio)."""
  layout_lib.check_latent(layout, latent.shape)
  check_proprio(layout, proprio, latent.shape[0])
  if slot not in (layout_lib.CURRENT_PROPRIO, layout_lib.FUTURE_PROPRIO):
    raise ValueError(f'proprio goes into {layout_lib.CURRENT_PROPRIO!r} or {layout_lib.FUTURE_PROPRIO!r}, got {slot!r}')
  return inject_vector(latent, layout.index(slot), proprio)


def inject_value(latent: Array, layout: layout_lib.SlotLayout, value: Array) -> Array:
  """Sets every element of the value slot to the scalar value [B] (in [-1, 1], as trained)."""
  layout_lib.check_latent(layout, latent.shape)
  value = jnp.asarray(value)
  if value.shape != (latent.shape[0],):
    raise ValueError(f'value must be [B={latent.shape[0]}], got shape {tuple(value.shape)}')
  slot = layout.index(layout_lib.VALUE)
  return latent.at[:, slot].set(jnp.broadcast_to(value.astype(latent.dtype)[:, None, None, None],
                                                 latent.shape[:1] + latent.shape[2:]))


def inject_targets(latent: Array, layout: layout_lib.SlotLayout, *, actions: Array, proprio: Array,
                   future_proprio: Array, value: Array) -> Array:
  """The training target x0: action, current proprio, future proprio and value written into the VAE latent, in
  the official order (action, proprio, future proprio, value)."""
  x0 = inject_actions(latent, layout, actions)
  x0 = inject_proprio(x0, layout, proprio, layout_lib.CURRENT_PROPRIO)
  x0 = inject_proprio(x0, layout, future_proprio, layout_lib.FUTURE_PROPRIO)
  return inject_value(x0, layout, value)


def read_vector(latent: Array, slot: int, length: int) -> Array:
  """[B, length]: the mean of the floor(L/length) full copies in slot `slot` (partial last copy ignored)."""
  flat = flatten_slot(latent, slot).astype(jnp.float32)
  total = flat.shape[1]
  if not 0 < length <= total:
    raise ValueError(f'cannot read a vector of length {length} from a slot of {total} elements')
  copies = total // length
  return einops.reduce(flat[:, :copies * length], 'b (copy n) -> b n', 'mean', copy=copies)


def read_actions(latent: Array, layout: layout_lib.SlotLayout) -> Array:
  """[B, chunk, action_dim] normalised actions from the action slot (official `extract_action_chunk_...`)."""
  layout_lib.check_latent(layout, latent.shape)
  flat = read_vector(latent, layout.index(layout_lib.ACTION), layout.action_elements)
  return einops.rearrange(flat, 'b (chunk a) -> b chunk a', a=layout.action_dim)


def read_value(latent: Array, slot: int = -1) -> Array:
  """[B] raw value: the mean of every element of the slot (official default: the last slot)."""
  return flatten_slot(latent, slot).astype(jnp.float32).mean(axis=1)


def value_to_unit_interval(raw_value: Array) -> Array:
  """(v + 1) / 2 clamped to [0, 1] (official get_action / get_value_prediction)."""
  return jnp.clip((raw_value + 1) / 2, 0.0, 1.0)


def restore_slots(sample: Array, original: Array, slots: Sequence[int]) -> Array:
  """Copies `slots` of `original` into `sample` (official `undo_latent_injection`, before VAE decoding)."""
  if sample.shape != original.shape:
    raise ValueError(f'sample {tuple(sample.shape)} and original {tuple(original.shape)} latents differ in shape')
  idx = np.asarray(slots, dtype=np.int32)
  return sample.at[:, idx].set(original[:, idx])
