"""Rectified-flow preconditioning, conditioning by frame replacement, sigma sampling and the training loss
(official cosmos_policy/models/policy_video2world_model.py:CosmosPolicyVideo2WorldModel.denoise,
draw_training_sigma_and_epsilon; policy_text2world_model.py:
CosmosPolicyDiffusionModel.compute_loss_with_epsilon_and_sigma).

Everything is a pure function of arrays; randomness comes from JAX keys passed in. The network is any callable
`net(params, x, timesteps, context, condition_mask) -> out` (channels-last, raw velocity-style output); `DiTNet`
adapts `cosmos_jax.nn.dit`. Latents are channels-last [B, T, H, W, C].

Preconditioning (sigma_data = 1): t = sigma / (1 + sigma), c_in = c_skip = 1 - t, c_out = -t, c_noise = t.
Conditioning slots (mask 1) enter the network as the clean ground truth with timestep c_noise(sigma_conditional=0)
= 0, and their x0 prediction is replaced by the ground truth. The DiT itself quantises its input and the
timesteps to its activation dtype (bf16 in the released policy), as the official wrapper does before the net.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.nn import dit
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import masks as masks_lib
from cosmos_jax.policy import slots

Array = Any
NetFn = Callable[..., Array]  # net(params, x, timesteps, context, condition_mask) -> out


@dataclasses.dataclass(frozen=True)
class DiTNet:
  """`net(params, x, timesteps, context, condition_mask)` for the Cosmos DiT (hashable: a static jit argument)."""

  cfg: dit.DiTConfig

  def __call__(self, params, x, timesteps, context, condition_mask):
    return dit.forward(params, self.cfg, x, timesteps, context, condition_mask)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  """Training objective settings; defaults are the resolved ALOHA / LIBERO / RoboCasa policy configs.

  The loss-masking flags are the official ones (all False in the main configs). The ALOHA planning model sets
  `mask_current_state_action_for_value_prediction` (V(s') inputs, value-only loss on value samples). The paper's
  ablation without auxiliary targets is `mask_loss_for_action_future_state_prediction=True` (demo samples train
  the action slot only, world-model samples the future state only, value samples the value only).
  """

  sigma_conditional: float = 0.0  # noise level of the conditioning slots (`sigma_conditional`)
  loss_scale: float = 10.0  # `loss_scale`, with `loss_reduce = "mean"`
  p_mean: float = math.log(4.0)  # HybridEDMSDE p_mean (ln 4)
  p_std: float = 1.2
  lognormal_probability: float = 0.7  # the rest is U(uniform_lower, uniform_upper)
  uniform_lower: float = 1.0
  uniform_upper: float = 85.0
  adjust_video_noise: bool = True  # sigma *= sqrt(state_t)
  round_targets_to_bf16: bool = True  # LowPrecisionCallback casts the batch's float targets to bf16
  mask_current_state_action_for_value_prediction: bool = False
  mask_future_state_for_qvalue_prediction: bool = False
  mask_loss_for_action_future_state_prediction: bool = False
  mask_value_prediction_loss_for_policy_prediction: bool = False
  action_loss_multiplier: int = 1

  def __post_init__(self):
    if self.mask_loss_for_action_future_state_prediction and self.mask_value_prediction_loss_for_policy_prediction:
      raise ValueError('mask_loss_for_action_future_state_prediction and '
                       'mask_value_prediction_loss_for_policy_prediction are mutually exclusive (as in the official '
                       'CosmosPolicyModelConfig)')
    if int(self.action_loss_multiplier) != self.action_loss_multiplier or self.action_loss_multiplier < 1:
      raise ValueError(f'action_loss_multiplier must be a positive integer, got {self.action_loss_multiplier}')

  @property
  def masks_loss(self) -> bool:
    return (self.mask_current_state_action_for_value_prediction or self.mask_future_state_for_qvalue_prediction
            or self.mask_loss_for_action_future_state_prediction
            or self.mask_value_prediction_loss_for_policy_prediction or self.action_loss_multiplier != 1)


# Preconditioning ---------------------------------------------------------------------------------------------


def rectified_flow_scaling(sigma: Array) -> tuple[Array, Array, Array, Array]:
  """(c_skip, c_out, c_in, c_noise) for sigma_data = 1 (official RectifiedFlowScaling, t_scaling_factor 1)."""
  t = sigma / (sigma + 1)
  return 1.0 - t, -t, 1.0 - t, t


def loss_weight(sigma: Array) -> Array:
  """(1 + sigma)^2 / sigma^2 = 1 / t^2: the weighted x0 error equals the velocity error."""
  return (1 + sigma) ** 2 / sigma ** 2


def _per_sample(sigma: Array, batch: int) -> Array:
  sigma = jnp.asarray(sigma, jnp.float32)
  if sigma.ndim == 0:
    sigma = jnp.broadcast_to(sigma, (batch,))
  sigma = sigma.reshape(-1)
  if sigma.shape != (batch,):
    raise ValueError(f'sigma must be a scalar or [B={batch}] (one noise level per sample), got {sigma.shape}')
  return sigma


def denoise(net: NetFn, params, context: Array, xt: Array, sigma: Array, gt_frames: Array, mask: Array, *,
            sigma_conditional: float = 0.0, with_aux: bool = False):
  """x0 prediction of the noisy latent xt [B,T,H,W,C] at noise level sigma ([B] or scalar).

  `gt_frames` holds the clean conditioning latents and `mask` [B, T] marks the conditioning slots: those get the
  clean latent as input (not scaled by c_in), the timestep c_noise(sigma_conditional) = 0 instead of t, and their
  output is replaced by `gt_frames`. With `with_aux`, also returns the net's inputs and output.
  """
  b, t_frames = xt.shape[:2]
  if gt_frames.shape != xt.shape:
    raise ValueError(f'gt_frames {tuple(gt_frames.shape)} and xt {tuple(xt.shape)} differ in shape')
  sigma = _per_sample(sigma, b)
  c_skip, c_out, c_in, c_noise = rectified_flow_scaling(sigma)
  given = jnp.asarray(mask, jnp.float32)
  if given.shape != (b, t_frames):
    raise ValueError(f'mask must be [B, T] = {(b, t_frames)}, got {given.shape}')
  given_bool = (given > 0.5)[:, :, None, None, None]
  bcast = lambda v: v[:, None, None, None, None]
  net_in = jnp.where(given_bool, gt_frames, bcast(c_in) * xt)
  _, _, _, c_noise_cond = rectified_flow_scaling(jnp.float32(sigma_conditional))
  timesteps = jnp.where(given > 0.5, c_noise_cond, c_noise[:, None])
  net_out = net(params, net_in, timesteps, context, masks_lib.expand(given, xt.shape)).astype(jnp.float32)
  x0 = bcast(c_skip) * xt + bcast(c_out) * net_out
  x0 = jnp.where(given_bool, gt_frames, x0)
  if with_aux:
    return x0, {'net_in': net_in, 'timesteps': timesteps, 'net_out': net_out}
  return x0


# Sigma and noise ------------------------------------------------------------------------------------------------


def sample_training_sigma(key: Array, batch: int, state_t: int, cfg: DiffusionConfig = DiffusionConfig()) -> Array:
  """[B] training noise levels: per sample, with probability 0.7 exp(N(p_mean, p_std)) else U(1, 85); then times
  sqrt(state_t) (`adjust_video_noise`). The official draws the log-normal branch by inverse CDF of a numpy
  uniform, which is the same distribution."""
  k_choice, k_normal, k_uniform = jax.random.split(key, 3)
  lognormal = jnp.exp(cfg.p_mean + cfg.p_std * jax.random.normal(k_normal, (batch,)))
  uniform = jax.random.uniform(k_uniform, (batch,), minval=cfg.uniform_lower, maxval=cfg.uniform_upper)
  sigma = jnp.where(jax.random.uniform(k_choice, (batch,)) < cfg.lognormal_probability, lognormal, uniform)
  if cfg.adjust_video_noise:
    sigma = sigma * math.sqrt(state_t)
  return sigma.astype(jnp.float32)


def draw_sigma_and_noise(key: Array, latent_shape, cfg: DiffusionConfig = DiffusionConfig()) -> tuple[Array, Array]:
  """(sigma [B], epsilon ~ N(0, I) of the latent's shape) for one training step."""
  k_sigma, k_eps = jax.random.split(key)
  sigma = sample_training_sigma(k_sigma, latent_shape[0], latent_shape[1], cfg)
  return sigma, jax.random.normal(k_eps, tuple(latent_shape), jnp.float32)


# Training loss ----------------------------------------------------------------------------------------------------

BATCH_KEYS = ('actions', 'proprio', 'future_proprio', 'value_function_return', 'rollout_data_mask',
              'world_model_sample_mask', 'value_function_sample_mask')


def _slot_columns(layout: layout_lib.SlotLayout, names) -> np.ndarray:
  cols = np.zeros(layout.state_t, np.float32)
  cols[[layout.index(n) for n in names]] = 1.0
  return cols


def loss_mask(layout: layout_lib.SlotLayout, rollout: Array, world_model: Array, value: Array,
              cfg: DiffusionConfig) -> Array:
  """[B, T] per-slot loss multipliers (official compute_loss_with_epsilon_and_sigma)."""
  b = rollout.shape[0]
  final = jnp.ones((b, layout.state_t), jnp.float32)
  demo = (rollout == 0)[:, None]
  world = ((rollout == 1) & (world_model == 1))[:, None]
  value_s = ((rollout == 1) & (value == 1))[:, None]
  future_state = [layout.slots[i] for i in layout.future_state_slots]
  value_col = _slot_columns(layout, [layout_lib.VALUE])
  if cfg.mask_current_state_action_for_value_prediction or cfg.mask_future_state_for_qvalue_prediction:
    final = final * jnp.where(value_s, value_col, 1.0)
  if cfg.mask_loss_for_action_future_state_prediction:
    final = final * (jnp.where(demo, _slot_columns(layout, [layout_lib.ACTION]), 0.0) +
                     jnp.where(world, _slot_columns(layout, future_state), 0.0) +
                     jnp.where(value_s, value_col, 0.0)).clip(0, 1)
  if cfg.mask_value_prediction_loss_for_policy_prediction:
    final = final * (jnp.where(demo, _slot_columns(layout, [layout_lib.ACTION] + future_state), 0.0) +
                     jnp.where(world, _slot_columns(layout, future_state), 0.0)).clip(0, 1)
  if cfg.action_loss_multiplier != 1:
    final = final.at[:, layout.index(layout_lib.ACTION)].multiply(float(cfg.action_loss_multiplier))
  return final


def _selected_mean(values: Array, selected: Array) -> Array:
  """Mean of `values` [B, ...] over the samples with selected[b] (NaN when none, like torch's empty mean)."""
  per_sample = values.reshape(values.shape[0], -1).mean(axis=1)
  selected = selected.astype(jnp.float32)
  return jnp.sum(per_sample * selected) / jnp.sum(selected)


# (diagnostic name stem, slot name, which samples): the official output_batch entries.
_DIAGNOSTICS = (
    ('demo_sample_action', layout_lib.ACTION, 'demo'),
    ('demo_sample_future_proprio', layout_lib.FUTURE_PROPRIO, 'demo'),
    ('demo_sample_future_wrist_image', 'future_wrist_image', 'demo'),
    ('demo_sample_future_image', 'future_image', 'demo'),
    ('demo_sample_value', layout_lib.VALUE, 'demo'),
    ('world_model_sample_future_proprio', layout_lib.FUTURE_PROPRIO, 'world_model'),
    ('world_model_sample_future_wrist_image', 'future_wrist_image', 'world_model'),
    ('world_model_sample_future_image', 'future_image', 'world_model'),
    ('world_model_sample_value', layout_lib.VALUE, 'world_model'),
    ('value_function_sample_value', layout_lib.VALUE, 'value'),
)


def check_batch(layout: layout_lib.SlotLayout, batch: dict, latent_shape) -> None:
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f'training batch is missing {missing} (needs {list(BATCH_KEYS)})')
  b = latent_shape[0]
  slots.check_actions(layout, batch['actions'], b)
  slots.check_proprio(layout, batch['proprio'], b)
  slots.check_proprio(layout, batch['future_proprio'], b)
  for key in BATCH_KEYS[3:]:
    if tuple(jnp.shape(batch[key])) != (b,):
      raise ValueError(f'batch[{key!r}] must be [B={b}], got shape {tuple(jnp.shape(batch[key]))}')


def training_loss(net: NetFn, params, context: Array, latent: Array, batch: dict, sigma: Array, epsilon: Array,
                  layout: layout_lib.SlotLayout, cfg: DiffusionConfig = DiffusionConfig(), *,
                  with_intermediates: bool = False) -> tuple[Array, dict]:
  """The policy training loss for one batch and its logged diagnostics.

  Args:
    net, params, context: the denoiser network, its parameters and the text embeddings [B, N, Dc].
    latent: the VAE latent of the slot-layout video [B, T, H, W, C] (before injection).
    batch: `actions` [B, chunk, D], `proprio` / `future_proprio` [B, P], `value_function_return` [B] (all
      normalised to [-1, 1]), and the sample-type flags `rollout_data_mask`, `world_model_sample_mask`,
      `value_function_sample_mask` [B].
    sigma: [B] noise levels (`sample_training_sigma`); epsilon: N(0, I) noise of the latent's shape.

  Returns:
    (loss, aux): loss = loss_scale * mean over every element (conditioning slots included) of
    weight(sigma) * (x0 - x0_pred)^2 * loss mask; aux holds `mse_loss`, `edm_loss`, `edm_loss_per_frame` and the
    per-slot `*_mse_loss` / `*_l1_loss` diagnostics (`demo_sample_action_l1_loss`, ...), plus the intermediates
    (x0, gt_frames, mask, xt, net_in, timesteps, net_out, x0_pred, weights) when `with_intermediates`.
  """
  layout_lib.check_latent(layout, latent.shape)
  check_batch(layout, batch, latent.shape)
  if epsilon.shape != latent.shape:
    raise ValueError(f'epsilon {tuple(epsilon.shape)} must have the latent shape {tuple(latent.shape)}')
  b = latent.shape[0]
  sigma = _per_sample(sigma, b)
  cast = slots.round_to_bf16 if cfg.round_targets_to_bf16 else (lambda v: jnp.asarray(v, jnp.float32))
  rollout = jnp.asarray(batch['rollout_data_mask'])
  world_model = jnp.asarray(batch['world_model_sample_mask'])
  value_sample = jnp.asarray(batch['value_function_sample_mask'])

  x0 = slots.inject_targets(latent.astype(jnp.float32), layout, actions=cast(batch['actions']),
                            proprio=cast(batch['proprio']), future_proprio=cast(batch['future_proprio']),
                            value=cast(batch['value_function_return']))
  # The conditioning copy carries the same injections (actions included: training batches always carry the
  # rollout flags), so it equals x0.
  gt_frames = x0
  mask = masks_lib.training_mask(
      layout, world_model, value_sample,
      value_of_future_state=cfg.mask_current_state_action_for_value_prediction,
      q_value=cfg.mask_future_state_for_qvalue_prediction)
  xt = x0 + sigma[:, None, None, None, None] * epsilon
  x0_pred, net_aux = denoise(net, params, context, xt, sigma, gt_frames, mask,
                             sigma_conditional=cfg.sigma_conditional, with_aux=True)
  weights = loss_weight(sigma)
  sq_err = (x0 - x0_pred) ** 2
  edm = sq_err * weights[:, None, None, None, None]
  per_element = edm
  if cfg.masks_loss:
    per_element = edm * loss_mask(layout, rollout, world_model, value_sample, cfg)[:, :, None, None, None]
  loss = per_element.mean() * cfg.loss_scale

  aux = {'mse_loss': sq_err.mean(), 'edm_loss': edm.mean(), 'edm_loss_per_frame': edm.mean(axis=(2, 3, 4))}
  selections = {'demo': rollout == 0, 'world_model': world_model == 1, 'value': value_sample == 1}
  for stem, slot_name, which in _DIAGNOSTICS:
    if slot_name not in layout.slots:
      continue
    diff = (x0 - x0_pred)[:, layout.index(slot_name)]
    aux[f'{stem}_mse_loss'] = _selected_mean(diff ** 2, selections[which])
    aux[f'{stem}_l1_loss'] = _selected_mean(jnp.abs(diff), selections[which])
  if with_intermediates:
    aux.update(x0=x0, gt_frames=gt_frames, mask=mask, xt=xt, x0_pred=x0_pred, weights=weights,
               edm_loss_per_element=edm, loss_per_element=per_element, **net_aux)
  return loss, aux
