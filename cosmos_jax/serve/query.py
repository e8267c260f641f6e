"""Query orchestration: a validated observation through the policy, as one action query or best-of-N planning.

  images:   uint8 [S, S, 3] per camera (the protocol resized them) -> `data.transforms.test_time_transform` (the
            centre crop and resize) -> `video.encode_policy_sequence` (the whole policy sequence in one causal pass,
            one jitted program);
  proprio:  `inference.normalized_proprio` (min-max with the dataset statistics);
  text:     the exact task string looked up in the text store (T5 embeddings); with a T5 encoder, a task missing
            from the store is encoded on first use and kept;
  noise:    `sampler.parity_noise` / `planning.noise_bank` with the fixed seeds of the official server, computed
            once per latent shape and reused; with randomize_seed drawn anew for every request, and with
            use_variance_scale each seed's sigma range (`sampler.variance_scale`);
  policy:   `inference.action_query` jitted (value and future images read from the same sample, "parallel"), or with
            planning the batched best-of-N `planning.make_planner` (one program for all candidates, spread over
            the local devices by `planning.candidate_mesh`);
  output:   `inference.unnormalized_actions` (float64), `inference.future_images` (jitted decode).

Every jitted program is compiled once per shape; with a compilation cache directory (the serve command's default)
its trace is kept there too (`program_cache.cached_jit`): a restarted server neither traces nor compiles them.
Not thread-safe: the servers run one query at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax import program_cache
from cosmos_jax.data import text as text_lib
from cosmos_jax.data import transforms
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import inference
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import planning as planning_lib
from cosmos_jax.policy import sampler as sampler_lib
from cosmos_jax.policy import video as video_lib
from cosmos_jax.serve import factory
from cosmos_jax.serve.protocols import base

DEFAULT_SEED = 195  # every shipped ALOHA command


def encode_observation(vae_params, camera_images, *, vae_cfg: vae_lib.VAEConfig, layout: layout_lib.SlotLayout,
                       image_size: int):
  """The latent of the inference pixel sequence (current images in their own and their future slots)."""
  return video_lib.encode_policy_sequence(vae_params, vae_cfg, inference.policy_video_items(layout, camera_images),
                                        image_size, image_size)


class PolicyQuery:
  """The policy (and optional planning model) of `models`, callable with validated observations."""

  def __init__(self, models: factory.PolicyModels, *, layout: str = 'aloha', image_size: int = 224,
               action_steps: int = 10, seed: int = DEFAULT_SEED, randomize_seed: bool = False,
               use_variance_scale: bool = False, planning: planning_lib.PlanningConfig | None = None,
               planning_devices: int = 0, decode_future_images: bool = True):
    self.models = models
    self.layout = layout_lib.get_layout(layout)
    if image_size % vae_lib.SPATIAL_COMPRESSION:
      raise ValueError(f'image_size {image_size} must be a multiple of {vae_lib.SPATIAL_COMPRESSION}')
    latent_hw = image_size // vae_lib.SPATIAL_COMPRESSION
    slot_values = models.vae_cfg.z_dim * latent_hw * latent_hw
    if slot_values < self.layout.action_elements:
      raise ValueError(f'image_size {image_size} gives latent slots of {slot_values} values, fewer than the '
                       f'{self.layout.action_elements} action values')
    if models.dit_cfg.crossattn_emb_channels != text_lib.EMBED_DIM:
      raise ValueError(f'the DiT cross-attends to {models.dit_cfg.crossattn_emb_channels}-wide text tokens but the '
                       f'text store holds {text_lib.EMBED_DIM}-wide T5 embeddings')
    encoder = models.text_encoder
    if encoder is not None and encoder.cfg.d_model != models.dit_cfg.crossattn_emb_channels:
      raise ValueError(f'the T5 encoder gives {encoder.cfg.d_model}-wide embeddings; the DiT cross-attends to '
                       f'{models.dit_cfg.crossattn_emb_channels}-wide text tokens')
    if models.planning_dit_cfg is not None and planning is None:
      raise ValueError('a planning model was given but planning is off (pass a PlanningConfig)')
    for key, want in (('proprio', self.layout.proprio_dim), ('actions', self.layout.action_dim)):
      dims = np.shape(models.statistics[f'{key}_min'])[0]
      if dims != want:
        raise ValueError(f'{key} statistics have {dims} dimensions, the {self.layout.name} layout needs {want}')
    self.statistics = {k: np.asarray(v, np.float64) for k, v in models.statistics.items()}
    self.text_store = models.text_store
    # With a T5 encoder, an unknown task is encoded on first use and kept in the store (official server behaviour).
    self.text_encoder = models.text_encoder
    self.encoded_tasks: list[str] = []
    self.image_size = image_size
    self.action_steps = action_steps
    self.seed = seed
    self.randomize_seed = randomize_seed
    self.use_variance_scale = use_variance_scale
    self.planning = planning
    self.decode_future_images = decode_future_images
    self.vae_cfg = models.vae_cfg
    self.net = diffusion.DiTNet(models.dit_cfg)
    self.dit_params = jax.device_put(models.dit_params)
    self.vae_params = jax.device_put(models.vae_params)
    self.has_planning_model = models.planning_dit_cfg is not None
    self.planning_devices = 1
    if planning is not None:
      self.planning_net = diffusion.DiTNet(models.planning_dit_cfg) if self.has_planning_model else self.net
      self.planning_params = (jax.device_put(models.planning_dit_params) if self.has_planning_model
                              else self.dit_params)
      mesh = planning_lib.candidate_mesh(planning.num_candidates, planning_devices)
      if mesh is not None:  # parameters replicated on every device, candidates sharded
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self.dit_params = jax.device_put(models.dit_params, replicated)
        self.planning_params = (jax.device_put(models.planning_dit_params, replicated) if self.has_planning_model
                                else self.dit_params)
        self.planning_devices = mesh.size
      self._planner = planning_lib.make_planner(self.net, self.planning_net, self.layout, planning, mesh=mesh)
    self._contexts: dict[str, jax.Array] = {}
    self._noise: dict[tuple, Any] = {}
    # Traced programs persist next to the compilation cache (program_cache): a restarted server neither traces
    # nor compiles them.
    self._encode = program_cache.cached_jit(functools.partial(encode_observation, vae_cfg=self.vae_cfg,
                                                              layout=self.layout, image_size=image_size))
    self._future_images = program_cache.cached_jit(functools.partial(inference.future_images,
                                                                     vae_cfg=self.vae_cfg, layout=self.layout))
    self._action_query = program_cache.cached_jit(functools.partial(inference.action_query, self.net,
                                                                    layout=self.layout, num_steps=action_steps))

  def metadata(self) -> dict:
    meta = {'tasks': list(self.text_store.tasks), 'text_embeddings': self.text_store.kind,
            'new_tasks': self.text_encoder is not None, 'action_steps': self.action_steps, 'seed': self.seed,
            'randomize_seed': self.randomize_seed, 'use_variance_scale': self.use_variance_scale, 'planning': None}
    if self.planning is not None:
      p = self.planning
      meta['planning'] = {f.name: list(v) if isinstance(v, tuple) else v for f in dataclasses.fields(p)
                          if f.name != 'sampler' for v in [getattr(p, f.name)]}
      meta['planning'].update(separate_planning_model=self.has_planning_model, devices=self.planning_devices,
                              dit_passes_per_candidate=p.dit_passes_per_candidate())
    return meta

  def _context(self, task: str) -> jax.Array:
    if task not in self.text_store.embeddings:  # validated: only with a text encoder
      kind = self.text_store.kind
      if not self.encoded_tasks:
        kind = f'{kind}; new tasks: {self.text_encoder.kind}, encoded on first use'
      self.text_store = text_lib.TextStore({**self.text_store.embeddings, **self.text_encoder.encode([task])},
                                           kind=kind)
      self.encoded_tasks.append(task)
    if task not in self._contexts:
      embedding = self.text_store.lookup(task).astype(np.float32)  # exact: bf16 values
      self._contexts[task] = jnp.asarray(embedding[None])
    return self._contexts[task]

  def _single_noise(self, latent_shape) -> tuple[Any, Any]:
    """(initial noise, sigma_scale or None) of the action query: the fixed seed's, cached, or a fresh seed's."""
    seed = secrets.randbits(32) % planning_lib.RANDOM_SEEDS if self.randomize_seed else self.seed
    key = (tuple(latent_shape), seed)
    if key not in self._noise:
      scale = (jnp.asarray([sampler_lib.variance_scale(seed)], jnp.float32) if self.use_variance_scale else None)
      noise = (jnp.asarray(sampler_lib.parity_noise(seed, latent_shape)), scale)
      if self.randomize_seed:
        return noise
      self._noise[key] = noise
    return self._noise[key]

  def _planning_bank(self, latent_shape) -> dict:
    """The planner's noise bank: cached with fixed seeds, drawn anew per request with randomize_seed."""
    key = tuple(latent_shape)
    if key not in self._noise or self.planning.randomize_seed:
      bank = planning_lib.noise_bank(self.planning, latent_shape)
      self._noise[key] = {k: v if k == 'seeds' else jnp.asarray(v) for k, v in bank.items()}
    return self._noise[key]

  def __call__(self, obs: base.Observation) -> base.QueryResult:
    """The query result for a validated observation, with the per-stage timing (results blocked on)."""
    timing = {}
    t0 = time.perf_counter()
    images = {camera: transforms.test_time_transform(image[None]) for camera, image in obs.camera_images.items()}
    proprio = jnp.asarray(inference.normalized_proprio(obs.proprio, self.statistics, self.layout))
    context = self._context(obs.task)
    t1 = time.perf_counter()
    timing['preprocess_s'] = t1 - t0
    latent = jax.block_until_ready(self._encode(self.vae_params, images))
    timing['vae_encode_s'] = time.perf_counter() - t1
    if self.planning is None:
      noise, sigma_scale = self._single_noise(latent.shape)
      return self._single(context, latent, proprio, noise, sigma_scale, obs.return_all_query_results, timing)
    bank = self._planning_bank((1,) + latent.shape[1:])
    return self._best_of_n(context, latent, proprio, bank, obs.return_all_query_results, timing)

  def _decoded(self, sample, orig_latent) -> dict[str, np.ndarray]:
    decoded = self._future_images(self.vae_params, sample=sample, orig_latent=orig_latent)
    return {name: np.asarray(image[0]) for name, image in decoded.items()}

  def _single(self, context, latent, proprio, noise, sigma_scale, return_all: bool,
              timing: dict) -> base.QueryResult:
    t0 = time.perf_counter()
    out = self._action_query(self.dit_params, context, latent, proprio, noise, sigma_scale=sigma_scale)
    out = jax.block_until_ready({k: out[k] for k in ('sample', 'actions', 'value')})
    t1 = time.perf_counter()
    timing['policy_s'] = t1 - t0
    actions = inference.unnormalized_actions(out['actions'], self.statistics)[0]
    value = float(out['value'][0])
    futures = self._decoded(out['sample'], latent) if self.decode_future_images else None
    timing['vae_decode_s'] = time.perf_counter() - t1
    result = base.QueryResult(actions=actions, value=value, future_images=futures, timing=timing)
    if return_all:  # one candidate, one search depth; no world-model query, so no per-depth images (official)
      result.all_actions, result.all_values, result.all_future_images = [actions], [value], [futures]
      result.all_actions_by_depth, result.all_values_by_depth = [[actions]], [[value]]
      result.all_future_images_by_depth = [[]]
    return result

  def _best_of_n(self, context, latent, proprio, bank, return_all: bool, timing: dict) -> base.QueryResult:
    t0 = time.perf_counter()
    out = self._planner(self.dit_params, self.planning_params, context, latent, proprio, bank)
    out = jax.block_until_ready(out)
    t1 = time.perf_counter()
    timing['planning_s'] = t1 - t0
    p = self.planning
    chosen = int(out['chosen'])
    scores = np.asarray(out['scores'], np.float64)
    all_actions = [inference.unnormalized_actions(a, self.statistics) for a in np.asarray(out['actions'])]

    def images(samples):
      """The images a set of samples returns: the future ensemble's, aggregated as configured (official
      'average' / 'last'); one sample's own for the action sample."""
      if not self.decode_future_images:
        return None
      predictions = [self._future_images(self.vae_params, sample=s[None], orig_latent=latent) for s in samples]
      return {k: np.asarray(v[0]) for k, v in inference.aggregate_future_images(predictions,
                                                                                  p.future_aggregation).items()}

    def futures_of(q: int):
      if p.predict_future:
        return images(out['future_samples'][q])
      if p.value_source == 'parallel':  # the future the action query generated alongside (official parallel mode)
        return images(out['action_samples'][q][None])
      return None  # Q(s, a) without world-model queries: no future images (official)

    futures = futures_of(chosen)
    result = base.QueryResult(actions=all_actions[chosen], value=float(scores[chosen]), future_images=futures,
                              timing=timing, chosen_candidate=chosen)
    if return_all:
      all_futures = [futures if q == chosen else futures_of(q) for q in range(len(scores))]
      result.all_actions, result.all_values, result.all_future_images = all_actions, scores.tolist(), all_futures
      result.all_actions_by_depth = [[inference.unnormalized_actions(a, self.statistics) for a in row]
                                     for row in np.asarray(out['actions_by_depth'])]
      result.all_values_by_depth = np.asarray(out['values_by_depth'], np.float64).tolist()
      # Official: one entry per world-model query of the search (depth 1, then one per future sample of the
      # previous depth); none without world-model queries.
      result.all_future_images_by_depth = (
          [[all_futures[q]] + [images(entry) for entry in out['future_samples_by_depth'][q][1:]]
           for q in range(len(scores))] if p.predict_future else [[] for _ in scores])
    timing['vae_decode_s'] = time.perf_counter() - t1
    return result
