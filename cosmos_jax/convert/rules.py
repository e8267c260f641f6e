"""The one mechanism that maps official PyTorch state_dict names onto our parameter trees, and back.

Every model (DiT, VAE) describes its weights as a *rule table*: a list of `Rule`s, each naming one official
tensor (or one per layer, for parameters we stack along a leading layer axis for `scan`), the '/'-joined path of
the leaf in our Flax params tree, and a named transform between the two layouts. The loaders of the model modules,
the checkpoint converter and the reverse exporter all go through `load_state_dict` / `export_state_dict` here,
so a name or layout fact lives in exactly one place.

`state_dict` arguments are any `Mapping[str, array]`; values are only read once each, so a lazy mapping (for
example over a safetensors file) converts tensor by tensor without holding two full copies.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable

import jax
import numpy as np
from flax import traverse_util

Array = Any


@dataclasses.dataclass(frozen=True)
class Transform:
  """A layout change between the official tensor and our leaf. Both directions use only array methods
  (`.transpose`, `.reshape`), so they apply to numpy arrays, jax arrays and `jax.eval_shape` tracers alike."""

  to_ours: Callable[[Array, tuple[int, ...] | None], Array]
  to_torch: Callable[[Array, tuple[int, ...] | None], Array]


TRANSFORMS: dict[str, Transform] = {
    'identity': Transform(lambda x, _: x, lambda x, _: x),
    # torch Linear weight [out, in] -> Dense kernel [in, out].
    'linear': Transform(lambda x, _: x.transpose(1, 0), lambda x, _: x.transpose(1, 0)),
    # torch Conv3d weight [O, I, kt, kh, kw] -> lax conv kernel [kt, kh, kw, I, O].
    'conv3d': Transform(lambda x, _: x.transpose(2, 3, 4, 1, 0), lambda x, _: x.transpose(4, 3, 0, 1, 2)),
    # torch Conv2d weight [O, I, kh, kw] -> lax conv kernel [kh, kw, I, O].
    'conv2d': Transform(lambda x, _: x.transpose(2, 3, 1, 0), lambda x, _: x.transpose(3, 2, 0, 1)),
    # Pure reshape (e.g. a norm gain stored as [C,1,1,1]); needs `Rule.torch_shape` for the reverse direction.
    'reshape': Transform(lambda x, ours: x.reshape(ours), lambda x, torch_shape: x.reshape(torch_shape)),
}


@dataclasses.dataclass(frozen=True)
class Rule:
  """One official tensor name (template) <-> one leaf of our params tree.

  `torch_name` may contain `{i}`: the leaf then has a leading layer axis and layer i's tensor fills slice i.
  `torch_shape` is only needed by the `reshape` transform (to export), and is checked on load when given.
  """

  torch_name: str
  path: str
  transform: str = 'identity'
  torch_shape: tuple[int, ...] | None = None

  def __post_init__(self):
    if self.transform not in TRANSFORMS:
      raise ValueError(f'Rule {self.torch_name!r}: unknown transform {self.transform!r}; known: {sorted(TRANSFORMS)}')

  @property
  def stacked(self) -> bool:
    return '{i}' in self.torch_name


class WeightLoadingError(ValueError):
  """Raised once with every missing, unexpected and mis-shaped key of a state_dict."""

  def __init__(self, missing: Sequence[str], unexpected: Sequence[str], misshaped: Sequence[str], where: str = ''):
    self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)
    parts = [f'state_dict does not match the model{f" ({where})" if where else ""}:']
    for title, items in (('missing keys', self.missing), ('unexpected keys', self.unexpected),
                         ('mis-shaped keys', self.misshaped)):
      if items:
        parts.append(f'  {len(items)} {title}:')
        parts.extend(f'    {item}' for item in items)
    super().__init__('\n'.join(parts))


# --------------------------------------------------------------------------------------------------------------
# Prefixes (`net.` / `net_ema.` of model-level checkpoints).


class _PrefixView(Mapping):
  """Read-only view of the keys under `prefix`, with the prefix removed; values are fetched lazily."""

  def __init__(self, base: Mapping[str, Array], prefix: str):
    self._base, self._prefix = base, prefix
    self._keys = [k[len(prefix):] for k in base.keys() if k.startswith(prefix)]

  def __getitem__(self, key: str) -> Array:
    return self._base[self._prefix + key]

  def __iter__(self) -> Iterator[str]:
    return iter(self._keys)

  def __len__(self) -> int:
    return len(self._keys)


def select_prefix(state_dict: Mapping[str, Array], *, use_ema: bool = False,
                  prefixes: Sequence[str] = ('net.', 'net_ema.')) -> tuple[Mapping[str, Array], str]:
  """Returns (view without the prefix, prefix used). Plain (unprefixed) state_dicts pass through.

  With both `net.` and `net_ema.` present, `net.` is used unless `use_ema`; with only one present, that one.
  """
  regular, ema = prefixes
  keys = list(state_dict.keys())
  has = {p: any(k.startswith(p) for k in keys) for p in prefixes}
  if use_ema:
    if not has[ema]:
      raise ValueError(f'use_ema=True but the state_dict has no {ema!r} keys (first keys: {keys[:5]})')
    return _PrefixView(state_dict, ema), ema
  if has[regular]:
    return _PrefixView(state_dict, regular), regular
  if has[ema]:
    return _PrefixView(state_dict, ema), ema
  return state_dict, ''


# --------------------------------------------------------------------------------------------------------------
# Loading and exporting.


def _abstract_leaves(abstract_params) -> dict[str, jax.ShapeDtypeStruct]:
  flat = traverse_util.flatten_dict(abstract_params, sep='/')
  return {k: jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for k, v in flat.items()}


def _check_table(rules: Sequence[Rule], leaves: Mapping[str, jax.ShapeDtypeStruct]) -> None:
  paths = [r.path for r in rules]
  duplicated = sorted({p for p in paths if paths.count(p) > 1})
  uncovered = sorted(set(leaves) - set(paths))
  unknown = sorted(set(paths) - set(leaves))
  if duplicated or uncovered or unknown:
    raise ValueError(f'rule table and model disagree (a bug in the table): duplicated paths {duplicated}, '
                     f'model leaves without a rule {uncovered}, rules for non-existent leaves {unknown}')


def expand_rules(rules: Sequence[Rule], abstract_params) -> list[tuple[str, Rule, int | None]]:
  """(official name, rule, layer index or None) for every official tensor the model expects."""
  leaves = _abstract_leaves(abstract_params)
  _check_table(rules, leaves)
  out = []
  for rule in rules:
    if rule.stacked:
      for i in range(leaves[rule.path].shape[0]):
        out.append((rule.torch_name.format(i=i), rule, i))
    else:
      out.append((rule.torch_name, rule, None))
  return out


def official_shapes(rules: Sequence[Rule], abstract_params) -> dict[str, tuple[int, ...]]:
  """The official state_dict (name -> shape) that our model corresponds to, derived without allocating."""
  leaves = _abstract_leaves(abstract_params)
  shapes = {}
  for name, rule, layer in expand_rules(rules, abstract_params):
    leaf = leaves[rule.path]
    ours = leaf.shape[1:] if layer is not None else leaf.shape
    transform = TRANSFORMS[rule.transform]
    out = jax.eval_shape(lambda x: transform.to_torch(x, rule.torch_shape), jax.ShapeDtypeStruct(ours, leaf.dtype))
    shapes[name] = tuple(out.shape)
  return shapes


def load_state_dict(rules: Sequence[Rule], state_dict: Mapping[str, Array], abstract_params, *,
                    ignore: Iterable[str] = (), where: str = '') -> dict:
  """Builds our params tree (numpy, in the abstract tree's dtypes) from an official state_dict.

  Args:
    rules: the model's rule table.
    state_dict: official names (already without `net.`; see `select_prefix`) -> array-likes.
    abstract_params: our params tree of `jax.ShapeDtypeStruct` (from `jax.eval_shape` of the init).
    ignore: regexes (full match) of official keys that are deliberately dropped (buffers, `_extra_state`).
    where: a name for the source, quoted in the error.

  Raises:
    WeightLoadingError listing every missing, unexpected and mis-shaped key at once.
  """
  leaves = _abstract_leaves(abstract_params)
  expanded = expand_rules(rules, abstract_params)
  ignore_res = [re.compile(p) for p in ignore]
  available = set(state_dict.keys())
  missing, misshaped = [], []
  out: dict[str, np.ndarray] = {}
  for name, rule, layer in expanded:
    leaf = leaves[rule.path]
    ours_shape = leaf.shape[1:] if layer is not None else leaf.shape
    if name not in available:
      missing.append(name)
      continue
    value = np.asarray(state_dict[name])
    available.discard(name)
    if rule.torch_shape is not None and tuple(value.shape) != tuple(rule.torch_shape):
      misshaped.append(f'{name}: got {tuple(value.shape)}, expected {tuple(rule.torch_shape)}')
      continue
    try:
      converted = TRANSFORMS[rule.transform].to_ours(value, ours_shape)
    except ValueError:  # reshape of the wrong size, transpose of the wrong rank
      converted = None
    if converted is None or tuple(converted.shape) != tuple(ours_shape):
      want = jax.eval_shape(lambda x: TRANSFORMS[rule.transform].to_torch(x, rule.torch_shape),
                            jax.ShapeDtypeStruct(ours_shape, leaf.dtype)).shape
      misshaped.append(f'{name}: got {tuple(value.shape)}, expected {tuple(want)}')
      continue
    if layer is None:
      out[rule.path] = np.asarray(converted, dtype=leaf.dtype)
    else:
      if rule.path not in out:
        out[rule.path] = np.zeros(leaf.shape, dtype=leaf.dtype)
      out[rule.path][layer] = converted
  unexpected = sorted(k for k in available if not any(r.fullmatch(k) for r in ignore_res))
  if missing or unexpected or misshaped:
    raise WeightLoadingError(missing, unexpected, misshaped, where)
  return traverse_util.unflatten_dict(out, sep='/')


class _ExportView(Mapping):
  """Official name -> tensor, each computed (laid out, cast) only when read, so writing an export tensor by tensor
  never holds a second copy of the parameters."""

  def __init__(self, entries: dict[str, tuple[np.ndarray, Rule, int | None]], dtype):
    self._entries, self._dtype = entries, dtype

  def __getitem__(self, name: str) -> np.ndarray:
    leaf, rule, layer = self._entries[name]
    value = leaf[layer] if layer is not None else leaf
    value = np.ascontiguousarray(TRANSFORMS[rule.transform].to_torch(value, rule.torch_shape))
    return value if self._dtype is None else value.astype(self._dtype)

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)


def export_state_dict(rules: Sequence[Rule], params, *, prefix: str = '', dtype=None) -> Mapping[str, np.ndarray]:
  """Our params tree -> official names (with `prefix`, e.g. 'net.') and layouts, as a lazy read-only mapping of
  numpy arrays (each tensor is produced when read; `dict(...)` it to materialise them all).

  `dtype=None` keeps each leaf's dtype; otherwise every tensor is cast (e.g. `ml_dtypes.bfloat16`).
  """
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep='/').items()}
  abstract = traverse_util.unflatten_dict(
      {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}, sep='/')
  entries = {prefix + name: (flat[rule.path], rule, layer) for name, rule, layer in expand_rules(rules, abstract)}
  return _ExportView(entries, dtype)
