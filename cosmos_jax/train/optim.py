"""The official optimiser recipe (official cosmos_policy/_src/imaginaire/utils/fused_adam.py:FusedAdam with
_src/imaginaire/functional/lr_scheduler.py:LambdaLinearScheduler) in optax.

AdamW (betas 0.9/0.99, eps 1e-8, decoupled weight decay 0.1 on every parameter, bias correction) on fp32 master
weights; gradients have NaN/±inf replaced by 0, then are clipped to global L2 norm 1.0; the learning rate is
`lr · f(n)` with the official `LambdaLinearScheduler` multiplier f, n counting optimiser steps. Gradient
accumulation (`optim.grad_accum_steps`) happens inside the train step (`state.accumulated_grads`), so this
transformation, the step count, the EMA and the schedule see one update per optimiser step. EMA of the parameters
is kept in the train state (see `ema_update`), off by default as in the official run. LoRA fine-tuning wraps the
recipe with `freeze_base`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax


def lambda_linear_multiplier(step, *, warm_up_steps: Sequence[int], cycle_lengths: Sequence[float],
                             f_start: Sequence[float], f_max: Sequence[float], f_min: Sequence[float]):
  """The official `LambdaLinearScheduler` multiplier f(n), traceable in `step` (n = optimiser step, from 0).

  Cycle c holds steps n ≤ cumsum(cycle_lengths)[c] (boundary inclusive, as the official `find_in_interval`); with
  local step m = n − start of the cycle: f = f_start + (f_max − f_start)·m/warm_up for m < warm_up, else
  f = f_min + (f_max − f_min)·(length − m)/(length − warm_up) (linear, not cosine).
  """
  lengths = (warm_up_steps, cycle_lengths, f_start, f_max, f_min)
  if len({len(v) for v in lengths}) != 1:
    raise ValueError(f'schedule lists must have one entry per cycle, got lengths {[len(v) for v in lengths]}')
  for c, (warm, length) in enumerate(zip(warm_up_steps, cycle_lengths)):
    if not 0 <= warm < length:
      raise ValueError(f'cycle {c}: need 0 <= warm_up_steps ({warm}) < cycle_lengths ({length})')
  ends = jnp.cumsum(jnp.asarray(cycle_lengths, jnp.float32))
  starts = jnp.concatenate([jnp.zeros(1, jnp.float32), ends[:-1]])
  n = jnp.asarray(step, jnp.float32)
  cycle = jnp.minimum(jnp.searchsorted(ends, n, side='left'), len(cycle_lengths) - 1)
  pick = lambda v: jnp.asarray(v, jnp.float32)[cycle]
  m = n - starts[cycle]
  warm, length = pick(warm_up_steps), pick(cycle_lengths)
  fs, fmax, fmin = pick(f_start), pick(f_max), pick(f_min)
  warming = fs + (fmax - fs) * m / jnp.maximum(warm, 1.0)
  decaying = fmin + (fmax - fmin) * (length - m) / (length - warm)
  return jnp.where(m < warm, warming, decaying)


def learning_rate_schedule(config) -> optax.Schedule:
  """`config` has `lr` and a `schedule` with the official lists (warm_up_steps, cycle_lengths, f_start, f_max, f_min)."""
  s = config.schedule
  kwargs = dict(warm_up_steps=tuple(s.warm_up_steps), cycle_lengths=tuple(s.cycle_lengths), f_start=tuple(s.f_start),
                f_max=tuple(s.f_max), f_min=tuple(s.f_min))
  lambda_linear_multiplier(0, **kwargs)  # validate eagerly
  return lambda step: config.lr * lambda_linear_multiplier(step, **kwargs)


def nan_to_zero() -> optax.GradientTransformation:
  """Replaces NaN and ±inf gradient entries by 0 (the official `nan_to_num` before clipping)."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config) -> optax.GradientTransformation:
  """The optimiser from `config.optim` (lr, b1, b2, eps, weight_decay, clip_norm, schedule)."""
  return optax.chain(
      nan_to_zero(),
      optax.clip_by_global_norm(config.clip_norm),
      optax.adamw(learning_rate_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
                  weight_decay=config.weight_decay),
  )


def ema_update(ema_params, params, decay: float):
  """ema ← decay·ema + (1 − decay)·params, in the EMA's dtype (fp32)."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema_params, params)


def freeze_base(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` on the adapters of LoRA params ({'base', 'adapters'}, see state.lora_params) and nothing on the base:
  `optax.multi_transform` masks the base out of `tx`, so the optimiser state (moments, clipping norm, weight decay)
  covers the adapters only, and the base's label maps to `set_to_zero` (no state)."""

  def labels(params):
    return {'base': jax.tree.map(lambda _: 'frozen', params['base']),
            'adapters': jax.tree.map(lambda _: 'adapters', params['adapters'])}

  return optax.multi_transform({'adapters': tx, 'frozen': optax.set_to_zero()}, labels)
