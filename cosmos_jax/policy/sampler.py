"""The inference sampler: deterministic second-order multistep ("2ab") in x0 form (official
cosmos_policy/modules/cosmos_sampler.py:CosmosPolicySampler, on _src/imaginaire/functional/multi_step.py).

For N requested steps (N >= 3): n = N - 1 solver steps over sigma_i = (80^(1/7) + i/n (4^(1/7) - 80^(1/7)))^7,
i = 0..n, the first an Euler step in x0 form and the rest Adams-Bashforth 2 in log-sigma, then one final x0
prediction at sigma_n = 4. N <= 2 is a single call at sigma = 80 (the official sampler reduces N = 2 to 1). So the
number of denoiser calls (NFE) is N for N >= 3 and 1 otherwise.

Every update is x_{i+1} = a_i x_i + b_i d_i + c_i d_{i-1}; the coefficients are computed once in float64 on the host
(static for a given N), and the loop is a `lax.scan` inside the caller's jitted program (no host round trip per
step). The state is float32; the official keeps it in float64 but calls the network in float32, so the difference
is float32 rounding of the linear update.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = Any


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """The `__inference_only` sde range and the schedule exponent."""

  sigma_min: float = 4.0
  sigma_max: float = 80.0
  rho: float = 7.0


def schedule(num_steps: int, cfg: SamplerConfig = SamplerConfig()) -> np.ndarray:
  """The official `get_rev_ts` table (float64) for N requested steps: n+1 = N values for N >= 3, [80, 4] for
  N <= 2 (only the first is used)."""
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}')
  if not 0 < cfg.sigma_min < cfg.sigma_max:
    raise ValueError(f'need 0 < sigma_min < sigma_max, got {cfg.sigma_min}, {cfg.sigma_max}')
  n = num_steps - 1 if num_steps > 1 else 1
  i = np.arange(n + 1, dtype=np.float64)
  lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
  return (hi + i / n * (lo - hi)) ** cfg.rho


def num_calls(num_steps: int) -> int:
  """Denoiser calls (DiT passes) for N requested steps."""
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}')
  return 1 if num_steps <= 2 else num_steps


def call_sigmas(num_steps: int, cfg: SamplerConfig = SamplerConfig()) -> np.ndarray:
  """The noise level of every denoiser call, in order."""
  sigmas = schedule(num_steps, cfg)
  return sigmas[:1] if num_steps <= 2 else sigmas


def solver_coefficients(sigmas, xp=np):
  """[..., n, 3] (a_i, b_i, c_i) with x_{i+1} = a_i x_i + b_i d_i + c_i d_{i-1}, for sigma tables [..., n+1].

  Step 0 is the Euler step in x0 form: a = s1/s0, b = 1 - s1/s0. Later steps are AB2 in lambda = -ln sigma:
  h = lambda_{i+1} - lambda_i, r = (lambda_{i-1} - lambda_i) / h, phi1 = (1 - e^-h)/h, phi2 = (phi1 - 1)/(-h);
  a = e^-h, b = h (phi1 - phi2/r), c = h phi2/r. `xp` is numpy (host tables, float64) or jax.numpy (traced
  per-sample tables).
  """
  sigmas = xp.asarray(sigmas, np.float64) if xp is np else sigmas
  lam = -xp.log(sigmas)
  h = lam[..., 1:] - lam[..., :-1]
  ratio = sigmas[..., 1:2] / sigmas[..., :1]
  euler = xp.stack([ratio, 1.0 - ratio, xp.zeros_like(ratio)], axis=-1)
  h_cur, h_prev = h[..., 1:], h[..., :-1]
  r = -h_prev / h_cur
  phi1 = -xp.expm1(-h_cur) / h_cur
  phi2 = (phi1 - 1.0) / (-h_cur)
  ab2 = xp.stack([xp.exp(-h_cur), h_cur * (phi1 - phi2 / r), h_cur * phi2 / r], axis=-1)
  return xp.concatenate([euler, ab2], axis=-2)


def scaled_schedule(num_steps: int, sigma_scale: Array, cfg: SamplerConfig = SamplerConfig()) -> Array:
  """[B, n+1] float32 per-sample `schedule` with sigma_max and sigma_min multiplied by sigma_scale[:, 0] and
  sigma_scale[:, 1] (traced; official use_variance_scale)."""
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}')
  n = num_steps - 1 if num_steps > 1 else 1
  sigma_scale = jnp.asarray(sigma_scale, jnp.float32)
  if sigma_scale.ndim != 2 or sigma_scale.shape[1] != 2:
    raise ValueError(f'sigma_scale must be [B, 2] (sigma_max factor, sigma_min factor), got {sigma_scale.shape}')
  hi = (cfg.sigma_max * sigma_scale[:, :1]) ** (1 / cfg.rho)
  lo = (cfg.sigma_min * sigma_scale[:, 1:]) ** (1 / cfg.rho)
  i = jnp.arange(n + 1, dtype=jnp.float32)[None]
  return (hi + i / n * (lo - hi)) ** cfg.rho


def variance_scale(seed: int) -> tuple[float, float]:
  """(sigma_max factor U(1, 3), sigma_min factor U(0.1, 1)) of the official `use_variance_scale`: two `torch.rand(1)`
  draws after `torch.manual_seed(seed)`. Torch's CPU generator is MT19937 seeded like numpy's legacy RandomState,
  and a float32 uniform keeps the low 24 bits of one 32-bit output, so the numbers are reproduced without torch."""
  if not 0 <= seed < 2 ** 32:
    raise ValueError(f'seed must be in [0, 2**32) for the variance scale, got {seed}')
  raw = np.random.RandomState(seed)._bit_generator.random_raw(2)  # pylint: disable=protected-access
  u = (raw.astype(np.uint64) & np.uint64((1 << 24) - 1)).astype(np.float64) * 2.0 ** -24
  return float(u[0] * 2.0 + 1.0), float(u[1] * 0.9 + 0.1)


def sample(denoise_fn: Callable, x_init: Array, num_steps: int, cfg: SamplerConfig = SamplerConfig(), *,
           sigma_scale: Array | None = None, trace: bool = False):
  """Runs the 2ab sampler from x_init (already scaled by sigma_max).

  Args:
    denoise_fn: `denoise_fn(x, sigma) -> x0` with sigma a float32 scalar (or [B] with `sigma_scale`); with
      `trace`, it must return `(x0, aux)` (a pytree of per-call arrays, e.g. the net's inputs).
    num_steps: requested steps N (static).
    sigma_scale: optional [B, 2] per-sample (sigma_max, sigma_min) factors (official use_variance_scale,
      `variance_scale(seed)`): x_init is multiplied by the sigma_max factor and each sample runs its own schedule
      (computed in float32 in the program; without it the schedule is a float64 host table).
    trace: also return the trajectory: `calls` (per-call sigma, x_in, x0 and aux, stacked over calls) and
      `steps` (per solver step x_in, denoised, x_out).

  Returns:
    The final x0 prediction (float32), or `(x0, trajectory)` with `trace`.
  """
  x = jnp.asarray(x_init, jnp.float32)
  if sigma_scale is None:
    sigmas = jnp.asarray(schedule(num_steps, cfg), jnp.float32)
    coeffs = jnp.asarray(solver_coefficients(schedule(num_steps, cfg)), jnp.float32) if num_steps > 2 else None
    per_sample = lambda v: v
  else:
    if sigma_scale.shape != (x.shape[0], 2):
      raise ValueError(f'sigma_scale must be [B={x.shape[0]}, 2], got {tuple(sigma_scale.shape)}')
    table = scaled_schedule(num_steps, sigma_scale, cfg)  # [B, n+1]
    x = x * sigma_scale[:, 0].reshape((-1,) + (1,) * (x.ndim - 1))
    sigmas = table.T  # step-major, so that scan and indexing walk the steps
    coeffs = jnp.moveaxis(solver_coefficients(table, jnp), 0, 1) if num_steps > 2 else None  # [n, B, 3]
    per_sample = lambda v: v.reshape((-1,) + (1,) * (x.ndim - 1))

  def call(x_in, sigma):
    out = denoise_fn(x_in, sigma)
    return out if trace else (out, None)

  if num_steps <= 2:
    sigma = sigmas[0]
    x0, aux = call(x, sigma)
    if not trace:
      return x0
    calls = jax.tree.map(lambda v: v[None], {'sigma': sigma, 'x_in': x, 'x0': x0, 'aux': aux})
    return x0, {'calls': calls, 'steps': None}

  def step(carry, inputs):
    x_cur, d_prev = carry
    sigma, coeff = inputs
    d, aux = call(x_cur, sigma)
    a, b, c = (per_sample(coeff[..., k]) for k in range(3))
    x_next = a * x_cur + b * d + c * d_prev
    ys = {'sigma': sigma, 'x_in': x_cur, 'x0': d, 'x_out': x_next, 'aux': aux} if trace else None
    return (x_next, d), ys

  (x_last, _), steps = jax.lax.scan(step, (x, jnp.zeros_like(x)), (sigmas[:-1], coeffs))
  sigma_last = sigmas[-1]
  x0, aux = call(x_last, sigma_last)
  if not trace:
    return x0
  last = jax.tree.map(lambda v: v[None], {'sigma': sigma_last, 'x_in': x_last, 'x0': x0, 'aux': aux})
  calls = jax.tree.map(lambda s, l: jnp.concatenate([s, l]),
                       {k: steps[k] for k in ('sigma', 'x_in', 'x0', 'aux')}, last)
  return x0, {'calls': calls, 'steps': {k: steps[k] for k in ('x_in', 'x0', 'x_out')}}


# Initial noise --------------------------------------------------------------------------------------------------


def parity_noise(seed: int, latent_shape, cfg: SamplerConfig = SamplerConfig()) -> np.ndarray:
  """Initial noise exactly as the official code draws it, channels-last.

  `numpy.random.RandomState(seed).standard_normal` in the official (B, C, T, H, W) order, cast to float32, times
  sigma_max; then transposed to our [B, T, H, W, C]. Drawing directly in channels-last order would give other
  numbers. Host-side numpy (the seed is a Python int), called once per query before the jitted program.
  """
  b, t, h, w, c = latent_shape
  z = np.random.RandomState(seed).standard_normal((b, c, t, h, w)).astype(np.float32)
  return np.ascontiguousarray(np.transpose(z * np.float32(cfg.sigma_max), (0, 2, 3, 4, 1)))


def jax_noise(key: Array, latent_shape, cfg: SamplerConfig = SamplerConfig()) -> Array:
  """Initial noise from a JAX key (traceable; not the official numbers)."""
  return jax.random.normal(key, tuple(latent_shape), jnp.float32) * jnp.float32(cfg.sigma_max)
