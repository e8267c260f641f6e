"""Keep freed host memory in the process (glibc malloc), switched on by the train, serve and eval commands.

XLA:CPU takes each execution's temporaries as one large block (hundreds of MB for a DiT training step). glibc
serves blocks over 32 MiB, and every block of a secondary thread's arena, with a fresh mmap and unmaps them on
free, so every step the kernel faults in and zeroes those pages again: on the DiT side-by-side case
(benchmarks/dit_vs_official.py) 100k minor page faults and 0.16 s of system time per 0.49 s forward+backward step.
One arena, no mmap and no trimming keep freed blocks for reuse: no faults, the step about 1.5x faster. PyTorch's
CPU tensors are mostly under the threshold, so the official code barely pays this (5k faults, 8 ms per step).

The cost: memory freed inside the process is not handed back to the OS before it exits, and the first few steps
grow the heap until freed blocks coalesce into holes the (aligned) temporaries fit: on that case the resident set
settles at 1.75 GB instead of ~1.0 GB (about 1.7x the step's 0.4 GB of temporaries more). glibc applies the settings to arenas created afterwards, so this must run before JAX starts its CPU
client (before the first computation; importing jax is fine). $COSMOS_JAX_RETAIN_HOST_MEMORY=0 turns it off.
Does nothing on other C libraries. No JAX import here: it has to be callable first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VAR = 'COSMOS_JAX_RETAIN_HOST_MEMORY'

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1

_applied = False


def _jax_backend_started() -> bool:
  bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(bridge is not None and getattr(bridge, '_backends', None))


def retain_freed_memory() -> bool:
  """Sets glibc malloc to one arena, no mmap, no trimming; True when applied (now or earlier in this process).

  False (and nothing changed) off glibc, when $COSMOS_JAX_RETAIN_HOST_MEMORY is 0/off, or when a JAX backend is
  already running (its threads' arenas would not follow; call this earlier).
  """
  global _applied
  if _applied:
    return True
  if os.environ.get(ENV_VAR, '1').strip().lower() in ('0', 'off', 'false', 'no'):
    return False
  if not sys.platform.startswith('linux') or _jax_backend_started():
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  _applied = bool(mallopt(_M_ARENA_MAX, 1) and mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
  return _applied
