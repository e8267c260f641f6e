"""Traced programs kept across processes (jax.export), next to JAX's persistent compilation cache.

The compilation cache (compilation_cache.py) spares a later process XLA's compile, but that process still traces
the Python of every program (the VAE, the DiT sampler loop, the weight init) and lowers it to StableHLO before it
can look the executable up; on the tiny ALOHA server this was most of a warm start (benchmarks/warm_start.py).
`cached_jit(fun)` is `jax.jit(fun)` that also writes each program it traces, serialized by `jax.export` (a
flatbuffer holding StableHLO bytecode: no pickle), under <compilation cache directory>/exported/. A later process
with the same key deserializes it and compiles it (a compilation-cache hit) without running `fun`'s Python.

The key covers everything the traced program depends on: `fun`'s static description (the function's module and
name and, for a functools.partial, the repr of its bound arguments: configs, layouts, step counts), the argument
tree with every leaf's shape, dtype and weak type, the source of the whole cosmos_jax package (any edit retires
every entry), the jax and jaxlib versions, the backend platform and device kind, and jax's tracing configuration
(x64, matmul precision, ...). A bound argument whose repr names an object address (no value-based repr) is refused:
its state would not be in the key.

Without a compilation cache directory (the library's default, tests; $COSMOS_JAX_COMPILATION_CACHE=off in the
commands) `cached_jit` is plain `jax.jit`. Calls with arrays spread over several devices, and programs jax.export
cannot serialize, also take the plain jit path (logged once). The programs run are the same StableHLO either way.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

import jax
from jax._src import config as jax_config

log = logging.getLogger(__name__)

SUBDIRECTORY = 'exported'
_PACKAGE = pathlib.Path(__file__).resolve().parent
_ADDRESS = re.compile(r' at 0x[0-9a-fA-F]+')


@functools.cache
def source_digest() -> str:
  """sha256 of every .py file of the cosmos_jax package (path and bytes), computed once per process."""
  digest = hashlib.sha256()
  for path in sorted(_PACKAGE.rglob('*.py')):
    digest.update(path.relative_to(_PACKAGE).as_posix().encode() + b'\0')
    digest.update(path.read_bytes() + b'\0')
  return digest.hexdigest()


def static_description(fun: Callable) -> str:
  """What `fun` bakes into its trace besides its arguments: module + qualified name (+ a partial's bound values)."""
  if isinstance(fun, functools.partial):
    inner = static_description(fun.func)
    bound = repr((fun.args, sorted(fun.keywords.items())))
    if _ADDRESS.search(bound):
      raise ValueError(f'cached_jit: a bound argument of {inner} has no value-based repr (it names an object '
                       f'address), so the program key could not describe it: {bound[:300]}')
    return f'{inner}{bound}'
  name = getattr(fun, '__qualname__', None)
  if name is None or '<lambda>' in name or '<locals>' in name:
    raise ValueError(f'cached_jit needs a module-level function (or a functools.partial of one), got {fun!r}: '
                     'a lambda or local function may close over values the key cannot see')
  return f'{fun.__module__}.{name}'


@functools.cache
def _jaxlib_version() -> str:
  return importlib.metadata.version('jaxlib')


def _leaf_signature(leaf: Any) -> tuple:
  aval = jax.typeof(leaf)
  return tuple(aval.shape), str(aval.dtype), bool(getattr(aval, 'weak_type', False))


def _tracing_configuration() -> str:
  # trace_context() is what jax.jit itself keys its trace cache on; object reprs (e.g. an axis environment)
  # carry addresses, so those items are named by their type only.
  return repr(tuple(type(v).__name__ if _ADDRESS.search(repr(v)) else v for v in jax_config.trace_context()))


def _multi_device(leaves) -> bool:
  return any(isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 for x in leaves)


def directory() -> pathlib.Path | None:
  """Where exported programs go: <jax_compilation_cache_dir>/exported, or None when no cache directory is set."""
  base = jax.config.jax_compilation_cache_dir
  return pathlib.Path(base) / SUBDIRECTORY if base else None


class CachedJit:
  """`jax.jit(fun)` whose traced programs persist across processes (module docstring)."""

  def __init__(self, fun: Callable, *, directory_override: str | os.PathLike | None = None):
    self.fun = fun
    self.description = static_description(fun)
    self._jit = jax.jit(fun)
    self._directory_override = directory_override
    self._programs: dict[str, Callable] = {}

  def _directory(self) -> pathlib.Path | None:
    if self._directory_override is not None:
      return pathlib.Path(self._directory_override)
    return directory()

  def _cache_size(self) -> int:
    """Compiled programs held, as jax.jit's `_cache_size` (the plain and the exported paths together)."""
    exported = {id(p): p for p in self._programs.values() if p is not self._jit}
    return self._jit._cache_size() + sum(p._cache_size() for p in exported.values())

  def key(self, args: tuple, kwargs: dict) -> str:
    leaves, tree = jax.tree.flatten((args, kwargs))
    device = jax.devices()[0]
    parts = (self.description, str(tree), [_leaf_signature(x) for x in leaves], source_digest(), jax.__version__,
             _jaxlib_version(), device.platform,
             getattr(device, 'device_kind', ''), jax.device_count(), _tracing_configuration())
    return hashlib.sha256(repr(parts).encode()).hexdigest()

  def __call__(self, *args, **kwargs):
    base = self._directory()
    if base is None:
      return self._jit(*args, **kwargs)
    leaves = jax.tree.leaves((args, kwargs))
    if _multi_device(leaves):
      return self._jit(*args, **kwargs)
    key = self.key(args, kwargs)
    program = self._programs.get(key)
    if program is None:
      program = self._programs[key] = self._program(base, key, args, kwargs)
    return program(*args, **kwargs)

  def _program(self, base: pathlib.Path, key: str, args: tuple, kwargs: dict) -> Callable:
    path = base / f'{key}.jax_exported'
    exported = _read(path)
    if exported is not None and exported.in_tree != jax.tree.structure((args, kwargs)):
      log.warning('exported program %s does not match the call (%s); exporting it again', path, self.description)
      exported = None
    if exported is None:
      try:
        exported = jax.export.export(self._jit)(*args, **kwargs)
        data = exported.serialize()
      except Exception as e:  # pylint: disable=broad-except  # e.g. a custom call jax.export does not allow
        log.info('cached_jit: %s cannot be exported (%s: %s); it is traced in every process',
                 self.description, type(e).__name__, e)
        return self._jit
      _write(path, data)
    return jax.jit(exported.call)


def _read(path: pathlib.Path):
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    return None
  try:
    return jax.export.deserialize(bytearray(data))
  except Exception as e:  # pylint: disable=broad-except  # a truncated or foreign file: export it again
    log.warning('cannot read the exported program %s (%s: %s); exporting it again', path, type(e).__name__, e)
    return None


def _write(path: pathlib.Path, data: bytes) -> None:
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f'{path.name}.{os.getpid()}.tmp')
    partial.write_bytes(bytes(data))
    os.replace(partial, path)  # atomic: a concurrent reader sees the whole file or none
  except OSError as e:
    log.warning('cannot write the exported program %s: %s', path, e)


def cached_jit(fun: Callable, **kwargs) -> CachedJit:
  return CachedJit(fun, **kwargs)

