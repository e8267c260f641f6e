"""Best-of-N planning (policy_spec section 10; official aloha/deploy.py).

For candidates q = 0..N-1 (seed base+q): actions from the policy model; a future-state ensemble from the planning
model (one sample per entry of `future_steps`, seeds base+q+i); for every future sample a value ensemble (one sample
per entry of `value_steps`, seeds base+q+j), all K*V values aggregated (`majority_mean` for ALOHA). The base
candidate (q = 0) is kept unless the best-scoring one (the first among ties) is strictly better.

`make_planner` compiles all candidates as ONE program: the candidate axis is the batch axis of every denoiser call
(ensemble members with the same sampler schedule are folded into it as well), and with a mesh it is sharded
over the mesh axis, so candidates run in parallel across devices. `plan_serially` runs the same procedure one
candidate at a time through the single-query functions (the reference the batched planner must reproduce).

Search depth > 1 follows the official loop: for each future sample of the previous depth, the predicted future
state (slots future_state) is copied over the current state, an action is re-sampled with the policy model (the
current proprio slot is re-injected with the *original* proprio, as in the official code), and a new future
ensemble and value ensemble are predicted; the score is the last value (`use_last_value`) or the mean over all.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.policy import diffusion
from cosmos_jax.policy import inference
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import sampler as sampler_lib

Array = Any

DEPTH_AGGREGATIONS = ('use_last_value', 'average')


def ensemble_steps(num_steps: int, size: int) -> tuple[int, ...]:
  """Step counts of an ensemble: `linspace(1, num_steps, size)` cast to int (official), e.g. (1, 3, 5)."""
  return tuple(int(s) for s in np.linspace(1, num_steps, size).astype(int))


@dataclasses.dataclass(frozen=True)
class PlanningConfig:
  """Defaults: the main ALOHA planning command (N = 8, steps 10 / 5 / 5, ensembles 3 and 5, majority_mean,
  V(s') value masking, depth 1, seed 195)."""

  num_candidates: int = 8
  base_seed: int = 195
  action_steps: int = 10
  future_steps: tuple[int, ...] = ensemble_steps(5, 3)
  value_steps: tuple[int, ...] = ensemble_steps(5, 5)
  aggregation: str = 'majority_mean'
  value_of_future_state: bool = True
  search_depth: int = 1
  depth_aggregation: str = 'use_last_value'
  sampler: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig()

  def __post_init__(self):
    if self.num_candidates < 1:
      raise ValueError(f'num_candidates must be >= 1, got {self.num_candidates}')
    if not self.future_steps or not self.value_steps:
      raise ValueError('future_steps and value_steps need at least one entry each')
    if min((self.action_steps,) + self.future_steps + self.value_steps) < 1:
      raise ValueError('every step count must be >= 1')
    if self.aggregation not in inference.AGGREGATIONS:
      raise ValueError(f'aggregation {self.aggregation!r} is not one of {inference.AGGREGATIONS}')
    if self.search_depth < 1:
      raise ValueError(f'search_depth must be >= 1, got {self.search_depth}')
    if self.depth_aggregation not in DEPTH_AGGREGATIONS:
      raise ValueError(f'depth_aggregation {self.depth_aggregation!r} is not one of {DEPTH_AGGREGATIONS}')

  @property
  def noise_offsets(self) -> int:
    """Distinct seeds per candidate: base+q+m for m < max(K, V)."""
    return max(len(self.future_steps), len(self.value_steps))

  def dit_passes_per_candidate(self) -> int:
    """Denoiser (DiT) passes per candidate; 61 for the main ALOHA setting (10 + 9 + 3 * 14)."""
    calls = sampler_lib.num_calls
    one_depth = (calls(self.action_steps) + sum(calls(s) for s in self.future_steps) +
                 len(self.future_steps) * sum(calls(s) for s in self.value_steps))
    # Depth d >= 2 repeats the whole step once per future sample of the previous depth.
    return one_depth * (1 + (self.search_depth - 1) * len(self.future_steps))


def noise_bank(cfg: PlanningConfig, latent_shape, key: Array | None = None) -> np.ndarray | Array:
  """[N, M, T, H, W, C] initial noises: entry (q, m) is the noise of seed base+q+m (the official draws; or, with a
  key, `jax.random.fold_in(key, base+q+m)` normal noise). `latent_shape` is one candidate's [1, T, H, W, C]."""
  if latent_shape[0] != 1:
    raise ValueError(f'noise_bank takes one candidate\'s latent shape [1, T, H, W, C], got {tuple(latent_shape)}')
  seeds = [[cfg.base_seed + q + m for m in range(cfg.noise_offsets)] for q in range(cfg.num_candidates)]
  if key is None:
    return np.stack([np.stack([sampler_lib.parity_noise(s, latent_shape, cfg.sampler)[0] for s in row])
                     for row in seeds])
  flat = jnp.asarray(seeds).reshape(-1)
  draw = lambda s: sampler_lib.jax_noise(jax.random.fold_in(key, s), latent_shape[1:], cfg.sampler)
  return jax.vmap(draw)(flat).reshape((cfg.num_candidates, cfg.noise_offsets) + tuple(latent_shape[1:]))


def _schedule_key(num_steps: int) -> int:
  """Requests with the same sampler program: N <= 2 is one call at sigma_max, whatever N."""
  return 1 if num_steps <= 2 else num_steps


def _run_members(fn: Callable, members: list[tuple[Array, int, int]], proprio: Array, context: Array,
                 noise: Array) -> list[Array]:
  """Runs `fn(source, proprio, context, noise, num_steps)` for every member (source [N, ...], noise offset m,
  steps), folding members with the same sampler program into the batch axis (candidate-major, so a sharded
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
    out = fn(source, jnp.repeat(proprio, g, axis=0), jnp.repeat(context, g, axis=0), member_noise, steps)
    out = out.reshape((n, g) + out.shape[1:])
    for k, i in enumerate(idxs):
      outputs[i] = out[:, k]
  return outputs


def copy_future_to_current(latent: Array, layout: layout_lib.SlotLayout) -> Array:
  """Depth >= 2: the predicted future state (proprio + images) replaces the current state."""
  return latent.at[:, np.asarray(layout.current_state_slots)].set(latent[:, np.asarray(layout.future_state_slots)])


def select(scores: Array) -> Array:
  """Index of the chosen candidate: the first best one if strictly better than candidate 0, else 0."""
  best = jnp.argmax(scores)
  return jnp.where(scores[best] > scores[0], best, 0).astype(jnp.int32)


def plan(policy_net: diffusion.NetFn, policy_params, planning_net: diffusion.NetFn, planning_params,
         context: Array, latent: Array, proprio: Array, noise: Array, *, layout: layout_lib.SlotLayout,
         cfg: PlanningConfig, constrain: Callable[[Array], Array] = lambda x: x) -> dict:
  """All candidates of one planning query, batched (jit with `make_planner`).

  Args:
    policy_net / policy_params: the policy model (actions). planning_net / planning_params: the model for future
      states and values (pass the policy's to use one model).
    context: text embedding [1, tokens, D]; latent: VAE latent [1, T, H, W, C] of the inference sequence (before
      injection); proprio: normalised current proprio [1, P]; noise: `noise_bank` [N, M, T, H, W, C].
    constrain: applied to every candidate-major array (a sharding constraint when a mesh is used).

  Returns:
    chosen (int32), scores [N], values [N, K*V] (depth-1 ensemble, future-major), actions [N, chunk, D]
    (normalised), chosen_actions [chunk, D], action_samples / future_samples (latents), values_by_depth.
  """
  n = noise.shape[0]
  layout_lib.check_latent(layout, latent.shape)
  if latent.shape[0] != 1 or proprio.shape[0] != 1 or context.shape[0] != 1:
    raise ValueError('plan takes one observation: latent, proprio and context must have batch 1, got '
                     f'{latent.shape[0]}, {proprio.shape[0]}, {context.shape[0]}')
  if noise.shape[0] != cfg.num_candidates or noise.shape[1] < cfg.noise_offsets or noise.shape[2:] != latent.shape[1:]:
    raise ValueError(f'noise must be [N={cfg.num_candidates}, M>={cfg.noise_offsets}, {latent.shape[1:]}], got '
                     f'{tuple(noise.shape)}')
  tile = lambda x: constrain(jnp.broadcast_to(x, (n,) + x.shape[1:]))
  latent, proprio, context, noise = tile(latent), tile(proprio), tile(context), constrain(noise)
  sampler_cfg = cfg.sampler

  def act(source, prop, ctx, z, steps):
    return inference.action_query(policy_net, policy_params, ctx, source, prop, z, layout=layout, num_steps=steps,
                                  sampler_cfg=sampler_cfg)

  def world(source, prop, ctx, z, steps):
    return inference.world_model_query(planning_net, planning_params, ctx, source, prop, z, layout=layout,
                                       num_steps=steps, sampler_cfg=sampler_cfg)

  def value(source, prop, ctx, z, steps):
    return inference.value_query(planning_net, planning_params, ctx, source, prop, z, layout=layout, num_steps=steps,
                                 value_of_future_state=cfg.value_of_future_state, sampler_cfg=sampler_cfg)

  def futures_and_values(action_sample):
    futures = _run_members(world, [(action_sample, i, s) for i, s in enumerate(cfg.future_steps)],
                           proprio, context, noise)
    members = [(f, j, s) for f in futures for j, s in enumerate(cfg.value_steps)]
    values = jnp.stack(_run_members(value, members, proprio, context, noise), axis=1)  # [N, K*V]
    return futures, constrain(values)

  first = act(latent, proprio, context, noise[:, 0], cfg.action_steps)
  futures, values = futures_and_values(first['sample'])
  score = inference.aggregate_values(values, cfg.aggregation)
  values_by_depth, actions_by_depth = [score], [first['actions']]
  depth_futures = futures
  for _ in range(2, cfg.search_depth + 1):
    next_futures = depth_futures
    for future in depth_futures:
      resampled = act(copy_future_to_current(future, layout), proprio, context, noise[:, 0], cfg.action_steps)
      actions_by_depth.append(resampled['actions'])
      next_futures, next_values = futures_and_values(resampled['sample'])
      values_by_depth.append(inference.aggregate_values(next_values, cfg.aggregation))
    depth_futures = next_futures
  stacked = jnp.stack(values_by_depth, axis=1)
  if cfg.search_depth > 1:
    score = stacked[:, -1] if cfg.depth_aggregation == 'use_last_value' else stacked.mean(axis=1)
  chosen = select(score)
  return {'chosen': chosen, 'scores': constrain(score), 'values': values, 'actions': constrain(first['actions']),
          'chosen_actions': first['actions'][chosen], 'action_samples': constrain(first['sample']),
          'future_samples': constrain(jnp.stack(futures, axis=1)), 'values_by_depth': constrain(stacked),
          'actions_by_depth': constrain(jnp.stack(actions_by_depth, axis=1))}


def make_planner(policy_net: diffusion.NetFn, planning_net: diffusion.NetFn, layout: layout_lib.SlotLayout,
                 cfg: PlanningConfig, mesh: jax.sharding.Mesh | None = None, axis: str = 'data') -> Callable:
  """`planner(policy_params, planning_params, context, latent, proprio, noise) -> plan(...)` compiled once.

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
  return jax.jit(lambda pp, qp, ctx, lat, prop, z: fn(pp, planning_params=qp, context=ctx, latent=lat, proprio=prop,
                                                       noise=z))


def plan_serially(policy_net: diffusion.NetFn, policy_params, planning_net: diffusion.NetFn, planning_params,
                  context: Array, latent: Array, proprio: Array, noise: Array, *, layout: layout_lib.SlotLayout,
                  cfg: PlanningConfig) -> dict:
  """The same procedure one candidate at a time through the jitted single-query functions (the official serial
  loop). Returns the same keys as `plan` for chosen, scores, values, actions, values_by_depth."""
  scores, all_values, all_actions, all_by_depth = [], [], [], []
  common = dict(layout=layout, sampler_cfg=cfg.sampler)
  for q in range(noise.shape[0]):
    z = lambda m: noise[q, m][None]

    def futures_and_values(action_sample):
      futures = [inference.jit_world_model_query(planning_net, planning_params, context, action_sample, proprio,
                                                 z(i), num_steps=s, **common) for i, s in enumerate(cfg.future_steps)]
      values = [inference.jit_value_query(planning_net, planning_params, context, f, proprio, z(j), num_steps=s,
                                          value_of_future_state=cfg.value_of_future_state, **common)[0]
                for f in futures for j, s in enumerate(cfg.value_steps)]
      return futures, jnp.stack(values)

    first = inference.jit_action_query(policy_net, policy_params, context, latent, proprio, z(0),
                                       num_steps=cfg.action_steps, **common)
    futures, values = futures_and_values(first['sample'])
    by_depth = [inference.aggregate_values(values, cfg.aggregation)]
    for _ in range(2, cfg.search_depth + 1):
      next_futures = futures
      for future in futures:
        resampled = inference.jit_action_query(policy_net, policy_params, context,
                                               copy_future_to_current(future, layout), proprio, z(0),
                                               num_steps=cfg.action_steps, **common)
        next_futures, next_values = futures_and_values(resampled['sample'])
        by_depth.append(inference.aggregate_values(next_values, cfg.aggregation))
      futures = next_futures
    by_depth = jnp.stack(by_depth)
    score = by_depth[0] if cfg.search_depth == 1 else (
        by_depth[-1] if cfg.depth_aggregation == 'use_last_value' else by_depth.mean())
    scores.append(score)
    all_values.append(values)
    all_actions.append(first['actions'][0])
    all_by_depth.append(by_depth)
  scores = jnp.stack(scores)
  return {'chosen': select(scores), 'scores': scores, 'values': jnp.stack(all_values),
          'actions': jnp.stack(all_actions), 'values_by_depth': jnp.stack(all_by_depth)}
