"""A tiny random policy/planning model pair and one observation, shared by benchmarks/planning.py and the
planning tests (tests/policy/test_planning.py and its sharded subprocess)."""

import jax

from cosmos_jax.nn import dit
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import layout as layout_lib

LAYOUT = layout_lib.get_layout('aloha')
LATENT_SHAPE = (1, LAYOUT.state_t, 8, 8, 16)  # 1024 values per slot >= the 700 ALOHA action values
TEXT_TOKENS = 8


def tiny_model(seed: int):
  """Tiny DiT with every parameter perturbed (the official init zeroes the output layer, which would make the
  network's output irrelevant)."""
  cfg = dit.DiTConfig.preset('tiny')
  params = dit.init_params(cfg, jax.random.key(seed))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1000), len(leaves))
  leaves = [p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
  return diffusion.DiTNet(cfg), jax.tree.unflatten(tree, leaves)


def observation(seed: int = 0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  latent = jax.random.normal(k1, LATENT_SHAPE)
  proprio = jax.random.uniform(k2, (1, LAYOUT.proprio_dim), minval=-1, maxval=1)
  context = 0.3 * jax.random.normal(k3, (1, TEXT_TOKENS, dit.DiTConfig.preset('tiny').crossattn_emb_channels))
  return context, latent, proprio
