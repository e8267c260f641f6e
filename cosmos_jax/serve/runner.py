"""The in-process policy behind every server: validate an observation, run the policy, return the response.

`PolicyRunner.act(observation)` takes the official ALOHA request fields (policy_spec section 12) and returns the
official response fields. The math lives in the policy package; this module only wires it together:

  images:   uint8 (S, S, 3) per camera -> `data.transforms.test_time_transform` (the server-side centre crop
            and resize, section 2.1) -> `vae.policy_pixel_sequence` -> `vae.encode` (one jitted program);
  proprio:  `inference.normalized_proprio` (min-max with the dataset statistics);
  text:     the exact task string looked up in the text store (T5 embeddings);
  noise:    `sampler.parity_noise` / `planning.noise_bank` with the fixed seeds of the official server
            (`randomize_seed False`), computed once per latent shape and reused;
  policy:   `inference.jit_action_query` (value and future images read from the same sample, "parallel"), or
            with planning the batched best-of-N `planning.make_planner` (one program for all candidates);
  output:   `inference.unnormalized_actions` (float64), `inference.future_images` (jitted decode).

Every jitted program is compiled once per shape; `warmup()` runs one dummy request so the first real request
does not pay for compilation. Validation errors are `ValueError`s whose message names the field, the expected
value and the received one; the servers send that message back to the client and keep serving.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.convert import library as convert_lib
from cosmos_jax.convert import torch_io
from cosmos_jax.convert import vae_rules
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.data import transforms
from cosmos_jax.nn import dit as dit_lib
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import inference
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import planning as planning_lib
from cosmos_jax.policy import sampler as sampler_lib

log = logging.getLogger(__name__)

SAMPLE_DIR = pathlib.Path(__file__).resolve().parent.parent / 'data' / 'sample_aloha'
TINY_VAE = vae_lib.TINY_VAE_PATH

# Request image field -> layout camera stem (official deploy.py: wrist_image = left wrist, wrist_image2 = right
# wrist, image = cam_high).
ALOHA_IMAGE_FIELDS = {'left_wrist_image': 'wrist_image', 'right_wrist_image': 'wrist_image2',
                      'primary_image': 'image'}
# Fields the official client may send that the official server ignores.
IGNORED_FIELDS = ('proprio_history', 'images_history')
DEFAULT_SEED = 195  # every shipped ALOHA command
# A proprio value is rejected when it lies further outside the training range [min, max] than this many range
# widths (min-max normalised value outside [-1 - 2m, 1 + 2m]): a unit mix-up or a corrupted reading, not a state.
DEFAULT_PROPRIO_MARGIN = 1.0


class InvalidObservation(ValueError):
  """A request that fails validation (the servers answer it with a client error and keep serving)."""


@dataclasses.dataclass(frozen=True)
class Observation:
  """A validated request: images uint8 [S, S, 3] per layout camera stem, raw proprio float64 [P], the task."""

  camera_images: Mapping[str, np.ndarray]
  proprio: np.ndarray
  task: str
  return_all_query_results: bool


def _perturbed(params, seed: int, scale: float = 0.05):
  """Random-init DiT params with every leaf perturbed: the official init zeroes the output layer, which would
  make the tiny model's output independent of its input. Host numpy noise (no per-shape compilation)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: np.asarray(p) + (scale * rng.standard_normal(p.shape)).astype(p.dtype), params)


class PolicyRunner:
  """One loaded policy (and optional planning model), callable with observations. Not thread-safe: the servers
  run one `act` at a time."""

  def __init__(self, *, dit_cfg: dit_lib.DiTConfig, dit_params, vae_cfg: vae_lib.VAEConfig, vae_params,
               statistics: Mapping[str, Any], text_store: text_lib.TextStore, layout: str = 'aloha',
               image_size: int = 224, action_steps: int = 10, seed: int = DEFAULT_SEED,
               planning: planning_lib.PlanningConfig | None = None, planning_dit_cfg: dit_lib.DiTConfig | None = None,
               planning_dit_params=None, decode_future_images: bool = True,
               proprio_margin: float | None = DEFAULT_PROPRIO_MARGIN, name: str = 'cosmos_jax policy',
               text_encoder: text_lib.T5TextEncoder | None = None):
    self.layout = layout_lib.get_layout(layout)
    if self.layout.name != 'aloha':
      raise ValueError(f'the server protocol is the ALOHA one (policy_spec 12); layout {layout!r} is not supported')
    if image_size % vae_lib.SPATIAL_COMPRESSION:
      raise ValueError(f'image_size {image_size} must be a multiple of {vae_lib.SPATIAL_COMPRESSION}')
    latent_hw = image_size // vae_lib.SPATIAL_COMPRESSION
    if vae_cfg.z_dim * latent_hw * latent_hw < self.layout.action_elements:
      raise ValueError(f'image_size {image_size} gives latent slots of {vae_cfg.z_dim * latent_hw ** 2} values, fewer '
                       f'than the {self.layout.action_elements} action values')
    if dit_cfg.crossattn_emb_channels != text_lib.EMBED_DIM:
      raise ValueError(f'the DiT cross-attends to {dit_cfg.crossattn_emb_channels}-wide text tokens but the text store '
                       f'holds {text_lib.EMBED_DIM}-wide T5 embeddings')
    if text_encoder is not None and text_encoder.cfg.d_model != dit_cfg.crossattn_emb_channels:
      raise ValueError(f'the T5 encoder gives {text_encoder.cfg.d_model}-wide embeddings; the DiT cross-attends to '
                       f'{dit_cfg.crossattn_emb_channels}-wide text tokens')
    if (planning_dit_cfg is None) != (planning_dit_params is None):
      raise ValueError('give both planning_dit_cfg and planning_dit_params, or neither')
    if planning_dit_cfg is not None and planning is None:
      raise ValueError('a planning model was given but planning is off (pass a PlanningConfig)')
    stats_lib.validate_statistics(statistics, source='statistics')
    for key in ('proprio', 'actions'):
      dims = np.shape(statistics[f'{key}_min'])[0]
      want = self.layout.proprio_dim if key == 'proprio' else self.layout.action_dim
      if dims != want:
        raise ValueError(f'{key} statistics have {dims} dimensions, the {self.layout.name} layout needs {want}')
    self.statistics = {k: np.asarray(v, np.float64) for k, v in statistics.items()}
    self.text_store = text_store
    # With a T5 encoder, an unknown task is encoded on first use and kept in the store (official server behaviour).
    self.text_encoder = text_encoder
    self.encoded_tasks: list[str] = []
    self.image_size = image_size
    self.action_steps = action_steps
    self.seed = seed
    self.planning = planning
    self.decode_future_images = decode_future_images
    self.proprio_margin = proprio_margin
    self.name = name
    self.dit_cfg, self.vae_cfg = dit_cfg, vae_cfg
    self.net = diffusion.DiTNet(dit_cfg)
    self.dit_params = jax.device_put(dit_params)
    self.vae_params = jax.device_put(vae_params)
    if planning is not None:
      self.planning_net = diffusion.DiTNet(planning_dit_cfg) if planning_dit_cfg is not None else self.net
      self.planning_params = (jax.device_put(planning_dit_params) if planning_dit_params is not None
                              else self.dit_params)
      self._planner = planning_lib.make_planner(self.net, self.planning_net, self.layout, planning)
    self.has_planning_model = planning_dit_cfg is not None
    self._contexts: dict[str, jax.Array] = {}
    self._noise: dict[tuple, Any] = {}
    self._encode = jax.jit(functools.partial(_encode_sequence, vae_cfg=vae_cfg, layout=self.layout,
                                             image_size=image_size))
    self._future_images = jax.jit(functools.partial(inference.future_images, vae_cfg=vae_cfg, layout=self.layout))

  # Constructors -------------------------------------------------------------------------------------------------

  @classmethod
  def from_checkpoints(cls, dit_dir: str | os.PathLike, vae_dir: str | os.PathLike, *,
                       planning_dir: str | os.PathLike | None = None, statistics: str | os.PathLike | None = None,
                       text_store: str | os.PathLike | None = None, planning: planning_lib.PlanningConfig | None = None,
                       dit_overrides: Mapping[str, Any] | None = None, **kwargs) -> 'PolicyRunner':
    """From converted checkpoints (`python -m cosmos_jax.convert dit|vae ...`).

    The statistics and text store default to the assets stored next to the converted policy
    (`<dit_dir>/dataset_statistics.json`, `<dit_dir>/text_store`). `dit_overrides` replaces run-time DiT
    settings (e.g. {'dtype': 'bfloat16', 'attention': 'cudnn'}) in both DiT configs. A planning_dir without a
    `planning` config uses the main ALOHA planning settings.
    """
    dit_dir = pathlib.Path(dit_dir)
    dit_params, dit_cfg, dit_config = convert_lib.load_converted(dit_dir)
    _expect_kind(dit_config, 'dit', dit_dir)
    vae_params, vae_cfg, vae_config = convert_lib.load_converted(vae_dir)
    _expect_kind(vae_config, 'vae', vae_dir)
    overrides = dict(dit_overrides or {})
    dit_cfg = dataclasses.replace(dit_cfg, **overrides)
    statistics = pathlib.Path(statistics) if statistics else dit_dir / convert_lib.STATISTICS_ASSET
    text_store = pathlib.Path(text_store) if text_store else dit_dir / convert_lib.TEXT_STORE_ASSET
    if not statistics.exists():
      raise FileNotFoundError(f'no dataset statistics at {statistics} (convert the policy with --statistics, or pass '
                              'statistics=)')
    if not text_store.exists():
      raise FileNotFoundError(f'no text store at {text_store} (convert the policy with --text-store, or pass '
                              'text_store=)')
    planning_cfg, planning_params = None, None
    if planning_dir is not None:
      planning_dir = pathlib.Path(planning_dir)
      planning_params, planning_cfg, planning_config = convert_lib.load_converted(planning_dir)
      _expect_kind(planning_config, 'dit', planning_dir)
      planning_cfg = dataclasses.replace(planning_cfg, **overrides)
      planning = planning or planning_lib.PlanningConfig.main_command()
    return cls(dit_cfg=dit_cfg, dit_params=dit_params, vae_cfg=vae_cfg, vae_params=vae_params,
               statistics=stats_lib.load_statistics(statistics), text_store=text_lib.TextStore.load(text_store),
               planning=planning, planning_dit_cfg=planning_cfg, planning_dit_params=planning_params,
               name=f'{dit_dir.name}' + (f' + planning {planning_dir.name}' if planning_dir else ''), **kwargs)

  @classmethod
  def tiny(cls, seed: int = 0, image_size: int = 224, *, action_steps: int = 3, noise_seed: int = DEFAULT_SEED,
           planning: planning_lib.PlanningConfig | None = None, with_planning_model: bool = False,
           **kwargs) -> 'PolicyRunner':
    """A random tiny policy on the bundled sample assets (tests, demos, CPU benchmarks): the 'tiny' DiT preset
    with 1024-wide text tokens, the bundled official width-8 Wan2.1 VAE (random weights), the sample's
    statistics and stand-in text store (task 'transfer cube'). `with_planning_model` adds a second random DiT as
    the planning model. `seed` draws the weights; `noise_seed` is the sampler seed (the official 195)."""
    dit_cfg = dit_lib.DiTConfig.preset('tiny', crossattn_emb_channels=text_lib.EMBED_DIM)
    init = jax.jit(lambda k: dit_lib.init_params(dit_cfg, k))
    dit_params = _perturbed(init(jax.random.key(seed)), seed + 1000)
    vae_cfg = vae_lib.VAEConfig(base_dim=8)
    with torch_io.open_state_dict(TINY_VAE) as state_dict:
      vae_params = vae_rules.load_official(vae_cfg, state_dict, where=str(TINY_VAE))
    planning_kwargs = {}
    if with_planning_model:
      planning_kwargs = dict(planning_dit_cfg=dit_cfg,
                             planning_dit_params=_perturbed(init(jax.random.key(seed + 1)), seed + 2000))
    return cls(dit_cfg=dit_cfg, dit_params=dit_params, vae_cfg=vae_cfg, vae_params=vae_params,
               statistics=stats_lib.load_statistics(SAMPLE_DIR / stats_lib.STATISTICS_FILENAME),
               text_store=text_lib.TextStore.load(SAMPLE_DIR / 'text_store'), image_size=image_size,
               action_steps=action_steps, seed=noise_seed, planning=planning,
               name=f'tiny random policy (weights seed {seed})',
               **planning_kwargs, **kwargs)

  # Metadata -----------------------------------------------------------------------------------------------------

  def metadata(self) -> dict:
    """What a client needs to know before sending observations (sent on websocket connect)."""
    layout = self.layout
    meta = {
        'policy': self.name,
        'layout': layout.name,
        'image_fields': {field: [self.image_size, self.image_size, 3] for field in ALOHA_IMAGE_FIELDS},
        'image_dtype': 'uint8',
        'proprio_dim': layout.proprio_dim,
        'action_dim': layout.action_dim,
        'chunk_size': layout.chunk_size,
        'open_loop_steps': layout.open_loop_steps,
        'tasks': list(self.text_store.tasks),
        'text_embeddings': self.text_store.kind,
        'action_steps': self.action_steps,
        'seed': self.seed,
        'planning': None,
    }
    if self.planning is not None:
      p = self.planning
      meta['planning'] = {'num_candidates': p.num_candidates, 'base_seed': p.base_seed,
                          'action_steps': p.action_steps, 'future_steps': list(p.future_steps),
                          'value_steps': list(p.value_steps), 'aggregation': p.aggregation,
                          'value_of_future_state': p.value_of_future_state, 'search_depth': p.search_depth,
                          'separate_planning_model': self.has_planning_model}
    return meta

  # Validation ---------------------------------------------------------------------------------------------------

  def validate(self, observation: Mapping[str, Any]) -> Observation:
    """Checks every field of a request; raises ValueError naming the first problem found."""
    if not isinstance(observation, Mapping):
      raise InvalidObservation('the request must be a JSON object of observation fields, got '
                               f'{type(observation).__name__}')
    required = tuple(ALOHA_IMAGE_FIELDS) + ('proprio', 'task_description')
    missing = [f for f in required if f not in observation]
    if missing:
      raise InvalidObservation(f'missing field(s) {missing}; a request needs {list(required)} (optional: '
                       f"'return_all_query_results')")
    known = set(required) | {'return_all_query_results'} | set(IGNORED_FIELDS)
    unknown = sorted(str(k) for k in observation if k not in known)
    if unknown:
      raise InvalidObservation(f'unknown field(s) {unknown}; known fields: {sorted(known)}')
    images = {ALOHA_IMAGE_FIELDS[f]: self._check_image(f, observation[f]) for f in ALOHA_IMAGE_FIELDS}
    proprio = self._check_proprio(observation['proprio'])
    task = observation['task_description']
    if not isinstance(task, str):
      raise InvalidObservation(f"'task_description' must be a string, got {type(task).__name__}")
    if task not in self.text_store.embeddings and self.text_encoder is None:
      raise InvalidObservation(f'unknown task {task!r}: no text embedding for it; known tasks: '
                               f'{list(self.text_store.tasks)} (start the server with --t5 to encode new ones)')
    return_all = observation.get('return_all_query_results', False)
    if isinstance(return_all, np.ndarray) and return_all.shape == () and return_all.dtype == np.bool_:
      return_all = bool(return_all)
    if not isinstance(return_all, (bool, np.bool_)):
      raise InvalidObservation(f"'return_all_query_results' must be a boolean, got {return_all!r}")
    return Observation(images, proprio, task, bool(return_all))

  def _check_image(self, field: str, value: Any) -> np.ndarray:
    expected = (self.image_size, self.image_size, 3)
    if isinstance(value, np.ndarray):
      array = value
    elif isinstance(value, (list, tuple)):
      try:
        array = np.asarray(value)
      except ValueError as e:
        raise InvalidObservation(f'{field!r}: a ragged nested list, not a {expected} image ({e})') from None
    else:
      raise InvalidObservation(f'{field!r} must be a uint8 array {expected}, got {type(value).__name__}')
    if array.shape != expected:
      raise InvalidObservation(f'{field!r} must have shape {expected} (H, W, RGB), got {array.shape}')
    if array.dtype == np.uint8:
      return array
    # Plain nested lists are accepted as the official server accepts them, but only when the values are exactly
    # representable as uint8: a float image or an out-of-range value is refused, not silently wrapped.
    if not (np.issubdtype(array.dtype, np.integer) and isinstance(value, (list, tuple))):
      raise InvalidObservation(f'{field!r} must have dtype uint8, got {array.dtype}')
    lo, hi = int(array.min()), int(array.max())
    if lo < 0 or hi > 255:
      raise InvalidObservation(f'{field!r} values must lie in [0, 255], got range [{lo}, {hi}]')
    return array.astype(np.uint8)

  def _check_proprio(self, value: Any) -> np.ndarray:
    dim = self.layout.proprio_dim
    if isinstance(value, (list, tuple)):
      try:
        value = np.asarray(value)
      except ValueError as e:
        raise InvalidObservation(f"'proprio': a ragged list ({e})") from None
    if not isinstance(value, np.ndarray):
      raise InvalidObservation(f"'proprio' must be a float array of shape ({dim},), got {type(value).__name__}")
    if value.shape != (dim,):
      raise InvalidObservation(f"'proprio' must have shape ({dim},) (raw ALOHA qpos), got {value.shape}")
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
      raise InvalidObservation(f"'proprio' must be a float array, got dtype {value.dtype}")
    proprio = value.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(proprio))
    if bad.size:
      raise InvalidObservation(f"'proprio' has non-finite values at index {bad.tolist()}: {proprio[bad].tolist()}")
    if self.proprio_margin is not None:
      normalized = stats_lib.normalize(proprio, self.statistics, 'proprio')
      limit = 1.0 + 2.0 * self.proprio_margin
      out = np.flatnonzero(np.abs(normalized) > limit)
      if out.size:
        lo, hi = self.statistics['proprio_min'], self.statistics['proprio_max']
        details = ', '.join(f'[{i}] = {proprio[i]:.4g} (training range [{lo[i]:.4g}, {hi[i]:.4g}])' for i in out)
        raise InvalidObservation(f"'proprio' is far outside the training range (more than {self.proprio_margin} range "
                         f'widths): {details}')
    return proprio

  # Inference ----------------------------------------------------------------------------------------------------

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

  def act(self, observation: Mapping[str, Any]) -> dict:
    """Validates and runs one request; returns the official response fields plus `timing` (seconds)."""
    start = time.perf_counter()
    obs = self.validate(observation)
    validated = time.perf_counter()
    result = self.infer(obs)
    result['timing'] = {'validate_s': validated - start, **result['timing'], 'total_s': time.perf_counter() - start}
    return result

  def infer(self, obs: Observation) -> dict:
    """The response for a validated observation, with the per-stage `timing` (seconds, results blocked on)."""
    timing = {}
    t0 = time.perf_counter()
    images = {camera: transforms.test_time_transform(image[None]) for camera, image in obs.camera_images.items()}
    proprio = jnp.asarray(inference.normalized_proprio(obs.proprio, self.statistics, self.layout))
    context = self._context(obs.task)
    t1 = time.perf_counter()
    timing['preprocess_s'] = t1 - t0
    latent = jax.block_until_ready(self._encode(self.vae_params, images))
    t2 = time.perf_counter()
    timing['vae_encode_s'] = t2 - t1
    noise = self._cached_noise(latent.shape if self.planning is None else (1,) + latent.shape[1:])
    if self.planning is None:
      result = self._act_single(context, latent, proprio, noise, obs.return_all_query_results, timing)
    else:
      result = self._act_planning(context, latent, proprio, noise, obs.return_all_query_results, timing)
    result['timing'] = timing
    return result

  def _images_out(self, sample, orig_latent) -> dict[str, np.ndarray]:
    decoded = self._future_images(self.vae_params, sample=sample, orig_latent=orig_latent)
    return {name: np.asarray(image[0]) for name, image in decoded.items()}

  def _act_single(self, context, latent, proprio, noise, return_all: bool, timing: dict) -> dict:
    t0 = time.perf_counter()
    out = inference.jit_action_query(self.net, self.dit_params, context, latent, proprio, noise, layout=self.layout,
                                     num_steps=self.action_steps)
    out = jax.block_until_ready({k: out[k] for k in ('sample', 'actions', 'value')})
    t1 = time.perf_counter()
    timing['policy_s'] = t1 - t0
    actions = inference.unnormalized_actions(out['actions'], self.statistics)[0]
    value = float(out['value'][0])
    futures = self._images_out(out['sample'], latent) if self.decode_future_images else None
    timing['vae_decode_s'] = time.perf_counter() - t1
    result = {'actions': actions, 'future_image_predictions': futures, 'value_prediction': value,
              'value_predictions': value}
    if return_all:
      result.update(all_actions=[actions], all_future_image_predictions=[futures], all_value_predictions=[value],
                    all_actions_by_depth=[[actions]], all_future_image_predictions_by_depth=[[futures]],
                    all_value_predictions_by_depth=[[value]])
    return result

  def _act_planning(self, context, latent, proprio, noise, return_all: bool, timing: dict) -> dict:
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
    value = float(scores[chosen])
    result = {'actions': all_actions[chosen], 'future_image_predictions': futures, 'value_prediction': value,
              'value_predictions': value, 'chosen_candidate': chosen}
    if return_all:
      all_futures = [futures if q == chosen else futures_of(q) for q in range(len(scores))]
      by_depth = np.asarray(out['values_by_depth'], np.float64)
      actions_by_depth = np.asarray(out['actions_by_depth'])
      result.update(
          all_actions=all_actions, all_future_image_predictions=all_futures,
          all_value_predictions=scores.tolist(),
          all_actions_by_depth=[[inference.unnormalized_actions(a, self.statistics) for a in row]
                                for row in actions_by_depth],
          all_value_predictions_by_depth=by_depth.tolist())
      if self.planning.search_depth == 1:
        # The planner keeps only the first depth's future samples, so the per-depth images exist for depth 1.
        result['all_future_image_predictions_by_depth'] = [[f] for f in all_futures]
    timing['vae_decode_s'] = time.perf_counter() - t1
    return result

  def warmup(self, task: str | None = None) -> float:
    """Compiles every program with one dummy request (black images, the statistics' mid-range proprio);
    returns the seconds it took."""
    start = time.perf_counter()
    size = self.image_size
    mid = 0.5 * (self.statistics['proprio_min'] + self.statistics['proprio_max'])
    observation = {field: np.zeros((size, size, 3), np.uint8) for field in ALOHA_IMAGE_FIELDS}
    observation.update(proprio=mid, task_description=task or self.text_store.tasks[0])
    self.act(observation)
    seconds = time.perf_counter() - start
    log.info('warm-up (compilation) took %.1f s', seconds)
    return seconds


def _expect_kind(config: Mapping[str, Any], kind: str, path) -> None:
  if config.get('model') != kind:
    raise ValueError(f'{path} holds a converted {config.get("model")!r} model, expected {kind!r}')


def _encode_sequence(vae_params, camera_images: Mapping[str, Any], *, vae_cfg, layout, image_size: int):
  """The latent of the inference pixel sequence (policy_spec 2.3, inference column): one causal VAE pass."""
  items = inference.policy_video_items(layout, camera_images)
  video = vae_lib.policy_pixel_sequence(items, image_size, image_size)
  return vae_lib.encode(vae_params, vae_cfg, vae_lib.pixels_to_unit(video, vae_cfg.dtype))
