"""Train state and the jitted, sharded training step of the policy.

One step: encode the slot-layout video with the frozen VAE (one causal pass), draw σ and noise from a key folded
from the run seed and the step number (so a resumed run draws exactly what an uninterrupted one would), compute
the masked rectified-flow loss through the DiT (bf16 compute on fp32 master parameters), apply the optimiser.

LoRA fine-tuning (`StepConfig.lora`): the params are {'base': the frozen DiT, 'adapters': the LoRA adapters}
(`lora_params`). The gradient is taken with respect to the adapters only, the optimiser is partitioned so that its
state exists for the adapters only (train/optim.py:freeze_base), and the base passes through the step untouched.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from cosmos_jax.nn import dit as dit_lib
from cosmos_jax.nn import lora as lora_lib
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import video as video_lib
from cosmos_jax.train import optim
from cosmos_jax.train import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimiser steps taken
  params: Any  # DiT parameters, fp32 masters; LoRA: {'base': frozen DiT, 'adapters': fp32 adapters}
  opt_state: Any
  rng: jax.Array  # uint32 key data of the run key (a plain array, so it checkpoints anywhere)
  ema_params: Any = None  # of the trained parameters (LoRA: the adapters)


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static pieces of the training step (hashable)."""

  dit: dit_lib.DiTConfig
  vae: vae_lib.VAEConfig
  layout: layout_lib.SlotLayout
  diffusion: diffusion.DiffusionConfig
  ema_decay: float = 0.0  # 0 = no EMA (the official run)
  grad_accum_steps: int = 1  # micro-batches per optimiser step (the batch is split inside the step)
  mesh: Any = None  # the training mesh: the VAE encode runs per device (see `encode_slot_frames`)
  lora: lora_lib.LoRAConfig | None = None  # LoRA fine-tuning of a frozen base (None: full fine-tuning)


# Keys of a training batch (see cosmos_jax.data): one frame per latent slot, the text embeddings, and the
# normalised targets and sample-type flags. A batch may also carry `latent`, the frames already encoded by the
# frozen VAE (train/latent_cache.py); the step then does not encode.
BATCH_KEYS = ('video', 't5_text_embeddings', *diffusion.BATCH_KEYS)
LATENT_KEY = 'latent'


BASE, ADAPTERS = 'base', 'adapters'


def lora_params(base, adapters) -> dict:
  """The params of a LoRA train state: the frozen base and the trained adapters."""
  return {BASE: base, ADAPTERS: adapters}


def is_lora_params(params) -> bool:
  return isinstance(params, dict) and set(params) == {BASE, ADAPTERS}


def trained_params(params):
  """What the optimiser changes (and a checkpoint's `params` item holds): the adapters of a LoRA state, else all."""
  return params[ADAPTERS] if is_lora_params(params) else params


def model_params(params, lora: lora_lib.LoRAConfig | None):
  """The tree the DiT forward takes: the params, or for LoRA the base with its adapters beside the kernels."""
  if lora is None:
    return params
  return lora_lib.unmerged(params[BASE], params[ADAPTERS], lora)


def init_state(params, tx: optax.GradientTransformation, seed: int, *, ema: bool = False,
               base_dtype: str = 'float32') -> TrainState:
  """The state at step 0. Trained parameters are fp32 masters; a LoRA base (`lora_params`) is stored in
  `base_dtype` (bf16 halves the frozen weights' memory; the forward computes in the DiT's dtype either way)."""
  if is_lora_params(params):
    params = lora_params(jax.tree.map(lambda p: jnp.asarray(p, base_dtype), params[BASE]),
                         jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params[ADAPTERS]))
  else:
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
  trained = trained_params(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.key(seed)),
                    ema_params=jax.tree.map(jnp.copy, trained) if ema else None)


def check_batch(batch: dict) -> None:
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f'training batch lacks {missing}; it has {sorted(batch)}')
  if batch['video'].dtype != jnp.uint8 or batch['video'].ndim != 5:
    raise ValueError(f"batch['video'] must be uint8 [B,state_t,H,W,3] (one frame per slot), got "
                     f"{batch['video'].dtype} {batch['video'].shape}")
  if LATENT_KEY in batch:
    b, t, h, w, _ = batch['video'].shape
    latent = batch[LATENT_KEY]
    s = vae_lib.SPATIAL_COMPRESSION
    if latent.dtype != jnp.float32 or latent.shape[:4] != (b, t, h // s, w // s):
      raise ValueError(f"batch['latent'] must be float32 [{b},{t},{h // s},{w // s},z] (the VAE latent of "
                       f"batch['video']), got {latent.dtype} {latent.shape}")


def encode_slot_frames(vae_params, vae_cfg: vae_lib.VAEConfig, frames: jax.Array, mesh=None) -> jax.Array:
  """Latents [B, state_t, h, w, 16] (float32) of per-slot frames, encoded one sample at a time per device.

  The whole-sequence causal VAE keeps every pixel frame's activations live (GBs per 224-px sample), so encoding
  the per-device batch at once would cost batch × that. Inside `shard_map` each device `lax.map`s over its own
  samples, which bounds the encoder's working memory to one sample whatever the per-device batch."""

  def encode_local(params, local_frames):
    def encode_one(sample_frames):
      video = video_lib.pixels_to_unit(video_lib.slot_frames_to_video(sample_frames[None]), vae_cfg.dtype)
      return vae_lib.encode(params, vae_cfg, video)[0].astype(jnp.float32)

    return jax.lax.map(encode_one, local_frames)

  if mesh is None:
    return encode_local(vae_params, frames)
  replicated = jax.tree.map(lambda _: P(), vae_params)
  return jax.shard_map(encode_local, mesh=mesh, in_specs=(replicated, P(sharding_lib.BATCH_AXES)),
                       out_specs=P(sharding_lib.BATCH_AXES), check_vma=False)(vae_params, frames)


def latent_shape(cfg: StepConfig, video_shape) -> tuple[int, ...]:
  """[B, state_t, h, w, z] of the latent `encode_slot_frames` makes from [B, state_t, H, W, 3] slot frames."""
  b, t, h, w, _ = video_shape
  s = vae_lib.SPATIAL_COMPRESSION
  return (b, t, h // s, w // s, cfg.vae.z_dim)


def loss_and_metrics(trained, frozen, vae_params, batch: dict, sigma: jax.Array, epsilon: jax.Array,
                     cfg: StepConfig):
  """The policy loss of one (micro-)batch and its diagnostics (pure; differentiable in `trained`: the DiT params,
  or the LoRA adapters of the `frozen` base)."""
  if LATENT_KEY in batch:
    latent = jax.lax.stop_gradient(batch[LATENT_KEY])
  else:
    latent = jax.lax.stop_gradient(encode_slot_frames(vae_params, cfg.vae, batch['video'], cfg.mesh))
  targets = {k: batch[k] for k in diffusion.BATCH_KEYS}
  params = trained if cfg.lora is None else model_params(lora_params(frozen, trained), cfg.lora)
  return diffusion.training_loss(diffusion.DiTNet(cfg.dit), params, batch['t5_text_embeddings'], latent, targets,
                                 sigma, epsilon, cfg.layout, cfg.diffusion)


# Diagnostics that are means over every element of the batch: the mean over equal micro-batches is exact. The other
# scalar diagnostics average over the samples of one type (NaN when a batch has none) and are combined with nanmean.
_BATCH_MEAN_METRICS = ('loss', 'mse_loss', 'edm_loss')


def split_micro_batches(tree, k: int, mesh=None):
  """Leading axis B -> [k, B/k]: micro-batch j holds rows j, j + k, j + 2k, ... so each device's rows of the
  batch-sharded input stay on that device (needs the per-device batch divisible by k)."""

  def split(x):
    b = x.shape[0]
    if b % k:
      raise ValueError(f'batch of {b} does not split into grad_accum_steps={k} micro-batches')
    x = jnp.swapaxes(x.reshape(b // k, k, *x.shape[1:]), 0, 1)
    if mesh is not None:
      x = jax.lax.with_sharding_constraint(
          x, jax.sharding.NamedSharding(mesh, P(None, sharding_lib.BATCH_AXES)))
    return x

  return jax.tree.map(split, tree)


def accumulated_grads(params, frozen, vae_params, batch: dict, sigma: jax.Array, epsilon: jax.Array,
                      cfg: StepConfig):
  """(loss, scalar metrics, gradient in `params`) of the whole batch, computed over `cfg.grad_accum_steps`
  micro-batches (`frozen`: the LoRA base, else None).

  The gradient is the mean of the micro-batch gradients, which equals the full-batch gradient (the loss is a mean
  over equally sized samples); only the activations of one micro-batch are live at a time."""
  grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
  k = cfg.grad_accum_steps
  if k == 1:
    (loss, aux), grads = grad_fn(params, frozen, vae_params, batch, sigma, epsilon, cfg)
    return loss, {n: v for n, v in aux.items() if jnp.ndim(v) == 0}, grads

  micro = split_micro_batches({'batch': batch, 'sigma': sigma, 'epsilon': epsilon}, k, cfg.mesh)

  def body(grad_sum, m):
    (loss, aux), grads = grad_fn(params, frozen, vae_params, m['batch'], m['sigma'], m['epsilon'], cfg)
    scalars = {n: v for n, v in aux.items() if jnp.ndim(v) == 0}
    grad_sum = jax.tree.map(lambda s, g: s + g.astype(jnp.float32), grad_sum, grads)
    return grad_sum, {'loss': loss, **scalars}

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  grad_sum, per_micro = jax.lax.scan(body, zeros, micro)
  grads = jax.tree.map(lambda g, p: (g / k).astype(p.dtype), grad_sum, params)
  metrics = {n: v.mean() if n in _BATCH_MEAN_METRICS else jnp.nanmean(v) for n, v in per_micro.items()}
  return metrics.pop('loss'), metrics, grads


def train_step(state: TrainState, vae_params, batch: dict, *, cfg: StepConfig,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One optimiser step (over `cfg.grad_accum_steps` micro-batches of `batch`): step count, EMA and learning rate
  advance once. The noise is drawn for the whole batch, so accumulation does not change what a sample sees."""
  check_batch(batch)
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  sigma, epsilon = diffusion.draw_sigma_and_noise(key, latent_shape(cfg, batch['video'].shape), cfg.diffusion)
  if cfg.lora is None:
    loss, aux, grads = accumulated_grads(state.params, None, vae_params, batch, sigma, epsilon, cfg)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    trained = params
  else:
    base, adapters = state.params[BASE], state.params[ADAPTERS]
    loss, aux, grads = accumulated_grads(adapters, base, vae_params, batch, sigma, epsilon, cfg)
    # The partitioned optimiser ignores the base's entries (set_to_zero) and its state holds none; the zeros are
    # never used, so XLA drops them. The base itself passes through unchanged (bit for bit).
    updates, opt_state = tx.update(lora_params(jax.tree.map(jnp.zeros_like, base), grads), state.opt_state,
                                   state.params)
    trained = optax.apply_updates(adapters, updates[ADAPTERS])
    params = lora_params(base, trained)
  ema = state.ema_params
  if ema is not None:
    ema = optim.ema_update(ema, trained, cfg.ema_decay)
  metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads), 'param_norm': optax.tree.norm(trained), **aux}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), metrics


def jit_train_step(cfg: StepConfig, tx: optax.GradientTransformation, mesh, abstract_state: TrainState,
                   abstract_vae_params, abstract_batch: dict) -> tuple[Callable, Any]:
  """The train step as one `jax.jit` with explicit shardings (FSDP state, batch over (data, fsdp)) and the state
  donated. Returns (step function, state shardings)."""
  cfg = dataclasses.replace(cfg, mesh=mesh)
  batch_devices = math.prod(mesh.shape[a] for a in sharding_lib.BATCH_AXES)
  global_batch = abstract_batch['video'].shape[0]
  if cfg.grad_accum_steps < 1 or global_batch % (batch_devices * cfg.grad_accum_steps):
    raise ValueError(f'batch_size {global_batch} must split into grad_accum_steps={cfg.grad_accum_steps} '
                     f'micro-batches over {batch_devices} batch-sharded devices (a multiple of '
                     f'{batch_devices * max(cfg.grad_accum_steps, 1)})')
  state_shardings = sharding_lib.tree_shardings(abstract_state, mesh)
  vae_shardings = sharding_lib.tree_shardings(abstract_vae_params, mesh)
  batch_shardings = {k: sharding_lib.batch_sharding(mesh, len(v.shape)) for k, v in abstract_batch.items()}
  step = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx),
                 in_shardings=(state_shardings, vae_shardings, batch_shardings),
                 out_shardings=(state_shardings, sharding_lib.replicated(mesh)),
                 donate_argnums=(0,))
  return step, state_shardings
