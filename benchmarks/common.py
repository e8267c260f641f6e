"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def random_params(abstract, seed: int = 0, scale: float = 0.02):
  """Random parameters of the shapes and dtypes in `abstract` (a tree of ShapeDtypeStructs) for timing runs,
  where the values do not matter: one random vector sliced for every leaf, so a 2B model costs one small program
  instead of the model's own initialiser (one RNG kernel per parameter: slow to compile, on CPU especially)."""
  leaves, tree = jax.tree.flatten(abstract)
  largest = max(math.prod(leaf.shape) for leaf in leaves)

  @jax.jit
  def make(key):
    base = jax.random.normal(key, (largest,), jnp.float32) * scale
    return [base[:math.prod(leaf.shape)].reshape(leaf.shape).astype(leaf.dtype) for leaf in leaves]

  return jax.tree.unflatten(tree, make(jax.random.key(seed)))
