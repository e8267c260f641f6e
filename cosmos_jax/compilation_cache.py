"""JAX's persistent compilation cache, switched on by the train, serve and eval commands.

Compiled XLA programs go to a directory and later processes that compile the same program (same jax/jaxlib, same
device kind, same flags) load them instead: a restarted server, a resumed run or a repeated evaluation skips
compilation (benchmarks/warm_start.py measures a server's start-up cold and warm).

Directory: the `directory` argument, else $COSMOS_JAX_COMPILATION_CACHE, else
$XDG_CACHE_HOME/cosmos_jax/jax_compilation_cache (~/.cache/... without XDG_CACHE_HOME). Setting the variable (or
passing) 'off' disables the cache. jax's `jax_compilation_cache_dir`, when already set, is left as it is.
"""

from __future__ import annotations

import os
import pathlib

import jax

ENV_VAR = 'COSMOS_JAX_COMPILATION_CACHE'
_OFF = frozenset({'off', 'none', '0', 'false', 'no'})


def default_directory() -> pathlib.Path:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(base) / 'cosmos_jax' / 'jax_compilation_cache'


def enable(directory: str | os.PathLike | None = None, *, min_compile_time_s: float = 0.0) -> str | None:
  """Turns the persistent cache on and returns its directory (None when switched off).

  min_compile_time_s: programs that compile faster than this are not written (0: every program; the small ones
  add up at a server's start-up).
  """
  if directory is None and jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  if directory is None:
    directory = os.environ.get(ENV_VAR) or default_directory()
  if str(directory).strip().lower() in _OFF:
    return None
  path = pathlib.Path(directory).expanduser()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OSError(f'cannot create the compilation cache directory {str(path)!r} (set ${ENV_VAR} to another '
                  f"directory, or to 'off'): {e}") from e
  jax.config.update('jax_compilation_cache_dir', str(path))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float(min_compile_time_s))
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return str(path)
