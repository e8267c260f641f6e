"""host_memory.retain_freed_memory: a large XLA:CPU temporary is no longer faulted in afresh on every call (each
case in a fresh interpreter: the setting must precede JAX's CPU client). The first calls still grow the heap until
freed blocks coalesce into holes the aligned temporary fits (a few calls), so the steady state is measured."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

PROGRAM = """
import resource
from cosmos_jax import host_memory
applied = host_memory.retain_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (x @ x.T) @ x)  # x @ x.T is a 144 MB temporary
x = jnp.linspace(0.0, 1.0, 6000 * 16).reshape(6000, 16)
for _ in range(20):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  f(x).block_until_ready()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def _faults(setting):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT), 'COSMOS_JAX_RETAIN_HOST_MEMORY': setting}
  proc = subprocess.run([sys.executable, '-c', PROGRAM], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  applied, faults = proc.stdout.split()
  return applied == 'True', float(faults)


def test_retained_memory_is_reused_without_page_faults():
  applied, retained = _faults('1')
  not_applied, default = _faults('0')
  assert applied and not not_applied
  pages = 144e6 / 4096
  assert default > 0.5 * pages, f'glibc default: {default:.0f} faults per call (expected about {pages:.0f})'
  assert retained < 0.05 * pages, f'retained: {retained:.0f} faults per call, default {default:.0f}'


def test_refuses_once_a_backend_runs():
  program = ('import jax, jax.numpy as jnp; jnp.ones(2).block_until_ready(); from cosmos_jax import host_memory; '
             'print(host_memory.retain_freed_memory())')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT)}
  env.pop('COSMOS_JAX_RETAIN_HOST_MEMORY', None)
  proc = subprocess.run([sys.executable, '-c', program], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.split()[-1] == 'False', proc.stdout + proc.stderr[-2000:]
