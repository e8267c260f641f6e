"""Best-of-N planning, as the official ALOHA server does it (NVlabs/cosmos-policy @18a2acc:
cosmos_policy/experiments/robot/aloha/deploy.py:PolicyServer.get_server_action, with the queries of
cosmos_policy/experiments/robot/cosmos_utils.py:get_action, get_future_state_prediction, get_value_prediction,
get_qvalue_prediction and aggregate_value_predictions).

For candidates q = 0..N-1 (seed base+q), every candidate runs the official per-query procedure:

1. an action sample from the policy model (seed base+q, `action_steps`);
2. with `predict_future`, a future-state sample per entry of `future_steps` from the planning model (the world
   model, seeds base+q+i); one entry at the full step count is the official "ensemble off";
3. a value, by `value_source`:
   * 'parallel': the value slot of the action sample itself (no planning model; official default);
   * 'future_state': V of each future sample (`value_steps` members, seeds base+q+j, restarting for every
     future sample), V(s') when `value_of_future_state` (current state and action withheld, the ALOHA planning
     model) else V(s, a, s');
   * 'q_value': Q(s, a) of the action sample (`value_steps` members), the future state withheld when
     `q_value_mask_future_state`;
   with `value_ensemble` the values are aggregated (`aggregation`); without it the score is the first value
   (the official computes one value per future sample and keeps the first; only that one is computed here).
4. the base candidate (q = 0) is kept unless the best-scoring one (the first among ties) is strictly better.

`PlanningConfig()` holds the official DeployConfig defaults (one candidate, parallel value);
`PlanningConfig.from_deploy_config` maps the official server's option names, and `main_command()` /
`depth3_command()` are the two planning commands of the official deploy script.

Search depth > 1 follows the official loop: for each future sample of the previous depth, the predicted future
state (slots future_state) is copied over the current state, an action is re-sampled with the policy model (the
current proprio slot is re-injected with the *original* proprio, as in the official code), and new future and
value samples are predicted; the score is the last value (`use_last_value`) or the mean over all (`average`).

Noise: with fixed seeds a run with ensemble member index m draws the noise of seed base+q+m (so the action, the
first future and the first value of a candidate share one initial noise, as in the official code). With
`randomize_seed` every sampler run draws its own seed in [0, 256) (official `secrets.randbits(32) % 256`).
`noise_bank` builds these noises (and, with `use_variance_scale`, the per-seed sigma factors) on the host.

`make_planner` compiles all candidates as ONE program: the candidate axis is the batch axis of every denoiser call
(ensemble members with the same sampler schedule are folded into it as well), and with a mesh it is sharded
over the mesh axis, so candidates run in parallel across devices. `plan_serially` runs the same procedure one
candidate at a time through the single-query functions (the reference the batched planner must reproduce).
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.policy import diffusion
from cosmos_jax.policy import inference
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import sampler as sampler_lib

Array = Any

VALUE_SOURCES = ('parallel', 'future_state', 'q_value')
DEPTH_AGGREGATIONS = ('use_last_value', 'average')
RANDOM_SEEDS = 256  # official randomize_seed: secrets.randbits(32) % 256


def ensemble_steps(num_steps: int, size: int) -> tuple[int, ...]:
  """Step counts of an ensemble: `linspace(1, num_steps, size)` truncated to int (official), e.g. (1, 3, 5); an
  ensemble of one is a single 1-step sample."""
  if num_steps < 1 or size < 1:
    raise ValueError(f'ensemble needs num_steps >= 1 and size >= 1, got {num_steps}, {size}')
  return tuple(int(s) for s in np.linspace(1, num_steps, size).astype(int))


def member_steps(num_steps: int, ensemble_size: int | None) -> tuple[int, ...]:
  """Step counts of a query's samples: without an ensemble (None) one sample at the full `num_steps`, else
  `ensemble_steps(num_steps, ensemble_size)`."""
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}')
  return (num_steps,) if ensemble_size is None else ensemble_steps(num_steps, ensemble_size)


# The planning options of the official DeployConfig (aloha/deploy.py) with their defaults. Server options (host,
# image handling, use_parallel_inference / available_gpus, which map to the device mesh) are not planning options.
DEPLOY_DEFAULTS: dict[str, Any] = {
    'num_queries_best_of_n': 1, 'seed': 195, 'randomize_seed': False, 'use_variance_scale': False,
    'num_denoising_steps_action': 10, 'ar_future_prediction': False, 'ar_value_prediction': False,
    'ar_qvalue_prediction': False, 'num_denoising_steps_future_state': 1, 'num_denoising_steps_value': 1,
    'use_ensemble_future_state_predictions': False, 'num_future_state_predictions_in_ensemble': 3,
    'future_state_ensemble_aggregation_scheme': 'average', 'use_ensemble_value_predictions': False,
    'num_value_predictions_in_ensemble': 5, 'value_ensemble_aggregation_scheme': 'average', 'search_depth': 1,
    'search_depth_value_aggregation_scheme': 'use_last_value',
    'mask_current_state_action_for_value_prediction': False, 'mask_future_state_for_qvalue_prediction': False,
}

# The two planning commands in the official deploy script's docstring.
MAIN_PLANNING_COMMAND: dict[str, Any] = {
    'num_queries_best_of_n': 8, 'seed': 195, 'randomize_seed': False, 'num_denoising_steps_action': 10,
    'ar_future_prediction': True, 'ar_value_prediction': True, 'ar_qvalue_prediction': False,
    'num_denoising_steps_future_state': 5, 'num_denoising_steps_value': 5, 'search_depth': 1,
    'value_ensemble_aggregation_scheme': 'majority_mean', 'use_ensemble_value_predictions': True,
    'num_value_predictions_in_ensemble': 5, 'use_ensemble_future_state_predictions': True,
    'num_future_state_predictions_in_ensemble': 3, 'future_state_ensemble_aggregation_scheme': 'average',
    'mask_current_state_action_for_value_prediction': True,
}
DEPTH3_PLANNING_COMMAND: dict[str, Any] = {
    **MAIN_PLANNING_COMMAND, 'search_depth': 3, 'search_depth_value_aggregation_scheme': 'use_last_value',
    'use_ensemble_value_predictions': False, 'num_value_predictions_in_ensemble': 1,
    'value_ensemble_aggregation_scheme': 'average', 'use_ensemble_future_state_predictions': False,
    'num_future_state_predictions_in_ensemble': 1,
}


@dataclasses.dataclass(frozen=True)
class PlanningConfig:
  """Best-of-N settings; the defaults are the official DeployConfig defaults (see the module docstring).

  Attributes:
    num_candidates: N (official num_queries_best_of_n). base_seed: seed of candidate 0 (official seed).
    randomize_seed: a fresh seed in [0, 256) for every sampler run. use_variance_scale: the official random
      sigma_max / sigma_min factors per seed (`sampler.variance_scale`).
    action_steps: sampler steps of the action query (also at depth >= 2).
    predict_future: world-model queries (official ar_future_prediction). future_steps: their step counts, one
      sample per entry (`member_steps`). future_aggregation: the images an ensemble returns ('average' / 'last').
    value_source: 'parallel' | 'future_state' (ar_value_prediction) | 'q_value' (ar_qvalue_prediction).
    value_steps: step counts of the value samples; value_ensemble: aggregate them with `aggregation` (else one
      value, `value_steps` must have one entry).
    value_of_future_state: V(s') input masking (official mask_current_state_action_for_value_prediction, off by
      default; the ALOHA planning model needs it on). q_value_mask_future_state: Q(s, a) input masking
      (mask_future_state_for_qvalue_prediction).
    search_depth, depth_aggregation: the search tree depth and how its per-depth values are scored.
  """

  num_candidates: int = 1
  base_seed: int = 195
  randomize_seed: bool = False
  use_variance_scale: bool = False
  action_steps: int = 10
  predict_future: bool = False
  value_source: str = 'parallel'
  future_steps: tuple[int, ...] = (1,)
  future_aggregation: str = 'average'
  value_steps: tuple[int, ...] = (1,)
  value_ensemble: bool = False
  aggregation: str = 'average'
  value_of_future_state: bool = False
  q_value_mask_future_state: bool = False
  search_depth: int = 1
  depth_aggregation: str = 'use_last_value'
  sampler: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig()

  def __post_init__(self):
    object.__setattr__(self, 'future_steps', tuple(int(s) for s in self.future_steps))
    object.__setattr__(self, 'value_steps', tuple(int(s) for s in self.value_steps))
    if self.num_candidates < 1:
      raise ValueError(f'num_candidates must be >= 1, got {self.num_candidates}')
    if not 0 <= self.base_seed < 2 ** 32 - self.num_candidates - 64:
      raise ValueError(f'base_seed must be in [0, 2**32) with room for the candidates\' seeds, got {self.base_seed}')
    if not self.future_steps or not self.value_steps:
      raise ValueError('future_steps and value_steps need at least one entry each')
    if min((self.action_steps,) + self.future_steps + self.value_steps) < 1:
      raise ValueError('every step count must be >= 1')
    for name, value, allowed in (('value_source', self.value_source, VALUE_SOURCES),
                                 ('aggregation', self.aggregation, inference.AGGREGATIONS),
                                 ('future_aggregation', self.future_aggregation, inference.FUTURE_AGGREGATIONS),
                                 ('depth_aggregation', self.depth_aggregation, DEPTH_AGGREGATIONS)):
      if value not in allowed:
        raise ValueError(f'{name} {value!r} is not one of {allowed}')
    if self.search_depth < 1:
      raise ValueError(f'search_depth must be >= 1, got {self.search_depth}')
    # Combinations the official server cannot run, or options that would have no effect, are refused.
    if self.value_source == 'future_state' and not self.predict_future:
      raise ValueError("value_source 'future_state' needs predict_future (the official ar_value_prediction without "
                       'ar_future_prediction has no future state to score)')
    if self.predict_future and self.value_source == 'parallel':
      raise ValueError("predict_future needs a value query (value_source 'future_state' or 'q_value'): the official "
                       'server has no parallel value once future prediction is on')
    if not self.predict_future and len(self.future_steps) != 1:
      raise ValueError(f'future_steps {self.future_steps} has several members but predict_future is off')
    if self.value_source == 'parallel' and (self.value_ensemble or len(self.value_steps) != 1):
      raise ValueError("a value ensemble (value_ensemble, several value_steps) needs value_source 'future_state' or "
                       "'q_value'")
    if not self.value_ensemble and len(self.value_steps) != 1:
      raise ValueError(f'value_steps {self.value_steps} has several members but value_ensemble is off (turn it on '
                       'to aggregate them)')
    if self.value_of_future_state and self.value_source != 'future_state':
      raise ValueError("value_of_future_state (V(s') masking) applies to value_source 'future_state' only")
    if self.q_value_mask_future_state and self.value_source != 'q_value':
      raise ValueError("q_value_mask_future_state applies to value_source 'q_value' only")
    if self.search_depth > 1 and self.value_source != 'future_state':
      raise ValueError("search_depth > 1 needs value_source 'future_state' (the official search refuses Q(s, a) "
                       'and needs predicted future states)')

  # Official option names ------------------------------------------------------------------------------------------

  @classmethod
  def from_deploy_config(cls, fields: Mapping[str, Any], *,
                         sampler: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig()) -> 'PlanningConfig':
    """From the official DeployConfig planning fields (names as in aloha/deploy.py; missing ones take the
    official defaults). Unknown names, and options the official server would ignore or fail on, are refused."""
    unknown = sorted(set(fields) - set(DEPLOY_DEFAULTS))
    if unknown:
      raise ValueError(f'unknown planning options {unknown}; the official planning options are '
                       f'{sorted(DEPLOY_DEFAULTS)}')
    d = {**DEPLOY_DEFAULTS, **fields}
    if d['ar_value_prediction'] and d['ar_qvalue_prediction']:
      raise ValueError('ar_value_prediction and ar_qvalue_prediction are both on (the official server would silently '
                       'ignore ar_qvalue_prediction); turn one off')
    value_source = ('future_state' if d['ar_value_prediction'] else
                    'q_value' if d['ar_qvalue_prediction'] else 'parallel')
    if d['use_ensemble_future_state_predictions'] and not d['ar_future_prediction']:
      raise ValueError('use_ensemble_future_state_predictions needs ar_future_prediction')
    if d['use_ensemble_value_predictions'] and value_source == 'parallel':
      raise ValueError('use_ensemble_value_predictions needs ar_value_prediction or ar_qvalue_prediction')
    future_aggregation = str(d['future_state_ensemble_aggregation_scheme']).lower()
    future_steps = (1,)
    if d['ar_future_prediction']:
      future_steps = member_steps(d['num_denoising_steps_future_state'],
                                  d['num_future_state_predictions_in_ensemble']
                                  if d['use_ensemble_future_state_predictions'] else None)
    value_steps = (1,)
    if value_source != 'parallel':
      value_steps = member_steps(d['num_denoising_steps_value'], d['num_value_predictions_in_ensemble']
                                 if d['use_ensemble_value_predictions'] else None)
    return cls(num_candidates=max(1, int(d['num_queries_best_of_n'])), base_seed=int(d['seed']),
               randomize_seed=bool(d['randomize_seed']), use_variance_scale=bool(d['use_variance_scale']),
               action_steps=int(d['num_denoising_steps_action']), predict_future=bool(d['ar_future_prediction']),
               value_source=value_source, future_steps=future_steps, future_aggregation=future_aggregation,
               value_steps=value_steps, value_ensemble=bool(d['use_ensemble_value_predictions']),
               aggregation=d['value_ensemble_aggregation_scheme'],
               value_of_future_state=bool(d['mask_current_state_action_for_value_prediction']),
               q_value_mask_future_state=bool(d['mask_future_state_for_qvalue_prediction']),
               search_depth=int(d['search_depth']), depth_aggregation=d['search_depth_value_aggregation_scheme'],
               sampler=sampler)

  @classmethod
  def main_command(cls, **overrides) -> 'PlanningConfig':
    """The main ALOHA planning command: N = 8, steps 10 / 5 / 5, future ensemble 3 (average), value ensemble 5
    (majority_mean), V(s') masking, depth 1. `overrides` replace fields of the result."""
    return dataclasses.replace(cls.from_deploy_config(MAIN_PLANNING_COMMAND), **overrides)

  @classmethod
  def depth3_command(cls, **overrides) -> 'PlanningConfig':
    """The official depth-3 planning command: as `main_command` without ensembles (one 5-step future sample and
    one 5-step value), search depth 3, use_last_value."""
    return dataclasses.replace(cls.from_deploy_config(DEPTH3_PLANNING_COMMAND), **overrides)

  # Counts ---------------------------------------------------------------------------------------------------------

  @property
  def num_future_samples(self) -> int:
    return len(self.future_steps) if self.predict_future else 0

  @property
  def depth_entries(self) -> int:
    """Entries of values_by_depth: depth 1, then one per future sample of the previous depth."""
    return 1 + (self.search_depth - 1) * max(self.num_future_samples, 1)

  def _value_runs(self) -> list[int]:
    """Step counts of the value sampler runs of one depth entry."""
    if self.value_source == 'future_state':
      scored = self.num_future_samples if self.value_ensemble else 1
      return list(self.value_steps) * scored
    return list(self.value_steps) if self.value_source == 'q_value' else []

  def _runs_per_entry(self) -> list[int]:
    future = list(self.future_steps) if self.predict_future else []
    return [self.action_steps] + future + self._value_runs()

  def queries_per_candidate(self) -> int:
    """Sampler runs per candidate."""
    return len(self._runs_per_entry()) * self.depth_entries

  def dit_passes_per_candidate(self) -> int:
    """Denoiser (DiT) passes per candidate; 61 for the main ALOHA command (10 + 9 + 3 * 14), 60 for the depth-3
    command (3 * (10 + 5 + 5))."""
    return sum(sampler_lib.num_calls(s) for s in self._runs_per_entry()) * self.depth_entries

  @property
  def noise_slots(self) -> int:
    """Noises per candidate in the bank: the largest member index + 1 with fixed seeds, one per sampler run with
    randomize_seed."""
    if self.randomize_seed:
      return self.queries_per_candidate()
    sizes = [1, self.num_future_samples]
    if self.value_source != 'parallel':
      sizes.append(len(self.value_steps))
    return max(sizes)


# Noise ------------------------------------------------------------------------------------------------------------


def draw_seeds(cfg: PlanningConfig, rng: np.random.Generator | None = None) -> np.ndarray:
  """[N, M] int64 seeds of the bank: base+q+m, or with randomize_seed uniform in [0, 256) (from `rng`, else
  `secrets` as the official)."""
  shape = (cfg.num_candidates, cfg.noise_slots)
  if not cfg.randomize_seed:
    return cfg.base_seed + np.arange(shape[0])[:, None] + np.arange(shape[1])[None, :]
  if rng is not None:
    return rng.integers(0, RANDOM_SEEDS, size=shape).astype(np.int64)
  return np.asarray([[secrets.randbits(32) % RANDOM_SEEDS for _ in range(shape[1])] for _ in range(shape[0])],
                    np.int64)


def noise_bank(cfg: PlanningConfig, latent_shape, key: Array | None = None,
               rng: np.random.Generator | None = None) -> dict:
  """The initial noises of one planning query (draw a new bank per request when cfg.randomize_seed).

  Returns:
    {'noise': [N, M, T, H, W, C] (entry (q, m) is the official noise of seeds[q, m] times sigma_max, or with a
    key `jax.random.fold_in(key, seed)` normal noise), 'seeds': [N, M] int64, and with use_variance_scale
    'sigma_scale': [N, M, 2] float32 (`sampler.variance_scale` of each seed)}. `latent_shape` is one candidate's
    [1, T, H, W, C].
  """
  if latent_shape[0] != 1:
    raise ValueError(f'noise_bank takes one candidate\'s latent shape [1, T, H, W, C], got {tuple(latent_shape)}')
  seeds = draw_seeds(cfg, rng)
  if key is None:
    noise = np.stack([np.stack([sampler_lib.parity_noise(int(s), latent_shape, cfg.sampler)[0] for s in row])
                      for row in seeds])
  else:
    draw = lambda s: sampler_lib.jax_noise(jax.random.fold_in(key, s), latent_shape[1:], cfg.sampler)
    noise = jax.vmap(draw)(jnp.asarray(seeds.reshape(-1), jnp.uint32)).reshape(seeds.shape + tuple(latent_shape[1:]))
  bank = {'noise': noise, 'seeds': seeds}
  if cfg.use_variance_scale:
    bank['sigma_scale'] = np.asarray([[sampler_lib.variance_scale(int(s)) for s in row] for row in seeds],
                                     np.float32)
  return bank


class _NoiseSlots:
  """Hands out bank entries in call order: the member index m with fixed seeds, a fresh entry per run with
  randomize_seed (so the batched and serial procedures draw identically)."""

  def __init__(self, cfg: PlanningConfig):
    self.randomize = cfg.randomize_seed
    self.used = 0

  def take(self, member: int) -> int:
    if not self.randomize:
      return member
    self.used += 1
    return self.used - 1


def _check_bank(cfg: PlanningConfig, bank: Mapping[str, Array], latent_shape) -> tuple[Array, Array | None]:
  noise = bank['noise']
  if noise.shape[0] != cfg.num_candidates or noise.shape[1] < cfg.noise_slots or noise.shape[2:] != latent_shape[1:]:
    raise ValueError(f'noise must be [N={cfg.num_candidates}, M>={cfg.noise_slots}, {tuple(latent_shape[1:])}], got '
                     f'{tuple(noise.shape)}')
  if not cfg.use_variance_scale:
    return noise, None
  scale = bank.get('sigma_scale')
  if scale is None or scale.shape != noise.shape[:2] + (2,):
    raise ValueError(f'use_variance_scale needs bank["sigma_scale"] of shape {noise.shape[:2] + (2,)} (noise_bank '
                     f'builds it), got {None if scale is None else tuple(scale.shape)}')
  return noise, scale


# Building blocks --------------------------------------------------------------------------------------------------


def _schedule_key(num_steps: int) -> int:
  """Requests with the same sampler program: N <= 2 is one call at sigma_max, whatever N."""
  return 1 if num_steps <= 2 else num_steps


def _run_members(fn: Callable, members: list[tuple[Array, int, int]], proprio: Array, context: Array,
                 noise: Array, sigma_scale: Array | None) -> list[Array]:
  """Runs `fn(source, proprio, context, noise, sigma_scale, num_steps)` for every member (source [N, ...], bank
  slot, steps), folding members with the same sampler program into the batch axis (candidate-major, so a sharded
  candidate axis stays local). Returns one output [N, ...] per member."""
  n = proprio.shape[0]
  outputs: list[Array | None] = [None] * len(members)
  groups: dict[int, list[int]] = {}
  for idx, (_, _, steps) in enumerate(members):
    groups.setdefault(_schedule_key(steps), []).append(idx)
  for steps, idxs in groups.items():
    g = len(idxs)
    fold = lambda xs: jnp.stack(xs, axis=1).reshape((n * g,) + xs[0].shape[1:])
    source = fold([members[i][0] for i in idxs])
    member_noise = fold([noise[:, members[i][1]] for i in idxs])
    member_scale = None if sigma_scale is None else fold([sigma_scale[:, members[i][1]] for i in idxs])
    out = fn(source, jnp.repeat(proprio, g, axis=0), jnp.repeat(context, g, axis=0), member_noise, member_scale,
             steps)
    out = out.reshape((n, g) + out.shape[1:])
    for k, i in enumerate(idxs):
      outputs[i] = out[:, k]
  return outputs


def copy_future_to_current(latent: Array, layout: layout_lib.SlotLayout) -> Array:
  """Depth >= 2: the predicted future state (proprio + images) replaces the current state."""
  return latent.at[:, np.asarray(layout.current_state_slots)].set(latent[:, np.asarray(layout.future_state_slots)])


def aggregate_depth(values_by_depth: Array, scheme: str) -> Array:
  """Score of each candidate from its per-depth values [..., E] (official search_depth_value_aggregation_scheme)."""
  if scheme == 'use_last_value':
    return jnp.asarray(values_by_depth)[..., -1]
  if scheme == 'average':
    return jnp.mean(jnp.asarray(values_by_depth), axis=-1)
  raise ValueError(f'unknown depth aggregation {scheme!r}; expected one of {DEPTH_AGGREGATIONS}')


def select(scores: Array) -> Array:
  """Index of the chosen candidate (official best-of-N rule): the first best candidate if strictly better than
  candidate 0, else 0. As the official Python max(): NaN scores are never better, and a NaN base is kept."""
  scores = jnp.asarray(scores)
  finite = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
  best = jnp.argmax(finite)
  return jnp.where(finite[best] > scores[0], best, 0).astype(jnp.int32)


def score_action_samples(planning_net: diffusion.NetFn, planning_params, context: Array, action_sample: Array,
                         action_value: Array, proprio: Array, noise: Array, sigma_scale: Array | None = None, *,
                         layout: layout_lib.SlotLayout, cfg: PlanningConfig, slots: _NoiseSlots | None = None,
                         constrain: Callable[[Array], Array] = lambda x: x) -> dict:
  """Steps 2 and 3 of the procedure for N candidates' action samples (all inputs candidate-major [N, ...]; noise
  [N, M, ...] and sigma_scale [N, M, 2] from `noise_bank`).

  Returns:
    futures (list of K future samples [N, ...]), values [N, n] (raw value samples, future-major) and score [N].
  """
  slots = slots or _NoiseSlots(cfg)
  common = dict(layout=layout, sampler_cfg=cfg.sampler)

  def world(source, prop, ctx, z, scale, steps):
    return inference.world_model_query(planning_net, planning_params, ctx, source, prop, z, num_steps=steps,
                                       sigma_scale=scale, **common)

  def value(source, prop, ctx, z, scale, steps):
    return inference.value_query(planning_net, planning_params, ctx, source, prop, z, num_steps=steps,
                                 value_of_future_state=cfg.value_of_future_state, sigma_scale=scale, **common)

  def q_value(source, prop, ctx, z, scale, steps):
    return inference.q_value_query(planning_net, planning_params, ctx, source, prop, z, num_steps=steps,
                                   mask_future_state=cfg.q_value_mask_future_state, sigma_scale=scale, **common)

  run = lambda fn, members: _run_members(fn, members, proprio, context, noise, sigma_scale)
  futures = []
  if cfg.predict_future:
    futures = run(world, [(action_sample, slots.take(i), s) for i, s in enumerate(cfg.future_steps)])
  if cfg.value_source == 'future_state':
    scored = futures if cfg.value_ensemble else futures[:1]
    values = jnp.stack(run(value, [(f, slots.take(j), s) for f in scored for j, s in enumerate(cfg.value_steps)]),
                       axis=1)
  elif cfg.value_source == 'q_value':
    values = jnp.stack(run(q_value, [(action_sample, slots.take(j), s) for j, s in enumerate(cfg.value_steps)]),
                       axis=1)
  else:
    values = action_value[:, None]
  values = constrain(values)
  score = inference.aggregate_values(values, cfg.aggregation) if cfg.value_ensemble else values[:, 0]
  return {'futures': futures, 'values': values, 'score': score}


# The planner ------------------------------------------------------------------------------------------------------


def plan(policy_net: diffusion.NetFn, policy_params, planning_net: diffusion.NetFn, planning_params,
         context: Array, latent: Array, proprio: Array, bank: Mapping[str, Array], *, layout: layout_lib.SlotLayout,
         cfg: PlanningConfig, constrain: Callable[[Array], Array] = lambda x: x) -> dict:
  """All candidates of one planning query, batched (jit with `make_planner`).

  Args:
    policy_net / policy_params: the policy model (actions). planning_net / planning_params: the model for future
      states and values (pass the policy's to use one model).
    context: text embedding [1, tokens, D]; latent: VAE latent [1, T, H, W, C] of the inference sequence (before
      injection); proprio: normalised current proprio [1, P]; bank: `noise_bank` (its 'noise', and 'sigma_scale'
      with use_variance_scale).
    constrain: applied to every candidate-major array (a sharding constraint when a mesh is used).

  Returns:
    chosen (int32), scores [N], values [N, n] (depth-1 raw values), actions [N, chunk, D] (normalised),
    chosen_actions [chunk, D], action_samples, action_values [N] (the policy's parallel value), values_by_depth /
    actions_by_depth [N, E, ...]; with predict_future also future_samples [N, K, ...] (depth 1) and
    future_samples_by_depth [N, E, K, ...].
  """
  layout_lib.check_latent(layout, latent.shape)
  if latent.shape[0] != 1 or proprio.shape[0] != 1 or context.shape[0] != 1:
    raise ValueError('plan takes one observation: latent, proprio and context must have batch 1, got '
                     f'{latent.shape[0]}, {proprio.shape[0]}, {context.shape[0]}')
  noise, sigma_scale = _check_bank(cfg, bank, latent.shape)
  n = cfg.num_candidates
  tile = lambda x: constrain(jnp.broadcast_to(x, (n,) + x.shape[1:]))
  latent, proprio, context, noise = tile(latent), tile(proprio), tile(context), constrain(noise)
  sigma_scale = None if sigma_scale is None else constrain(sigma_scale)
  slots = _NoiseSlots(cfg)

  def act(source):
    slot = slots.take(0)
    return inference.action_query(policy_net, policy_params, context, source, proprio, noise[:, slot],
                                  layout=layout, num_steps=cfg.action_steps, sampler_cfg=cfg.sampler,
                                  sigma_scale=None if sigma_scale is None else sigma_scale[:, slot])

  evaluate = functools.partial(score_action_samples, planning_net, planning_params, context, proprio=proprio,
                               noise=noise, sigma_scale=sigma_scale, layout=layout, cfg=cfg, slots=slots,
                               constrain=constrain)
  first = act(latent)
  scored = evaluate(action_sample=first['sample'], action_value=first['value'])
  values_by_depth, actions_by_depth, futures_by_depth = [scored['score']], [first['actions']], [scored['futures']]
  depth_futures = scored['futures']
  for _ in range(2, cfg.search_depth + 1):
    next_futures = depth_futures
    for future in depth_futures:
      resampled = act(copy_future_to_current(future, layout))
      deeper = evaluate(action_sample=resampled['sample'], action_value=resampled['value'])
      actions_by_depth.append(resampled['actions'])
      values_by_depth.append(deeper['score'])
      futures_by_depth.append(deeper['futures'])
      next_futures = deeper['futures']
    depth_futures = next_futures
  stacked = jnp.stack(values_by_depth, axis=1)
  score = aggregate_depth(stacked, cfg.depth_aggregation) if cfg.search_depth > 1 else stacked[:, 0]
  chosen = select(score)
  out = {'chosen': chosen, 'scores': constrain(score), 'values': scored['values'],
         'actions': constrain(first['actions']), 'chosen_actions': first['actions'][chosen],
         'action_samples': constrain(first['sample']), 'action_values': constrain(first['value']),
         'values_by_depth': constrain(stacked), 'actions_by_depth': constrain(jnp.stack(actions_by_depth, axis=1))}
  if cfg.predict_future:
    out['future_samples'] = constrain(jnp.stack(scored['futures'], axis=1))
    out['future_samples_by_depth'] = constrain(jnp.stack([jnp.stack(f, axis=1) for f in futures_by_depth], axis=1))
  return out


def candidate_mesh(num_candidates: int, devices: int = 0, axis: str = 'data') -> jax.sharding.Mesh | None:
  """The mesh that spreads N candidates over the local devices (official use_parallel_inference: one query per
  GPU): the largest device count <= `devices` (0: all local devices) that divides N; None when that is 1."""
  local = jax.local_devices()
  if not 0 <= devices <= len(local):
    raise ValueError(f'devices must be in [0, {len(local)}] (0: all local devices), got {devices}')
  usable = devices or len(local)
  count = max(d for d in range(1, usable + 1) if num_candidates % d == 0)
  return None if count == 1 else jax.sharding.Mesh(np.array(local[:count]), (axis,))


def make_planner(policy_net: diffusion.NetFn, planning_net: diffusion.NetFn, layout: layout_lib.SlotLayout,
                 cfg: PlanningConfig, mesh: jax.sharding.Mesh | None = None, axis: str = 'data') -> Callable:
  """`planner(policy_params, planning_params, context, latent, proprio, bank) -> plan(...)` compiled once.

  With a mesh, every candidate-major array (noise, per-candidate latents, outputs) is sharded along `axis` over
  the candidate axis, so each device runs num_candidates / devices candidates; parameters are replicated.
  """
  constrain = lambda x: x
  if mesh is not None:
    if cfg.num_candidates % mesh.shape[axis]:
      raise ValueError(f'num_candidates {cfg.num_candidates} is not divisible by the {mesh.shape[axis]} devices of '
                       f'mesh axis {axis!r}')
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    constrain = lambda x: jax.lax.with_sharding_constraint(x, spec)
  fn = functools.partial(plan, policy_net, planning_net=planning_net, layout=layout, cfg=cfg, constrain=constrain)
  compiled = jax.jit(lambda pp, qp, ctx, lat, prop, z, scale: fn(
      pp, planning_params=qp, context=ctx, latent=lat, proprio=prop, bank={'noise': z, 'sigma_scale': scale}))

  def planner(policy_params, planning_params, context, latent, proprio, bank):
    # The bank's host-side seeds stay out of the program.
    return compiled(policy_params, planning_params, context, latent, proprio, bank['noise'],
                    bank.get('sigma_scale') if cfg.use_variance_scale else None)

  return planner


def plan_serially(policy_net: diffusion.NetFn, policy_params, planning_net: diffusion.NetFn, planning_params,
                  context: Array, latent: Array, proprio: Array, bank: Mapping[str, Array], *,
                  layout: layout_lib.SlotLayout, cfg: PlanningConfig) -> dict:
  """The same procedure one candidate at a time through the jitted single-query functions (the official serial
  loop). Returns the same keys as `plan` for chosen, scores, values, actions, values_by_depth."""
  noise, sigma_scale = _check_bank(cfg, bank, latent.shape)
  common = dict(layout=layout, sampler_cfg=cfg.sampler)
  scores, all_values, all_actions, all_by_depth = [], [], [], []
  for q in range(cfg.num_candidates):
    slots = _NoiseSlots(cfg)

    def draw(member):
      slot = slots.take(member)
      return noise[q, slot][None], None if sigma_scale is None else sigma_scale[q, slot][None]

    def act(source):
      z, scale = draw(0)
      return inference.jit_action_query(policy_net, policy_params, context, source, proprio, z,
                                        num_steps=cfg.action_steps, sigma_scale=scale, **common)

    def evaluate(action_sample, action_value):
      futures = []
      if cfg.predict_future:
        for i, s in enumerate(cfg.future_steps):
          z, scale = draw(i)
          futures.append(inference.jit_world_model_query(planning_net, planning_params, context, action_sample,
                                                         proprio, z, num_steps=s, sigma_scale=scale, **common))
      values = []
      if cfg.value_source == 'future_state':
        for f in (futures if cfg.value_ensemble else futures[:1]):
          for j, s in enumerate(cfg.value_steps):
            z, scale = draw(j)
            values.append(inference.jit_value_query(planning_net, planning_params, context, f, proprio, z,
                                                    num_steps=s, value_of_future_state=cfg.value_of_future_state,
                                                    sigma_scale=scale, **common)[0])
      elif cfg.value_source == 'q_value':
        for j, s in enumerate(cfg.value_steps):
          z, scale = draw(j)
          values.append(inference.jit_q_value_query(planning_net, planning_params, context, action_sample, proprio,
                                                    z, num_steps=s, mask_future_state=cfg.q_value_mask_future_state,
                                                    sigma_scale=scale, **common)[0])
      else:
        values.append(action_value[0])
      values = jnp.stack(values)
      return futures, values, (inference.aggregate_values(values, cfg.aggregation) if cfg.value_ensemble
                               else values[0])

    first = act(latent)
    futures, values, score = evaluate(first['sample'], first['value'])
    by_depth = [score]
    for _ in range(2, cfg.search_depth + 1):
      next_futures = futures
      for future in futures:
        resampled = act(copy_future_to_current(future, layout))
        next_futures, _, deeper = evaluate(resampled['sample'], resampled['value'])
        by_depth.append(deeper)
      futures = next_futures
    by_depth = jnp.stack(by_depth)
    scores.append(aggregate_depth(by_depth, cfg.depth_aggregation) if cfg.search_depth > 1 else by_depth[0])
    all_values.append(values)
    all_actions.append(first['actions'][0])
    all_by_depth.append(by_depth)
  scores = jnp.stack(scores)
  return {'chosen': select(scores), 'scores': scores, 'values': jnp.stack(all_values),
          'actions': jnp.stack(all_actions), 'values_by_depth': jnp.stack(all_by_depth)}
