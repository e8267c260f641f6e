"""The tiny official-code models the policy golden cases were produced with (`dit_tiny`, `vae_small`), loaded once.

Golden arrays are channels-first (B, C, T, H, W); `to_last` / `to_first` convert at this test boundary.
"""

import functools

import numpy as np
from safetensors.numpy import load_file

from cosmos_jax.convert import dit_rules
from cosmos_jax.convert import vae_rules
from cosmos_jax.nn import dit
from cosmos_jax.nn import vae
from tests import parity


def to_last(x):
  """(B, C, T, H, W) -> (B, T, H, W, C)."""
  return np.moveaxis(np.asarray(x), 1, -1)


def to_first(x):
  """(B, T, H, W, C) -> (B, C, T, H, W)."""
  return np.moveaxis(np.asarray(x), -1, 1)


@functools.lru_cache(maxsize=None)
def tiny_dit():
  folder = parity.golden_dir() / 'dit_tiny'
  cfg = dit.DiTConfig.from_official(parity.load_config(folder)['constructor_kwargs'])
  return cfg, dit_rules.load_official(cfg, load_file(str(folder / 'state_dict.safetensors')), where=str(folder))


@functools.lru_cache(maxsize=None)
def small_vae():
  folder = parity.golden_dir() / 'vae_small'
  cfg = vae.VAEConfig.from_official(parity.load_config(folder)['constructor_args'])
  return cfg, vae_rules.load_official(cfg, load_file(str(folder / 'state_dict.safetensors')), where=str(folder))
