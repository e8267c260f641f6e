"""The one sharding helper: a (`data`, `fsdp`) device mesh, FSDP parameter rules, and batch shardings.

Parameters follow an ordered list of (path regex, rule) pairs, first match wins (big_vision style). The rule
`fsdp` shards the largest dimension divisible by the `fsdp` axis size (openpi style) — never the leading layer axis
of scanned block parameters, which `scan` slices — and replicates small arrays; `replicate` replicates. The batch
is split over both axes; planning candidates over `data`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp')
BATCH_AXES = ('data', 'fsdp')

# Arrays smaller than this many elements stay replicated: the all-gather would cost more than the memory saved.
MIN_FSDP_SIZE = 4096

# (regex over the '/'-joined parameter path, rule). `skip_leading` for stacked (scanned) block parameters.
DEFAULT_PARAM_RULES: tuple[tuple[str, str], ...] = (
    (r'(.*/)?blocks/.*', 'fsdp_skip_leading'),
    (r'.*', 'fsdp'),
)


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (`data`, `fsdp`) mesh over `devices` (default: all); -1 for `data` takes what `fsdp` leaves."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f'mesh: fsdp={fsdp} must be >= 1 and divide the {n} devices')
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(f'mesh: data={data} × fsdp={fsdp} = {data * fsdp} does not equal the {n} devices')
  return Mesh(np.asarray(devices).reshape(data, fsdp), MESH_AXES)


def fsdp_spec(shape: Sequence[int], fsdp_size: int, *, skip_leading: bool = False) -> P:
  """Shard the largest dimension divisible by `fsdp_size` over `fsdp`; replicate when none is or it is small."""
  if fsdp_size == 1 or math.prod(shape) < MIN_FSDP_SIZE:
    return P()
  candidates = [i for i in range(int(skip_leading), len(shape)) if shape[i] % fsdp_size == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: (shape[i], -i))
  spec = [None] * len(shape)
  spec[axis] = 'fsdp'
  return P(*spec)


def _spec_function(mesh: Mesh, rules: Sequence[tuple[str, str]]):
  """path, leaf -> PartitionSpec by the first rule whose regex matches the '/'-joined path."""
  compiled = [(re.compile(pattern), rule) for pattern, rule in rules]
  fsdp_size = mesh.shape['fsdp']

  def spec_for(path: str, leaf) -> P:
    shape = tuple(getattr(leaf, 'shape', ()))
    for pattern, rule in compiled:
      if pattern.fullmatch(path):
        if rule == 'replicate':
          return P()
        if rule in ('fsdp', 'fsdp_skip_leading'):
          return fsdp_spec(shape, fsdp_size, skip_leading=rule == 'fsdp_skip_leading')
        raise ValueError(f'sharding rule {rule!r} for {pattern.pattern!r} is not one of replicate/fsdp/fsdp_skip_leading')
    raise ValueError(f'no sharding rule matches parameter {path!r}')

  return spec_for


def param_specs(abstract_params, mesh: Mesh, rules: Sequence[tuple[str, str]] = DEFAULT_PARAM_RULES):
  """PartitionSpec tree for a params (or any params-shaped) tree, from the ordered rules."""
  spec_for = _spec_function(mesh, rules)

  def by_path(tree):
    if not isinstance(tree, dict):
      return jax.tree.map(lambda leaf: spec_for('', leaf), tree)
    flat = traverse_util.flatten_dict(tree, sep='/')
    return traverse_util.unflatten_dict({k: spec_for(k, v) for k, v in flat.items()}, sep='/')

  return by_path(abstract_params)


def tree_shardings(abstract_tree, mesh: Mesh, rules: Sequence[tuple[str, str]] = DEFAULT_PARAM_RULES):
  """NamedShardings for any pytree whose dict keys carry parameter paths (params, EMA, optimizer moments, LoRA
  {'base', 'adapters'} params).

  Each leaf is matched by the dict keys on its path, '/'-joined; the containers around them (train state fields,
  optax states, multi_transform's masks) add nothing. So the moments of a parameter follow the parameter, a LoRA
  adapter (`.../q_proj/lora_a`) follows its layer's rule, and scalars (counts) are replicated as small arrays.
  """
  spec_for = _spec_function(mesh, rules)

  def for_leaf(path, leaf):
    keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    return NamedSharding(mesh, spec_for('/'.join(keys), leaf))

  return jax.tree_util.tree_map_with_path(for_leaf, abstract_tree)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) axis split over `data` and `fsdp`; other axes replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
