"""The policy factory: the weights and assets a served policy needs, from converted checkpoints or as a random
tiny model on a bundled sample.

`from_checkpoints` reads what `python -m cosmos_jax.convert dit|vae ...` writes (the statistics and text store
default to the assets stored next to the converted policy); `tiny` makes the 'tiny' DiT preset with random weights
and the bundled official width-8 Wan2.1 VAE, with the bundled sample's statistics and stand-in text store.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from cosmos_jax.convert import library as convert_lib
from cosmos_jax.convert import torch_io
from cosmos_jax.convert import vae_rules
from cosmos_jax.data import bundled
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.nn import dit as dit_lib
from cosmos_jax.nn import vae as vae_lib


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


def _expect_kind(config: Mapping[str, Any], kind: str, path) -> None:
  if config.get('model') != kind:
    raise ValueError(f'{path} holds a converted {config.get("model")!r} model, expected {kind!r}')


def from_checkpoints(dit_dir: str | os.PathLike, vae_dir: str | os.PathLike, *,
                     planning_dir: str | os.PathLike | None = None, statistics: str | os.PathLike | None = None,
                     text_store: str | os.PathLike | None = None, t5_dir: str | os.PathLike | None = None,
                     dit_overrides: Mapping[str, Any] | None = None) -> PolicyModels:
  """From converted checkpoints. `dit_overrides` replaces run-time DiT settings (e.g. {'dtype': 'bfloat16',
  'attention': 'cudnn'}) in both DiT configs; `t5_dir` is a converted T5 encoder (`convert t5`) for tasks missing
  from the text store."""
  dit_dir = pathlib.Path(dit_dir)
  dit_params, dit_cfg, dit_config = convert_lib.load_converted(dit_dir)
  _expect_kind(dit_config, 'dit', dit_dir)
  vae_params, vae_cfg, vae_config = convert_lib.load_converted(vae_dir)
  _expect_kind(vae_config, 'vae', vae_dir)
  overrides = dict(dit_overrides or {})
  dit_cfg = dataclasses.replace(dit_cfg, **overrides)
  assets = dit_dir / convert_lib.checkpoint.ASSETS
  statistics = pathlib.Path(statistics) if statistics else assets / convert_lib.STATISTICS_ASSET
  text_store = pathlib.Path(text_store) if text_store else assets / convert_lib.TEXT_STORE_ASSET
  if not statistics.exists():
    raise FileNotFoundError(f'no dataset statistics at {statistics} (convert the policy with --statistics, or give '
                            'the statistics file)')
  if not text_store.exists():
    raise FileNotFoundError(f'no text store at {text_store} (convert the policy with --text-store, or give the '
                            'text store directory)')
  planning_cfg, planning_params = None, None
  if planning_dir is not None:
    planning_dir = pathlib.Path(planning_dir)
    planning_params, planning_cfg, planning_config = convert_lib.load_converted(planning_dir)
    _expect_kind(planning_config, 'dit', planning_dir)
    planning_cfg = dataclasses.replace(planning_cfg, **overrides)
  return PolicyModels(dit_cfg=dit_cfg, dit_params=dit_params, vae_cfg=vae_cfg, vae_params=vae_params,
                      statistics=stats_lib.load_statistics(statistics), text_store=text_lib.TextStore.load(text_store),
                      name=dit_dir.name + (f' + planning {planning_dir.name}' if planning_dir else ''),
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
  from cosmos_jax.serve.protocols import libero as libero_protocol  # pylint: disable=g-import-not-at-top
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
  init = jax.jit(lambda k: dit_lib.init_params(dit_cfg, k))
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
