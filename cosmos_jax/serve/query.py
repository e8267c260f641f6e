"""Query orchestration: a validated observation through the policy, as one action query or best-of-N planning.

  images:   uint8 [S, S, 3] per camera -> `data.transforms.test_time_transform` (the server-side centre crop and
            resize) -> `video.encode_policy_sequence` (the whole policy sequence in one causal pass, one jitted program);
  proprio:  `inference.normalized_proprio` (min-max with the dataset statistics);
  text:     the exact task string looked up in the text store (T5 embeddings); with a T5 encoder, a task missing
            from the store is encoded on first use and kept;
  noise:    `sampler.parity_noise` / `planning.noise_bank` with the fixed seeds of the official server
            (`randomize_seed False`), computed once per latent shape and reused;
  policy:   `inference.jit_action_query` (value and future images read from the same sample, "parallel"), or with
            planning the batched best-of-N `planning.make_planner` (one program for all candidates);
  output:   `inference.unnormalized_actions` (float64), `inference.future_images` (jitted decode).

Every jitted program is compiled once per shape. Not thread-safe: the servers run one query at a time.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
               action_steps: int = 10, seed: int = DEFAULT_SEED, planning: planning_lib.PlanningConfig | None = None,
               decode_future_images: bool = True):
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
    self.planning = planning
    self.decode_future_images = decode_future_images
    self.vae_cfg = models.vae_cfg
    self.net = diffusion.DiTNet(models.dit_cfg)
    self.dit_params = jax.device_put(models.dit_params)
    self.vae_params = jax.device_put(models.vae_params)
    self.has_planning_model = models.planning_dit_cfg is not None
    if planning is not None:
      self.planning_net = diffusion.DiTNet(models.planning_dit_cfg) if self.has_planning_model else self.net
      self.planning_params = (jax.device_put(models.planning_dit_params) if self.has_planning_model
                              else self.dit_params)
      self._planner = planning_lib.make_planner(self.net, self.planning_net, self.layout, planning)
    self._contexts: dict[str, jax.Array] = {}
    self._noise: dict[tuple, Any] = {}
    self._encode = jax.jit(functools.partial(encode_observation, vae_cfg=self.vae_cfg, layout=self.layout,
                                             image_size=image_size))
    self._future_images = jax.jit(functools.partial(inference.future_images, vae_cfg=self.vae_cfg,
                                                    layout=self.layout))

  def metadata(self) -> dict:
    meta = {'tasks': list(self.text_store.tasks), 'text_embeddings': self.text_store.kind,
            'new_tasks': self.text_encoder is not None, 'action_steps': self.action_steps, 'seed': self.seed,
            'planning': None}
    if self.planning is not None:
      p = self.planning
      meta['planning'] = {'num_candidates': p.num_candidates, 'base_seed': p.base_seed,
                          'action_steps': p.action_steps, 'future_steps': list(p.future_steps),
                          'value_steps': list(p.value_steps), 'aggregation': p.aggregation,
                          'value_of_future_state': p.value_of_future_state, 'search_depth': p.search_depth,
                          'separate_planning_model': self.has_planning_model}
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

  def _cached_noise(self, latent_shape) -> Any:
    key = tuple(latent_shape)
    if key not in self._noise:
      if self.planning is None:
        self._noise[key] = jnp.asarray(sampler_lib.parity_noise(self.seed, latent_shape))
      else:
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
      noise = self._cached_noise(latent.shape)
      return self._single(context, latent, proprio, noise, obs.return_all_query_results, timing)
    noise = self._cached_noise((1,) + latent.shape[1:])
    return self._best_of_n(context, latent, proprio, noise, obs.return_all_query_results, timing)

  def _decoded(self, sample, orig_latent) -> dict[str, np.ndarray]:
    decoded = self._future_images(self.vae_params, sample=sample, orig_latent=orig_latent)
    return {name: np.asarray(image[0]) for name, image in decoded.items()}

  def _single(self, context, latent, proprio, noise, return_all: bool, timing: dict) -> base.QueryResult:
    t0 = time.perf_counter()
    out = inference.jit_action_query(self.net, self.dit_params, context, latent, proprio, noise, layout=self.layout,
                                     num_steps=self.action_steps)
    out = jax.block_until_ready({k: out[k] for k in ('sample', 'actions', 'value')})
    t1 = time.perf_counter()
    timing['policy_s'] = t1 - t0
    actions = inference.unnormalized_actions(out['actions'], self.statistics)[0]
    value = float(out['value'][0])
    futures = self._decoded(out['sample'], latent) if self.decode_future_images else None
    timing['vae_decode_s'] = time.perf_counter() - t1
    result = base.QueryResult(actions=actions, value=value, future_images=futures, timing=timing)
    if return_all:  # one candidate, one search depth
      result.all_actions, result.all_values, result.all_future_images = [actions], [value], [futures]
      result.all_actions_by_depth, result.all_values_by_depth = [[actions]], [[value]]
      result.all_future_images_by_depth = [[futures]]
    return result

  def _best_of_n(self, context, latent, proprio, noise, return_all: bool, timing: dict) -> base.QueryResult:
    t0 = time.perf_counter()
    out = self._planner(self.dit_params, self.planning_params, context, latent, proprio, noise)
    out = jax.block_until_ready(out)
    t1 = time.perf_counter()
    timing['planning_s'] = t1 - t0
    chosen = int(out['chosen'])
    scores = np.asarray(out['scores'], np.float64)
    all_actions = [inference.unnormalized_actions(a, self.statistics) for a in np.asarray(out['actions'])]

    def futures_of(q: int):
      if not self.decode_future_images:
        return None
      # The future-state ensemble's images averaged per pixel (official 'average' aggregation).
      predictions = [self._future_images(self.vae_params, sample=f[None], orig_latent=latent)
                     for f in out['future_samples'][q]]
      return {k: np.asarray(v[0]) for k, v in inference.average_images(predictions).items()}

    futures = futures_of(chosen)
    result = base.QueryResult(actions=all_actions[chosen], value=float(scores[chosen]), future_images=futures,
                              timing=timing, chosen_candidate=chosen)
    if return_all:
      all_futures = [futures if q == chosen else futures_of(q) for q in range(len(scores))]
      result.all_actions, result.all_values, result.all_future_images = all_actions, scores.tolist(), all_futures
      result.all_actions_by_depth = [[inference.unnormalized_actions(a, self.statistics) for a in row]
                                     for row in np.asarray(out['actions_by_depth'])]
      result.all_values_by_depth = np.asarray(out['values_by_depth'], np.float64).tolist()
      if self.planning.search_depth == 1:
        # The planner keeps only the first depth's future samples, so the per-depth images exist for depth 1.
        result.all_future_images_by_depth = [[f] for f in all_futures]
    timing['vae_decode_s'] = time.perf_counter() - t1
    return result
