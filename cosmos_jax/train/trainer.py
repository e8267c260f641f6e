"""The training loop behind `python -m cosmos_jax.train`: build, restore or initialise, step, log, checkpoint."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from cosmos_jax.convert import checkpoint as checkpoint_layout
from cosmos_jax.data import simulator
from cosmos_jax.data import text as text_lib
from cosmos_jax.nn import dit as dit_lib
from cosmos_jax.nn import lora as lora_lib
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.train import checkpoint as checkpoint_lib
from cosmos_jax.train import data as train_data
from cosmos_jax.train import latent_cache as latent_cache_lib
from cosmos_jax.train import metrics as metrics_lib
from cosmos_jax.train import optim
from cosmos_jax.train import sharding as sharding_lib
from cosmos_jax.train import state as state_lib

log = logging.getLogger(__name__)


def model_configs(config: ml_collections.ConfigDict) -> tuple[dit_lib.DiTConfig, vae_lib.VAEConfig]:
  m = config.model
  dit_cfg = dit_lib.DiTConfig.preset(m.dit_preset, dtype=m.dtype, param_dtype=m.param_dtype, attention=m.attention,
                                     remat_policy=m.remat_policy,
                                     # T5's 512-token context, trimmed or not (data.trim_text_padding)
                                     text_context_tokens=text_lib.NUM_TOKENS,
                                     **m.dit_overrides.to_dict())
  vae_dtype = jnp.dtype(m.vae_dtype)
  vae_cfg = vae_lib.VAEConfig(base_dim=m.vae_base_dim, dtype=vae_dtype,
                              latent_stats='bf16' if vae_dtype == jnp.bfloat16 else 'fp32')
  return dit_cfg, vae_cfg


def lora_config(config: ml_collections.ConfigDict) -> lora_lib.LoRAConfig | None:
  """The LoRA adapters of a `lora` run (None: full fine-tuning; also for configs saved before LoRA existed)."""
  section = config.get('lora')
  if section is None or not section.enabled:
    return None
  if section.base_dtype not in ('float32', 'bfloat16'):
    raise ValueError(f"lora.base_dtype must be 'float32' or 'bfloat16', got {section.base_dtype!r}")
  return lora_lib.LoRAConfig(targets=tuple(section.targets), rank=int(section.rank), alpha=float(section.alpha),
                             dropout=float(section.dropout))


def step_config(config: ml_collections.ConfigDict) -> state_lib.StepConfig:
  dit_cfg, vae_cfg = model_configs(config)
  return state_lib.StepConfig(dit=dit_cfg, vae=vae_cfg, layout=layout_lib.get_layout(config.layout),
                              diffusion=diffusion.DiffusionConfig(**config.diffusion.to_dict()),
                              ema_decay=float(config.optim.ema_decay),
                              grad_accum_steps=int(config.optim.grad_accum_steps), lora=lora_config(config))


def make_optimizer(config: ml_collections.ConfigDict):
  """The official recipe; for a LoRA run, on the adapters only (optim.freeze_base)."""
  tx = optim.make_optimizer(config.optim)
  return optim.freeze_base(tx) if lora_config(config) is not None else tx


def _check_path(path: str, what: str) -> str:
  if not epath.Path(path).exists():  # local, or a bucket URL
    raise FileNotFoundError(f'{what} {path!r} does not exist (the official trainer would silently train from '
                            'scratch here; cosmos_jax refuses: fix the path, or set init.from_scratch=True)')
  return path


def _load_vae(path: str, vae_cfg: vae_lib.VAEConfig):
  """A converted VAE checkpoint, or an official state_dict (.safetensors / .pth / .pt) read directly."""
  return checkpoint_layout.load_vae(_check_path(path, 'init.vae_checkpoint'), vae_cfg)[0]


def _load_converted(path: str, what: str):
  """The parameters of a checkpoint: converted, or a training workdir (its latest step, EMA when kept)."""
  return checkpoint_layout.open_checkpoint(_check_path(path, what)).load_params()


def initial_dit_params(config, dit_cfg: dit_lib.DiTConfig):
  """The DiT to start from: an official file, a converted checkpoint or another run's workdir (its latest step,
  EMA parameters when kept), or fresh (`init.from_scratch`)."""
  init = config.init
  if init.dit_checkpoint:
    return _load_dit(init.dit_checkpoint, dit_cfg, bool(init.get('ema_weights', True)))
  if init.from_scratch:
    return jax.jit(lambda k: dit_lib.init_params(dit_cfg, k))(jax.random.fold_in(jax.random.key(config.seed), 0))
  raise ValueError('no DiT initialisation: set init.dit_checkpoint to a converted checkpoint '
                   '(python -m cosmos_jax.convert dit ...) or init.from_scratch=True')


def load_vae_params(config, vae_cfg: vae_lib.VAEConfig):
  """The frozen VAE: it is never trained here, so it always comes from a checkpoint."""
  if not config.init.vae_checkpoint:
    raise ValueError('no VAE weights: set init.vae_checkpoint to a converted Wan2.1 VAE '
                     '(python -m cosmos_jax.convert vae ...) or an official state_dict file')
  vae_params = _load_vae(config.init.vae_checkpoint, vae_cfg)
  return jax.tree.map(lambda p: jnp.asarray(p, vae_cfg.dtype), vae_params)


def _load_dit(path: str, dit_cfg: dit_lib.DiTConfig, ema_weights: bool):
  """The initial DiT: an official state_dict file (.pt / .pth / .safetensors) read directly, taking its EMA copy
  (`net_ema.`) when it has one and `ema_weights` (the official load_ema_to_reg), or a converted checkpoint."""
  return _load_dit_and_reference(path, dit_cfg, ema_weights)[0]


def _load_dit_and_reference(path: str, dit_cfg: dit_lib.DiTConfig, ema_weights: bool):
  """(`_load_dit`'s params, the `checkpoint_layout.dit_reference` naming them)."""
  reference = checkpoint_layout.dit_reference(_check_path(path, 'init.dit_checkpoint'), ema_weights=ema_weights)
  if path.endswith(checkpoint_layout.OFFICIAL_SUFFIXES):
    log.info('init.dit_checkpoint %s: %s weights', path, 'EMA' if reference['use_ema'] else 'regular')
  else:
    checkpoint = checkpoint_layout.open_checkpoint(path)
    if ema_weights and (checkpoint.config.get('source') or {}).get('prefix') == 'net.':
      log.warning('init.dit_checkpoint %s was converted from the regular (net.) weights; the official run starts '
                  'from the EMA weights of its base checkpoint (convert it with `convert dit --ema`, or give the '
                  'official file as init.dit_checkpoint)', path)
  return checkpoint_layout.load_dit(reference, dit_cfg), reference


def lora_base(config, dit_cfg: dit_lib.DiTConfig, saved_reference: dict | None = None):
  """(base params, base reference with its content hash) of a LoRA run: init.dit_checkpoint at the start, or on
  resume the base the checkpoint names (its hash checked)."""
  if saved_reference is not None:
    base = checkpoint_layout.load_dit(saved_reference, dit_cfg, expect_sha256=saved_reference['sha256'],
                                      what='the LoRA base of the resumed run')
    return base, saved_reference
  if not config.init.dit_checkpoint:
    raise ValueError('LoRA (lora.enabled) adapts a trained DiT: set init.dit_checkpoint to the base (an official '
                     'file, a converted checkpoint or a training workdir)')
  base, reference = _load_dit_and_reference(config.init.dit_checkpoint, dit_cfg,
                                            bool(config.init.get('ema_weights', True)))
  return base, {**reference, 'sha256': checkpoint_layout.params_sha256(base)}


def initial_params(config, dit_cfg: dit_lib.DiTConfig, vae_cfg: vae_lib.VAEConfig) -> tuple[Any, Any]:
  """(DiT params, VAE params) of a fresh run."""
  return initial_dit_params(config, dit_cfg), load_vae_params(config, vae_cfg)


def make_latent_cache(cfg: state_lib.StepConfig, vae_params, max_entries: int) -> latent_cache_lib.LatentCache:
  """A host cache of this process's samples' latents, encoded on its first local device by the step's encoder."""
  encode = jax.jit(functools.partial(state_lib.encode_slot_frames, vae_cfg=cfg.vae))
  local_params = jax.device_put(vae_params, jax.local_devices()[0])
  return latent_cache_lib.LatentCache(lambda frames: jax.device_get(encode(local_params, frames=frames)),
                                      max_entries)


def abstract_train_state(config, cfg: state_lib.StepConfig, tx):
  """The train state of `config` as `jax.ShapeDtypeStruct`s (nothing allocated; the 2B model works)."""
  abstract_params = jax.eval_shape(lambda k: dit_lib.init_params(cfg.dit, k), jax.random.key(0))
  if cfg.lora is not None:
    abstract_params = state_lib.lora_params(
        abstract_params, jax.eval_shape(lambda k: lora_lib.init_adapters(k, abstract_params, cfg.lora),
                                        jax.random.key(0)))
  return jax.eval_shape(lambda p: state_lib.init_state(p, tx, config.seed, ema=cfg.ema_decay > 0,
                                                        base_dtype=_base_dtype(config)), abstract_params)


def _base_dtype(config) -> str:
  return config.lora.base_dtype if lora_config(config) is not None else 'float32'


def initial_lora_params(config, cfg: state_lib.StepConfig, base):
  """The LoRA params at step 0: the base and fresh adapters (B = 0: the model equals the base)."""
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  return state_lib.lora_params(base, jax.jit(lambda k: lora_lib.init_adapters(k, base, cfg.lora))(key))


def _state_signature(config_dict: dict) -> dict:
  config = ml_collections.ConfigDict(config_dict)
  abstract = abstract_train_state(config, step_config(config), make_optimizer(config))
  return {jax.tree_util.keystr(path): (leaf.shape, leaf.dtype)
          for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)}


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: tree}


def _with_value(tree: dict, dotted: str, value: Any, present: bool) -> dict:
  tree = json.loads(json.dumps(tree))
  *parents, leaf = dotted.split('.')
  node = tree
  for key in parents:
    node = node.setdefault(key, {})
  if present:
    node[leaf] = value
  else:
    node.pop(leaf, None)
  return tree


# Config sections that build the train state (the model and the optimiser); the others (data, logging, run length,
# checkpointing) may change on resume.
_STATE_SECTIONS = ('model.', 'optim.', 'lora.', 'layout', 'seed')


def config_changes_on_resume(saved: dict, config: ml_collections.ConfigDict) -> tuple[dict, dict]:
  """({field: (checkpoint value, this run's value)} of the fields that change the train state's shapes or
  dtypes, and of the other changed fields). Each changed field is tried alone on this run's config."""
  current = json.loads(config.to_json_best_effort())
  flat_saved, flat_current = _flatten(saved), _flatten(current)
  missing = object()
  changed = {k: (flat_saved.get(k, missing), flat_current.get(k, missing))
             for k in sorted(set(flat_saved) | set(flat_current))
             if flat_saved.get(k, missing) != flat_current.get(k, missing)}
  shaping, other = {}, {}
  reference = None
  for key, (then, now) in changed.items():
    shown = tuple('(not set)' if v is missing else v for v in (then, now))
    if not key.startswith(_STATE_SECTIONS):
      other[key] = shown
      continue
    reference = reference or _state_signature(current)
    try:
      differs = _state_signature(_with_value(current, key, then, then is not missing)) != reference
    except (ValueError, TypeError, KeyError, AttributeError):
      differs = True  # the checkpoint's value does not even build a state here
    (shaping if differs else other)[key] = shown
  return shaping, other


def _check_resumable(checkpoint: checkpoint_layout.Checkpoint, config) -> None:
  saved = checkpoint.train_config
  if saved is None:
    raise checkpoint_layout.CheckpointError(f'{checkpoint.directory} holds no training config; it is not a step of '
                                            'a training run and cannot be resumed')
  shaping, other = config_changes_on_resume(saved, config)
  if shaping:
    details = '; '.join(f'{k}: checkpoint {a}, this run {b}' for k, (a, b) in shaping.items())
    raise ValueError(f'cannot resume from {checkpoint.directory}: this run\'s config differs from the checkpoint\'s '
                     f'in a way that changes the train state\'s shapes: {details}. Resume with the checkpoint\'s '
                     'values, or start a new --workdir (init.dit_checkpoint may point at this run).')
  if other:
    print('resuming with changed config: ' + '; '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in other.items()),
          flush=True)


@dataclasses.dataclass
class RunResult:
  losses: dict[int, float]
  final_step: int


def train(config: ml_collections.ConfigDict, workdir: str, *, resume: bool = False,
          stop_after: int | None = None) -> RunResult:
  """Trains to `config.total_steps` (or `stop_after` steps in this call). Returns the per-step losses seen."""
  workdir = checkpoint_lib.workdir_path(workdir)
  process = jax.process_index()
  if process == 0:
    workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding_lib.make_mesh(config.mesh.data, min(config.mesh.fsdp, jax.device_count()))
  cfg = step_config(config)
  tx = make_optimizer(config)

  data = train_data.make_training_data(config, cfg.layout, process_index=process, process_count=jax.process_count(),
                                      assets_dir=os.fspath(workdir / 'assets'))
  manager = checkpoint_lib.CheckpointManager(
      workdir / checkpoint_layout.WORKDIR_CHECKPOINTS, max_to_keep=config.checkpoint.max_to_keep,
      keep_period=config.checkpoint.keep_period or None, save_interval_steps=config.checkpoint.every_steps,
      async_save=config.checkpoint.async_save)

  abstract_state = abstract_train_state(config, cfg, tx)
  vae_params = load_vae_params(config, cfg.vae)
  if config.data.get('latent_cache', 0):
    data.attach_latent_cache(make_latent_cache(cfg, vae_params, config.data.latent_cache), cfg.vae.z_dim)
  abstract_batch = data.abstract_global_batch()
  step_fn, state_shardings = state_lib.jit_train_step(cfg, tx, mesh, abstract_state,
                                                      jax.eval_shape(lambda p: p, vae_params), abstract_batch)
  vae_params = jax.device_put(vae_params, sharding_lib.tree_shardings(vae_params, mesh))

  start = manager.latest_step() if resume else None
  if resume and start is None:
    print(f'--resume: no checkpoint in {manager.directory}; starting at step 0', flush=True)
  base_reference = None
  if start is not None:
    saved = checkpoint_layout.open_checkpoint(manager.directory, start)
    _check_resumable(saved, config)
    target = checkpoint_lib.abstract_with_shardings(abstract_state, state_shardings)
    base_params = None
    if cfg.lora is not None:
      base, base_reference = lora_base(config, cfg.dit, saved.config['lora']['base'])
      base_params = jax.device_put(jax.tree.map(lambda p, t: np.asarray(p, t.dtype), base, target.params['base']),
                                   state_shardings.params['base'])
    state = manager.restore(start, target, data_iter=data.iterator, base_params=base_params)
    print(f'resumed from step {start}', flush=True)
  else:
    if not resume and manager.latest_step() is not None:
      raise FileExistsError(f'{manager.directory} already holds checkpoints (latest step {manager.latest_step()}); '
                            'pass --resume to continue, or choose another --workdir')
    init = jax.jit(lambda p: state_lib.init_state(p, tx, config.seed, ema=cfg.ema_decay > 0,
                                                  base_dtype=_base_dtype(config)),
                   out_shardings=state_shardings)
    if cfg.lora is not None:
      base, base_reference = lora_base(config, cfg.dit)
      state = init(initial_lora_params(config, cfg, base))
    else:
      state = init(initial_dit_params(config, cfg.dit))
  lora_description = (None if cfg.lora is None else {'config': cfg.lora.to_dict(), 'base': base_reference})

  train_config = json.loads(config.to_json_best_effort())
  vae_source = config.init.vae_checkpoint
  vae_source = vae_source if '://' in vae_source else os.path.abspath(vae_source)

  # Simulated demonstrations' demos.json travels with the checkpoint: the closed-loop evaluation checks that the
  # simulator still renders the cameras the policy was trained on.
  demos_metadata = os.path.join(config.data.dataset_dir, simulator.DEMOS_METADATA_FILENAME)
  copied = {simulator.DEMOS_METADATA_FILENAME: demos_metadata} if os.path.isfile(demos_metadata) else {}

  def assets_writer(step: int):
    description = checkpoint_layout.describe(
        'dit', cfg.dit, layout=config.layout, vae_checkpoint=vae_source, vae_config=cfg.vae, step=step,
        ema=cfg.ema_decay > 0,
        train_config=train_config, assets={n: n for n in (checkpoint_layout.STATISTICS_ASSET,
                                                          checkpoint_layout.TEXT_STORE_ASSET, *copied)},
        lora=lora_description)
    return lambda directory: checkpoint_layout.write_assets(
        directory, description, files=copied, statistics=data.dataset.stats,
        text_store=data.text_store)

  logger = metrics_lib.Logger(workdir, total_steps=config.total_steps, enabled=process == 0,
                              flops_per_step=metrics_lib.train_flops_per_step(cfg, data.global_batch_size, data),
                              device_peak_tflops=config.log.device_peak_tflops)
  losses: dict[int, float] = {}
  step = int(state.step)  # tracked on the host from here on: reading state.step would sync every step
  end = config.total_steps if stop_after is None else min(config.total_steps, step + stop_after)
  schedule = optim.learning_rate_schedule(config.optim)
  log_every = max(1, config.log.every_steps)
  interval_start, interval_steps = time.perf_counter(), 0
  try:
    while step < end:
      batch = data.next_global_batch(mesh)
      state, metrics = step_fn(state, vae_params, batch)
      step += 1
      interval_steps += 1
      if step % log_every == 0 or step == end:
        # The only per-interval host sync: steps between logs are dispatched asynchronously.
        metrics = jax.device_get(metrics)
        now = time.perf_counter()
        step_time = (now - interval_start) / interval_steps  # wall time per step, data loading included
        interval_start, interval_steps = now, 0
        losses[step] = float(metrics['loss'])
        if data.latent_cache is not None:
          metrics = {**metrics, 'latent_cache_hit_rate': data.latent_cache.hit_rate()}
        logger.scalars(step, metrics, step_time=step_time, lr=float(schedule(step - 1)))
      if config.log.image_every_steps and step % config.log.image_every_steps == 0:
        prediction = metrics_lib.predict_for_logging(state_lib.model_params(state.params, cfg.lora), vae_params,
                                                     batch, cfg, config.log.sample_steps, mesh)
        logger.image(step, 'predictions/current_true_predicted', metrics_lib.prediction_grid(prediction))
        logger.scalars_only(step, {'predicted_value': float(prediction['value'])})
      if manager.should_save(step) or step == end:
        # Every logged step up to a checkpoint is durable before the checkpoint is (a bucket has no appends).
        logger.flush()
        manager.save(step, state, data_iter=data.iterator, assets=assets_writer(step), force=step == end)
  finally:
    manager.wait_until_finished()
    manager.close()
    logger.close()
  return RunResult(losses=losses, final_step=step)
