"""Which slots are given (clean conditioning) and which are generated (official
cosmos_policy/models/policy_video2world_model.py:CosmosPolicyVideo2WorldModel.get_data_and_condition).

A mask is float32 [B, T] with 1 on conditioning slots: they enter the network as the clean latent, get timestep 0,
and their output is replaced by the ground truth (see `diffusion.denoise`). `expand` broadcasts it to the DiT's
channels-last [B, T, H, W, 1] mask channel.

| mode        | given (ALOHA indices)                           | generated |
|-------------|-------------------------------------------------|-----------|
| policy      | 0-4                                             | 5-10      |
| world_model | 0-5 (the action is given)                       | 6-10      |
| value       | 0-9: V(s, a, s')                                | 10        |
| value + V(s') (planning model) | 0, 6-9 (current state and action not given) | 10 (1-5 are noise inputs) |
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from cosmos_jax.policy import layout as layout_lib

Array = Any

MODES = ('policy', 'world_model', 'value')


def conditioning_prefix(batch: int, state_t: int, num_conditional: int) -> np.ndarray:
  """[B, T] with 1 on slots 0..num_conditional-1 (the official `set_video_condition` base mask)."""
  if not 0 <= num_conditional <= state_t:
    raise ValueError(f'num_conditional {num_conditional} must be in [0, {state_t}]')
  mask = np.zeros((batch, state_t), np.float32)
  mask[:, :num_conditional] = 1.0
  return mask


def _value_input_slots(layout: layout_lib.SlotLayout, *, value_of_future_state: bool,
                       q_value: bool) -> list[int]:
  """Slots withheld from value samples: current state + action for V(s'), future state for Q(s, a)."""
  hidden = []
  if value_of_future_state:
    hidden += list(layout.current_state_slots) + [layout.index(layout_lib.ACTION)]
  if q_value:
    hidden += list(layout.future_state_slots)
  return hidden


def num_conditional_for(layout: layout_lib.SlotLayout, mode: str) -> int:
  """n_cond per query mode: policy n, world model n+1, value state_t-1 (official get_action / get_future_state_
  prediction / get_value_prediction)."""
  if mode == 'policy':
    return layout.num_conditional
  if mode == 'world_model':
    return layout.num_conditional + 1
  if mode == 'value':
    return layout.state_t - 1
  raise ValueError(f'unknown mask mode {mode!r}; expected one of {MODES}')


def inference_mask(layout: layout_lib.SlotLayout, mode: str, batch: int = 1, *,
                   value_of_future_state: bool = False, q_value: bool = False) -> np.ndarray:
  """[B, T] conditioning mask of one inference query.

  The current-proprio slot is forced to 1 (the proprio is injected into it); then, for value queries of a model
  trained with `mask_current_state_action_for_value_prediction` (`value_of_future_state`, V(s')) the current state
  and action slots are set to 0, and with `mask_future_state_for_qvalue_prediction` (`q_value`) the future state.
  """
  if (value_of_future_state or q_value) and mode != 'value':
    raise ValueError(f'V(s\') / Q(s,a) input masking applies to value queries only, not mode {mode!r}')
  mask = conditioning_prefix(batch, layout.state_t, num_conditional_for(layout, mode))
  mask[:, layout.index(layout_lib.CURRENT_PROPRIO)] = 1.0
  hidden = _value_input_slots(layout, value_of_future_state=value_of_future_state, q_value=q_value)
  mask[:, hidden] = 0.0
  return mask


def training_mask(layout: layout_lib.SlotLayout, world_model_sample: Array, value_sample: Array, *,
                  value_of_future_state: bool = False, q_value: bool = False,
                  num_conditional: int | None = None) -> Array:
  """[B, T] conditioning mask of a training batch, edited per sample like the official get_data_and_condition.

  Edit order: (i) M[action] = world_model_sample; (ii) value samples: every slot 1; (iii) value samples:
  M[value] = 0; (iv) value samples: V(s') hides current state + action, Q(s, a) hides the future state.
  Demo (policy) samples keep the prefix mask. `world_model_sample` and `value_sample` are [B] 0/1 flags.
  """
  world_model_sample = jnp.asarray(world_model_sample).astype(jnp.float32)
  value_sample = jnp.asarray(value_sample).astype(jnp.float32)
  batch = world_model_sample.shape[0]
  if world_model_sample.shape != (batch,) or value_sample.shape != (batch,):
    raise ValueError(f'sample-type flags must both be [B]; got {world_model_sample.shape} and {value_sample.shape}')
  n_cond = layout.num_conditional if num_conditional is None else num_conditional
  mask = jnp.asarray(conditioning_prefix(batch, layout.state_t, n_cond))
  mask = mask.at[:, layout.index(layout_lib.ACTION)].set(world_model_sample)
  is_value = value_sample[:, None] > 0
  mask = jnp.where(is_value, 1.0, mask)
  hidden = [layout.index(layout_lib.VALUE)] + _value_input_slots(
      layout, value_of_future_state=value_of_future_state, q_value=q_value)
  hidden_cols = np.zeros(layout.state_t, bool)
  hidden_cols[hidden] = True
  return jnp.where(is_value & hidden_cols[None, :], 0.0, mask)


def expand(mask: Array, latent_shape) -> Array:
  """[B, T] -> [B, T, H, W, 1] (the DiT's condition-mask channel, channels-last)."""
  b, t, h, w, _ = latent_shape
  mask = jnp.asarray(mask, jnp.float32)
  if mask.shape != (b, t):
    raise ValueError(f'mask must be [B, T] = {(b, t)} for latent shape {tuple(latent_shape)}, got {mask.shape}')
  return jnp.broadcast_to(mask[:, :, None, None, None], (b, t, h, w, 1))
