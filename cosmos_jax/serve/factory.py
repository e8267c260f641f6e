"""The policy factory: the weights and assets a served policy needs, from converted checkpoints or as a random
tiny model on a bundled sample.

`from_checkpoints` reads a policy checkpoint, a training run's or a converted one (the statistics and text store
default to the checkpoint's assets, the VAE to the one the run trained with); `tiny` makes the 'tiny' DiT preset
with random weights
and the bundled official width-8 Wan2.1 VAE, with the bundled sample's statistics and stand-in text store.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from cosmos_jax import program_cache
from cosmos_jax.convert import checkpoint as checkpoint_lib
from cosmos_jax.convert import library as convert_lib
from cosmos_jax.convert import torch_io
from cosmos_jax.convert import vae_rules
from cosmos_jax.data import bundled
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.nn import dit as dit_lib
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.serve.protocols import libero as libero_protocol


@dataclasses.dataclass(frozen=True)
class PolicyModels:
  """A policy DiT, the VAE, the dataset statistics and text store, and optionally a separate planning DiT."""

  dit_cfg: dit_lib.DiTConfig
  dit_params: Any
  vae_cfg: vae_lib.VAEConfig
  vae_params: Any
  statistics: Mapping[str, Any]
  text_store: text_lib.TextStore
  name: str
  planning_dit_cfg: dit_lib.DiTConfig | None = None
  planning_dit_params: Any = None
  text_encoder: text_lib.T5TextEncoder | None = None  # encodes tasks missing from the text store

  def __post_init__(self):
    if (self.planning_dit_cfg is None) != (self.planning_dit_params is None):
      raise ValueError('give both planning_dit_cfg and planning_dit_params, or neither')


def _open_policy(path: str | os.PathLike, step: int | None, what: str) -> checkpoint_lib.Checkpoint:
  return checkpoint_lib.open_checkpoint(path, step).require('dit', what=what)


def _dit(checkpoint: checkpoint_lib.Checkpoint, use_ema: bool | None, overrides: Mapping[str, Any],
         merge_lora: bool = True, lora_base: str | os.PathLike | None = None):
  params, cfg, _ = convert_lib.load_converted(checkpoint.directory, use_ema=use_ema, merge_lora=merge_lora,
                                              lora_base=lora_base)
  return params, dataclasses.replace(cfg, **overrides)


def _describe(checkpoint: checkpoint_lib.Checkpoint, use_ema: bool | None, merge_lora: bool = True) -> str:
  name = os.fspath(checkpoint.directory)
  if checkpoint.has_train_state:
    ema = checkpoint.params_item(use_ema) == checkpoint_lib.EMA_PARAMS
    name += f' (step {checkpoint.step}{", EMA" if ema else ""})'
  if checkpoint.is_lora:
    lora = checkpoint.lora_config()
    name += (f' LoRA rank {lora.rank} {"merged into" if merge_lora else "beside"} '
             f'{checkpoint.config["lora"]["base"]["path"]}')
  return name


def from_checkpoints(checkpoint: str | os.PathLike, vae: str | os.PathLike | None = None, *,
                     step: int | None = None, use_ema: bool | None = None,
                     planning_dir: str | os.PathLike | None = None, planning_step: int | None = None,
                     planning_use_ema: bool | None = None, statistics: str | os.PathLike | None = None,
                     text_store: str | os.PathLike | None = None, t5_dir: str | os.PathLike | None = None,
                     dit_overrides: Mapping[str, Any] | None = None, layout: str | None = None,
                     merge_lora: bool = True, lora_base: str | os.PathLike | None = None) -> PolicyModels:
  """From a policy checkpoint: a training workdir (its latest step, or `step`) or a checkpoint directory (a
  training step, or `python -m cosmos_jax.convert dit --layout=...`), read by cosmos_jax.convert.checkpoint.

  The EMA parameters are used when the run kept an EMA (`use_ema` chooses). `vae` defaults to the VAE the run
  trained with; the statistics and text store to the checkpoint's assets. `planning_dir` (+ `planning_step`,
  `planning_use_ema`) is a second checkpoint for the planning model. `dit_overrides` replaces run-time DiT settings
  (e.g. {'dtype': 'bfloat16', 'attention': 'cudnn'}) in both DiT configs; `t5_dir` is a converted T5 encoder
  (`convert t5`) for tasks missing from the text store; `layout`, when given, must be the checkpoint's. A LoRA
  checkpoint's adapters are merged into their base at load (`merge_lora`, the fast path), or kept beside its kernels;
  `lora_base` is that base at another path (its content hash is checked either way)."""
  policy = _open_policy(checkpoint, step, 'the policy checkpoint')
  policy.require('dit', what='the policy checkpoint', policy=not (statistics and text_store))
  if layout and policy.layout and policy.layout != layout:
    raise checkpoint_lib.CheckpointError(f'{policy.directory} is a {policy.layout!r} policy; this command serves '
                                         f'the {layout!r} layout')
  overrides = dict(dit_overrides or {})
  dit_params, dit_cfg = _dit(policy, use_ema, overrides, merge_lora, lora_base)
  vae_params, vae_cfg = policy.load_vae(vae)
  planning_cfg, planning_params, planning = None, None, None
  if planning_dir is not None:
    planning = _open_policy(planning_dir, planning_step, 'the planning checkpoint')
    planning_params, planning_cfg = _dit(planning, planning_use_ema, overrides)
  return PolicyModels(
      dit_cfg=dit_cfg, dit_params=dit_params, vae_cfg=vae_cfg, vae_params=vae_params,
      statistics=stats_lib.load_statistics(statistics) if statistics else policy.statistics(),
      text_store=text_lib.TextStore.load(text_store) if text_store else policy.text_store(),
      name=_describe(policy, use_ema, merge_lora) + (f' + planning {_describe(planning, planning_use_ema)}'
                                                     if planning else ''),
      planning_dit_cfg=planning_cfg, planning_dit_params=planning_params,
      text_encoder=text_lib.T5TextEncoder.load(t5_dir) if t5_dir else None)


def _perturbed(params, seed: int, scale: float = 0.05):
  """Random-init DiT params with every leaf perturbed: the official init zeroes the output layer, which would
  make the tiny model's output independent of its input. Host numpy noise (no per-shape compilation)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: np.asarray(p) + (scale * rng.standard_normal(p.shape)).astype(p.dtype), params)


# Stand-in tasks of the tiny RoboCasa policy (the environment's task language is generated per scene).
ROBOCASA_STAND_IN_TASKS = ('open the drawer', 'close the drawer', 'turn on the sink faucet')
# Benchmarks whose tiny policy answers the simulator's own tasks with stand-in assets: their bundled training
# samples (data/make_tiny_samples.py) hold one stand-in task and ALOHA-derived statistics.
STAND_IN_BENCHMARKS = ('libero', 'robocasa')


def stand_in_assets(benchmark: str) -> tuple[dict[str, np.ndarray], text_lib.TextStore]:
  """Statistics and a stand-in text store for a tiny LIBERO or RoboCasa policy: actions in the
  simulators' normalised range [-1, 1]; proprio = gripper qpos (2), end-effector position (3), quaternion (4) over
  plausible workspace ranges. Only the tiny policy uses these; a real policy brings its dataset's statistics."""
  tasks = {'libero': libero_protocol.ALL_TASKS, 'robocasa': ROBOCASA_STAND_IN_TASKS}
  if benchmark not in tasks:
    raise ValueError(f'no bundled sample or stand-in assets for {benchmark!r}; known: '
                     f'{sorted(set(bundled.SAMPLE_DIRS) | set(tasks))}')
  ranges = {'actions': (np.full(7, -1.0), np.full(7, 1.0)),
            'proprio': (np.array([-0.05, -0.05, -0.5, -0.5, 0.0, -1, -1, -1, -1]),
                        np.array([0.05, 0.05, 0.5, 0.5, 1.5, 1, 1, 1, 1]))}
  statistics = {}
  for key, (lo, hi) in ranges.items():
    statistics.update({f'{key}_min': lo, f'{key}_max': hi, f'{key}_mean': (lo + hi) / 2,
                       f'{key}_median': (lo + hi) / 2, f'{key}_std': (hi - lo) / 4})
  return statistics, text_lib.stand_in_store(tasks[benchmark])


def tiny(seed: int = 0, *, benchmark: str = 'aloha', with_planning_model: bool = False,
         t5_dir: str | os.PathLike | None = None) -> PolicyModels:
  """A random tiny policy on `benchmark`'s bundled sample (tests, demos, CPU benchmarks): the 'tiny' DiT preset
  with 1024-wide text tokens, the bundled official width-8 Wan2.1 VAE (random weights), the sample's statistics
  and stand-in text store. `seed` draws the weights; `with_planning_model` adds a second random DiT; `t5_dir` as
  in `from_checkpoints`."""
  dit_cfg = dit_lib.DiTConfig.preset('tiny', crossattn_emb_channels=text_lib.EMBED_DIM)
  init = program_cache.cached_jit(functools.partial(dit_lib.init_params, dit_cfg))  # kept for warm starts
  vae_cfg = vae_lib.VAEConfig(base_dim=8)
  with torch_io.open_state_dict(vae_lib.TINY_VAE_PATH) as state_dict:
    vae_params = vae_rules.load_official(vae_cfg, state_dict, where=str(vae_lib.TINY_VAE_PATH))
  if benchmark not in STAND_IN_BENCHMARKS:
    sample = bundled.sample_dir(benchmark)
    statistics = stats_lib.load_statistics(sample / stats_lib.STATISTICS_FILENAME)
    text_store = text_lib.TextStore.load(bundled.text_store_dir(benchmark))
  else:  # LIBERO, RoboCasa: stand-in statistics and text store of the benchmark's tasks
    statistics, text_store = stand_in_assets(benchmark)
  planning = {}
  if with_planning_model:
    planning = dict(planning_dit_cfg=dit_cfg,
                    planning_dit_params=_perturbed(init(jax.random.key(seed + 1)), seed + 2000))
  return PolicyModels(dit_cfg=dit_cfg, dit_params=_perturbed(init(jax.random.key(seed)), seed + 1000),
                      vae_cfg=vae_cfg, vae_params=vae_params,
                      statistics=statistics, text_store=text_store,
                      name=f'tiny random policy (weights seed {seed})',
                      text_encoder=text_lib.T5TextEncoder.load(t5_dir) if t5_dir else None, **planning)
