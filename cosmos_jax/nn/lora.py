"""LoRA adapters on the DiT's linear layers: choosing the layers, initialising, merging and the unmerged forward, as
pure functions of the base parameters and the adapter parameters.

An adapter of a bias-free linear layer with kernel W [..., in, out] (scanned blocks carry a leading layer axis) is
A [..., in, r] and B [..., r, out]; the adapted layer computes x·W + x·A·B·alpha/r (Hu et al. 2021). In PEFT's
torch layout (weight = Wᵀ, lora_A.weight = Aᵀ [r, in], lora_B.weight = Bᵀ [out, r]) the merged weight is
weight + lora_B·lora_A·alpha/r. A is drawn as PEFT's default (kaiming-uniform, a=√5: U(±1/√in)); B starts at zero,
so an adapted model equals its base exactly until B moves.

Layers are chosen like PEFT's `target_modules`: a pattern matches a linear layer whose dotted module name (the
official names without block indices, e.g. `blocks.self_attn.q_proj`, `blocks.mlp.layer1`) equals it or ends with
`.<pattern>`. The default is Cosmos-Predict2's robotics post-training set (q/k/v/output projections of self- and
cross-attention and both MLP layers), rank 24, alpha 24.

The adapter tree uses the base's module paths, each adapted module holding {'lora_a', 'lora_b'}, so the one
sharding helper (cosmos_jax/train/sharding.py) places an adapter by the same rule as its layer. `unmerged` puts the
adapters beside the kernels, where the DiT's dense layer applies them (nn/dit.py:_Dense); `merge` folds them in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

# Cosmos-Predict2 Video2World LoRA post-training (robotics recipe): target modules, rank and alpha.
DEFAULT_TARGETS = ('q_proj', 'k_proj', 'v_proj', 'output_proj', 'mlp.layer1', 'mlp.layer2')
DEFAULT_RANK = 24
DEFAULT_ALPHA = 24.0
ADAPTER_LEAVES = ('lora_a', 'lora_b')
KERNEL = 'kernel'


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  targets: tuple[str, ...] = DEFAULT_TARGETS  # PEFT-style module-name suffixes
  rank: int = DEFAULT_RANK
  alpha: float = DEFAULT_ALPHA
  dropout: float = 0.0

  def __post_init__(self):
    object.__setattr__(self, 'targets', tuple(self.targets))
    if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
      raise ValueError(f'LoRA targets must be non-empty module-name patterns, got {self.targets!r}')
    if int(self.rank) != self.rank or self.rank < 1:
      raise ValueError(f'LoRA rank must be a positive integer, got {self.rank!r}')
    if not self.alpha > 0:
      raise ValueError(f'LoRA alpha must be positive, got {self.alpha!r}')
    if self.dropout != 0:
      # The Predict2 robotics recipe trains without adapter dropout; a rate needs an RNG stream through the DiT.
      raise ValueError(f'LoRA dropout {self.dropout!r} is not supported (only 0, the Predict2 recipe)')

  @property
  def scale(self) -> float:
    return float(self.alpha) / int(self.rank)

  def to_dict(self) -> dict:
    return {'targets': list(self.targets), 'rank': int(self.rank), 'alpha': float(self.alpha),
            'dropout': float(self.dropout)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> 'LoRAConfig':
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f'LoRA config has unknown fields {unknown}')
    return cls(**{k: tuple(v) if k == 'targets' else v for k, v in d.items()})


def _matches(module_name: str, pattern: str) -> bool:
  return module_name == pattern or module_name.endswith('.' + pattern)


def target_modules(params, cfg: LoRAConfig) -> list[tuple[str, ...]]:
  """Paths (tuples of keys) of the modules whose `kernel` a pattern of `cfg.targets` selects, in tree order.
  Raises ValueError naming any pattern that selects nothing (a typo would silently train less)."""
  modules = [path[:-1] for path in traverse_util.flatten_dict(params) if path[-1] == KERNEL]
  chosen, used = [], set()
  for module in modules:
    hits = [p for p in cfg.targets if _matches('.'.join(module), p)]
    if hits:
      chosen.append(module)
      used.update(hits)
  unused = [p for p in cfg.targets if p not in used]
  if unused:
    names = sorted('.'.join(m) for m in modules)
    raise ValueError(f'LoRA target patterns {unused} match no linear layer; layers: {names}')
  return chosen


def init_adapters(key: jax.Array, params, cfg: LoRAConfig, dtype=jnp.float32) -> dict:
  """Fresh adapters (A random, B zero) for the layers `cfg` selects in `params` (arrays or ShapeDtypeStructs)."""
  flat = traverse_util.flatten_dict(params)
  adapters = {}
  for i, module in enumerate(target_modules(params, cfg)):
    *lead, fan_in, fan_out = flat[module + (KERNEL,)].shape
    bound = 1.0 / math.sqrt(fan_in)
    adapters[module + ('lora_a',)] = jax.random.uniform(jax.random.fold_in(key, i), (*lead, fan_in, cfg.rank), dtype,
                                                        -bound, bound)
    adapters[module + ('lora_b',)] = jnp.zeros((*lead, cfg.rank, fan_out), dtype)
  return traverse_util.unflatten_dict(adapters)


def check_adapters(params, adapters, cfg: LoRAConfig, where: str = 'adapters') -> None:
  """Raises ValueError unless `adapters` are exactly the layers `cfg` selects in `params`, with matching shapes."""
  flat_params = traverse_util.flatten_dict(params)
  flat = traverse_util.flatten_dict(adapters)
  want = {m + (leaf,) for m in target_modules(params, cfg) for leaf in ADAPTER_LEAVES}
  missing = sorted('/'.join(p) for p in want - set(flat))
  unexpected = sorted('/'.join(p) for p in set(flat) - want)
  misshaped = []
  for path in sorted(want & set(flat)):
    *lead, fan_in, fan_out = flat_params[path[:-1] + (KERNEL,)].shape
    expected = (*lead, fan_in, cfg.rank) if path[-1] == 'lora_a' else (*lead, cfg.rank, fan_out)
    if tuple(flat[path].shape) != expected:
      misshaped.append(f'{"/".join(path)}: got {tuple(flat[path].shape)}, expected {expected}')
  if missing or unexpected or misshaped:
    raise ValueError(f'{where} do not fit the base (rank {cfg.rank}, targets {list(cfg.targets)}): missing '
                     f'{missing[:8]}, unexpected {unexpected[:8]}, mis-shaped {misshaped[:8]}')


def delta(lora_a, lora_b, scale: float):
  """A·B·scale [..., in, out] in float32 (the kernel-layout weight update)."""
  return jnp.einsum('...ir,...ro->...io', jnp.asarray(lora_a, jnp.float32), jnp.asarray(lora_b, jnp.float32),
                    precision=jax.lax.Precision.HIGHEST) * scale


def merge(params, adapters, cfg: LoRAConfig):
  """The base params with every adapted kernel replaced by W + A·B·alpha/r (summed in float32, stored in W's
  dtype); a model with these params equals the unmerged one up to rounding."""
  check_adapters(params, adapters, cfg)
  flat = dict(traverse_util.flatten_dict(params))
  flat_adapters = traverse_util.flatten_dict(adapters)
  for module in target_modules(params, cfg):
    kernel = flat[module + (KERNEL,)]
    update = delta(flat_adapters[module + ('lora_a',)], flat_adapters[module + ('lora_b',)], cfg.scale)
    flat[module + (KERNEL,)] = (jnp.asarray(kernel, jnp.float32) + update).astype(kernel.dtype)
  return traverse_util.unflatten_dict(flat)


def unmerged(params, adapters, cfg: LoRAConfig):
  """The base params with each adapter beside its kernel ({'kernel', 'lora_a', 'lora_b'·alpha/r}): the tree the
  DiT forward takes to run the adapted model without forming merged weights. Differentiable in `adapters`."""
  check_adapters(params, adapters, cfg)
  flat = dict(traverse_util.flatten_dict(params))
  for path, value in traverse_util.flatten_dict(adapters).items():
    flat[path] = value * jnp.asarray(cfg.scale, value.dtype) if path[-1] == 'lora_b' else value
  return traverse_util.unflatten_dict(flat)


def count(adapters) -> int:
  """Number of adapter parameters."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(adapters))


def target_names(params, cfg: LoRAConfig) -> Sequence[str]:
  return ['.'.join(m) for m in target_modules(params, cfg)]
