"""Inference queries: action, world model (future state), value V and Q (official
cosmos_policy/experiments/robot/cosmos_utils.py:get_action, get_future_state_prediction, get_value_prediction,
get_qvalue_prediction).

Each query is a pure function of arrays, jit-compatible (the sampler loop is a `lax.scan` inside it), with the
network, layout and step count static. Latents are channels-last [B, T, H, W, C].

* `action_query` (official get_action): gt_frames = the VAE latent with the current proprio (bf16-rounded)
  injected; slots 0..n_cond-1 given. Future images and the value can be read from the same sample ("parallel").
* `world_model_query` (get_future_state_prediction): gt_frames = the action sample itself (the *generated*
  action latent, not a re-injected clean action), current proprio re-injected, n_cond + 1 slots given.
* `value_query` (get_value_prediction): gt_frames = a future-state sample, current proprio re-injected, every slot
  but the value given; with `value_of_future_state` (the planning model's V(s')) the current state and action are
  withheld. Returns (v+1)/2 clamped to [0, 1].
* `q_value_query` (get_qvalue_prediction): the same from the action sample; with `mask_future_state` the
  predicted future state is withheld, so Q(s, a) conditions on exactly the world model's frames.
* `conditioned_query`: the common core of the last three (mask, proprio re-injection, sampler), with the sample,
  conditioning and, on request, the sampler trajectory.
* `future_images`: restores the pre-injection latents of the injected slots, VAE-decodes, and picks frame
  (k-1)*4+1 of each future image slot k.

Noise: `sampler.parity_noise(seed, ...)` reproduces the official numbers (numpy RandomState, B,C,T,H,W order);
`sampler.jax_noise(key, ...)` is the traceable alternative. Every query takes an optional `sigma_scale` [B, 2]
(official use_variance_scale, `sampler.variance_scale(seed)`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import masks as masks_lib
from cosmos_jax.policy import normalization
from cosmos_jax.policy import sampler as sampler_lib
from cosmos_jax.policy import slots

Array = Any

AGGREGATIONS = ('average', 'lcb', 'success_vote', 'majority_mean')
FUTURE_AGGREGATIONS = ('average', 'last')  # how an ensemble's future images are returned
SUCCESS_THRESHOLD = 0.05  # on the [0, 1] value scale (official aggregate_value_predictions)
QUERY_MODES = ('world_model', 'value', 'q_value')


def _check_noise(noise: Array, latent: Array) -> None:
  if noise.shape != latent.shape:
    raise ValueError(f'initial noise {tuple(noise.shape)} must have the latent shape {tuple(latent.shape)}')


def generate(net: diffusion.NetFn, params, context: Array, gt_frames: Array, mask: Array, noise: Array,
             num_steps: int, sampler_cfg: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig(), *,
             sigma_scale: Array | None = None, trace: bool = False):
  """One conditional sample: the 2ab sampler over the conditioned denoiser (official
  generate_samples_from_batch with a given noise x_T = sigma_max * z)."""
  _check_noise(noise, gt_frames)

  def denoise_fn(x, sigma):
    return diffusion.denoise(net, params, context, x, sigma, gt_frames, mask, with_aux=trace)

  return sampler_lib.sample(denoise_fn, noise, num_steps, sampler_cfg, sigma_scale=sigma_scale, trace=trace)


def _with_proprio(latent: Array, layout: layout_lib.SlotLayout, proprio: Array) -> Array:
  """The conditioning latent: the current proprio, rounded to bf16 as the official batch does, injected."""
  layout_lib.check_latent(layout, latent.shape)
  return slots.inject_proprio(latent.astype(jnp.float32), layout, slots.round_to_bf16(proprio))


def _sampled(out, trace: bool) -> tuple[Array, Any]:
  return out if trace else (out, None)


def action_query(net: diffusion.NetFn, params, context: Array, latent: Array, proprio: Array, noise: Array, *,
                 layout: layout_lib.SlotLayout, num_steps: int,
                 sampler_cfg: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig(),
                 sigma_scale: Array | None = None, trace: bool = False) -> dict:
  """Policy query.

  Args:
    latent: VAE latent [B, T, H, W, C] of the inference pixel sequence (`policy_video`), before injection; at
      search depth >= 2 a generated latent with the predicted state copied over the current one.
    proprio: normalised current proprio [B, proprio_dim].
    noise: initial noise (already times sigma_max), latent-shaped.

  Returns:
    dict with `sample` (the generated latent), `actions` (normalised [B, chunk, action_dim]; un-normalise with
    the action statistics), `value_raw` / `value` (read from the same sample), `orig_latent` (pre-injection,
    for `future_images`), `gt_frames`, `mask`, and `trajectory` when `trace`.
  """
  gt_frames = _with_proprio(latent, layout, proprio)
  mask = jnp.asarray(masks_lib.inference_mask(layout, 'policy', latent.shape[0]))
  sample, trajectory = _sampled(generate(net, params, context, gt_frames, mask, noise, num_steps, sampler_cfg,
                                         sigma_scale=sigma_scale, trace=trace), trace)
  value_raw = slots.read_value(sample, layout.index(layout_lib.VALUE))
  result = {'sample': sample, 'actions': slots.read_actions(sample, layout), 'value_raw': value_raw,
            'value': slots.value_to_unit_interval(value_raw), 'orig_latent': latent, 'gt_frames': gt_frames,
            'mask': mask}
  if trace:
    result['trajectory'] = trajectory
  return result


def conditioned_query(net: diffusion.NetFn, params, context: Array, previous: Array, proprio: Array, noise: Array,
                      *, layout: layout_lib.SlotLayout, mode: str, num_steps: int, masked: bool = False,
                      sampler_cfg: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig(),
                      sigma_scale: Array | None = None, trace: bool = False) -> dict:
  """A query that conditions on a previously generated latent (official `skip_vae_encoding` with
  `previous_generated_latent`).

  Args:
    previous: the generated latent the query starts from: the action sample (world_model, q_value) or a
      future-state sample (value).
    mode: 'world_model' (slots 0..n_cond given), 'value' (all but the value given) or 'q_value' (the same
      conditioning as 'value', started from the action sample).
    masked: input masking of the value queries: for 'value' the current state and action are withheld (V(s'),
      official mask_current_state_action_for_value_prediction); for 'q_value' the future state (official
      mask_future_state_for_qvalue_prediction). Refused for 'world_model'.

  Returns:
    dict with `sample`, `value_raw` / `value` (read from the value slot; meaningful for value modes),
    `gt_frames`, `mask`, and `trajectory` when `trace`.
  """
  if mode not in QUERY_MODES:
    raise ValueError(f'unknown query mode {mode!r}; expected one of {QUERY_MODES}')
  if masked and mode == 'world_model':
    raise ValueError('input masking applies to value queries (mode value or q_value), not world_model')
  gt_frames = _with_proprio(previous, layout, proprio)
  mask = jnp.asarray(masks_lib.inference_mask(
      layout, 'world_model' if mode == 'world_model' else 'value', previous.shape[0],
      value_of_future_state=masked and mode == 'value', q_value=masked and mode == 'q_value'))
  sample, trajectory = _sampled(generate(net, params, context, gt_frames, mask, noise, num_steps, sampler_cfg,
                                         sigma_scale=sigma_scale, trace=trace), trace)
  value_raw = slots.read_value(sample, layout.index(layout_lib.VALUE))
  result = {'sample': sample, 'value_raw': value_raw, 'value': slots.value_to_unit_interval(value_raw),
            'gt_frames': gt_frames, 'mask': mask}
  if trace:
    result['trajectory'] = trajectory
  return result


def world_model_query(net: diffusion.NetFn, params, context: Array, action_sample: Array, proprio: Array,
                      noise: Array, *, layout: layout_lib.SlotLayout, num_steps: int,
                      sampler_cfg: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig(),
                      sigma_scale: Array | None = None) -> Array:
  """Future-state sample conditioned on the generated action latent (n_cond + 1 slots given)."""
  return conditioned_query(net, params, context, action_sample, proprio, noise, layout=layout, mode='world_model',
                           num_steps=num_steps, sampler_cfg=sampler_cfg, sigma_scale=sigma_scale)['sample']


def value_query(net: diffusion.NetFn, params, context: Array, future_sample: Array, proprio: Array, noise: Array,
                *, layout: layout_lib.SlotLayout, num_steps: int, value_of_future_state: bool = False,
                sampler_cfg: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig(),
                sigma_scale: Array | None = None) -> Array:
  """[B] value in [0, 1] of a future-state sample: V(s, a, s'), or V(s') with `value_of_future_state` (official
  default off; the ALOHA planning commands turn it on)."""
  return conditioned_query(net, params, context, future_sample, proprio, noise, layout=layout, mode='value',
                           num_steps=num_steps, masked=value_of_future_state, sampler_cfg=sampler_cfg,
                           sigma_scale=sigma_scale)['value']


def q_value_query(net: diffusion.NetFn, params, context: Array, action_sample: Array, proprio: Array, noise: Array,
                  *, layout: layout_lib.SlotLayout, num_steps: int, mask_future_state: bool = False,
                  sampler_cfg: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig(),
                  sigma_scale: Array | None = None) -> Array:
  """[B] Q(s, a) in [0, 1] of an action sample (official get_qvalue_prediction; needs a model trained with
  `mask_future_state_for_qvalue_prediction` when `mask_future_state`)."""
  return conditioned_query(net, params, context, action_sample, proprio, noise, layout=layout, mode='q_value',
                           num_steps=num_steps, masked=mask_future_state, sampler_cfg=sampler_cfg,
                           sigma_scale=sigma_scale)['value']


def aggregate_values(values: Array, scheme: str) -> Array:
  """Aggregates an ensemble of [0, 1] values along the last axis, then clamps to [0, 1].

  average: mean; lcb: mean - 1.0 * std (Bessel-corrected, so one member gives NaN, which the clamp keeps, as the
  official torch.std); success_vote: fraction > 0.05; majority_mean: the mean of the values > 0.05 if at least
  half are, else 0. The threshold is compared in float32 with a strict '>' (0.05f is not a success).
  """
  values = jnp.asarray(values, jnp.float32)
  if scheme == 'average':
    out = values.mean(axis=-1)
  elif scheme == 'lcb':
    out = values.mean(axis=-1) - jnp.std(values, axis=-1, ddof=1)
  elif scheme == 'success_vote':
    out = (values > SUCCESS_THRESHOLD).astype(jnp.float32).mean(axis=-1)
  elif scheme == 'majority_mean':
    success = values > SUCCESS_THRESHOLD
    count = success.sum(axis=-1).astype(jnp.float32)
    mean_success = jnp.where(success, values, 0.0).sum(axis=-1) / jnp.maximum(count, 1.0)
    out = jnp.where(count / values.shape[-1] >= 0.5, mean_success, 0.0)
  else:
    raise ValueError(f'unknown value aggregation {scheme!r}; expected one of {AGGREGATIONS}')
  return jnp.clip(out, 0.0, 1.0)


# Pixels ----------------------------------------------------------------------------------------------------------


# The observation keys of each camera in the official request (get_action's `obs`), per layout camera stem.
OBSERVATION_IMAGE_FIELDS = {
    'aloha': {'wrist_image': 'left_wrist_image', 'wrist_image2': 'right_wrist_image', 'image': 'primary_image'},
    'libero': {'wrist_image': 'wrist_image', 'image': 'primary_image'},
    'robocasa': {'wrist_image': 'wrist_image', 'image': 'primary_image', 'image2': 'secondary_image'},
}


def observation_image_fields(layout: layout_lib.SlotLayout) -> dict[str, str]:
  """{camera stem: observation key} of the layout's cameras, in slot order (official get_action's camera list)."""
  try:
    fields = OBSERVATION_IMAGE_FIELDS[layout.name]
  except KeyError:
    raise ValueError(f'no observation image fields for layout {layout.name!r}; known: '
                     f'{sorted(OBSERVATION_IMAGE_FIELDS)}') from None
  return {camera: fields[camera] for camera in layout.cameras}


def policy_video_items(layout: layout_lib.SlotLayout, camera_images: Mapping[str, Array]) -> list:
  """The items of slots 1..T-1 for `video.policy_pixel_sequence` at inference: None (black) for proprio, action,
  future proprio and value; the current image of each camera for both its current and its future slot (the future
  slots are generated from noise; the causal VAE keeps them from affecting the slots before them).

  `camera_images` maps the layout's camera stems (`wrist_image`, `wrist_image2`, `image`, `image2`) to uint8
  [B, H, W, 3] images, already preprocessed (resize, test-time crop).
  """
  missing = [c for c in layout.cameras if c not in camera_images]
  extra = [c for c in camera_images if c not in layout.cameras]
  if missing or extra:
    raise ValueError(f'{layout.name} needs camera images {list(layout.cameras)}; missing {missing}, unexpected {extra}')
  items = []
  for name in layout.slots[1:]:
    kind, _, camera = name.partition('_')
    items.append(camera_images[camera] if kind in ('current', 'future') and camera in layout.cameras else None)
  return items


def future_images(vae_params, vae_cfg, sample: Array, orig_latent: Array,
                  layout: layout_lib.SlotLayout) -> dict[str, Array]:
  """Decoded future images {'future_<camera>': uint8 [B, H, W, 3]} of a generated latent.

  The injected slots are first restored from the pre-injection latent (official undo_latent_injection), the
  whole latent is decoded, mapped with (x + 1) * 127.5, clamped to [0, 255] and truncated to uint8.
  """
  restored = slots.restore_slots(sample, orig_latent, layout.injected_slots)
  video = vae_lib.decode(vae_params, vae_cfg, restored)
  pixels = jnp.clip((video + 1.0) * 127.5, 0, 255).astype(jnp.uint8)
  return {layout.slots[k]: pixels[:, layout.pixel_frame_of(k)] for k in layout.future_image_slots}


def average_images(predictions: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
  """Per-pixel float32 mean of several uint8 predictions, rounded half to even (official
  average_future_image_predictions)."""
  if not predictions:
    return {}
  return {k: jnp.clip(jnp.round(jnp.mean(jnp.stack([p[k].astype(jnp.float32) for p in predictions]), axis=0)),
                      0, 255).astype(jnp.uint8) for k in predictions[0]}


def aggregate_future_images(predictions: Sequence[Mapping[str, Array]], scheme: str) -> dict[str, Array]:
  """The future images a future-state ensemble returns: 'average' (`average_images`) or 'last' (the last member,
  the one with the most denoising steps)."""
  if scheme not in FUTURE_AGGREGATIONS:
    raise ValueError(f'unknown future-image aggregation {scheme!r}; expected one of {FUTURE_AGGREGATIONS}')
  if not predictions:
    return {}
  return average_images(predictions) if scheme == 'average' else dict(predictions[-1])


# Host-side convenience -------------------------------------------------------------------------------------------


def normalized_proprio(raw_proprio: Array, stats: Mapping[str, Any], layout: layout_lib.SlotLayout) -> np.ndarray:
  """Raw proprio [B, P] -> min-max normalised float64 (cast to bf16 by the queries), as the official server does."""
  raw = np.asarray(raw_proprio)
  if raw.ndim == 1:
    raw = raw[None]
  slots.check_proprio(layout, raw)
  return np.asarray(normalization.normalize(raw, stats, 'proprio'))


def unnormalized_actions(actions: Array, stats: Mapping[str, Any]) -> np.ndarray:
  """Normalised actions (float32 readout) -> raw action units (float64, as the official unnormalize_actions)."""
  return np.asarray(normalization.unnormalize(np.asarray(actions, np.float32), stats, 'actions'))


@functools.partial(jax.jit, static_argnames=('net', 'layout', 'num_steps', 'sampler_cfg', 'trace'))
def jit_action_query(net, params, context, latent, proprio, noise, *, layout, num_steps,
                     sampler_cfg=sampler_lib.SamplerConfig(), sigma_scale=None, trace=False):
  """`action_query` compiled (one program per network, layout, step count)."""
  return action_query(net, params, context, latent, proprio, noise, layout=layout, num_steps=num_steps,
                      sampler_cfg=sampler_cfg, sigma_scale=sigma_scale, trace=trace)


jit_conditioned_query = jax.jit(conditioned_query, static_argnames=('net', 'layout', 'mode', 'num_steps', 'masked',
                                                                    'sampler_cfg', 'trace'))
jit_world_model_query = jax.jit(world_model_query, static_argnames=('net', 'layout', 'num_steps', 'sampler_cfg'))
jit_value_query = jax.jit(value_query, static_argnames=('net', 'layout', 'num_steps', 'value_of_future_state',
                                                        'sampler_cfg'))
jit_q_value_query = jax.jit(q_value_query, static_argnames=('net', 'layout', 'num_steps', 'mask_future_state',
                                                            'sampler_cfg'))
