"""The persistent compilation cache helper: directory resolution, 'off', and a second process loading what the
first one compiled (each in a fresh interpreter: jax reads the cache settings once per process)."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

PROGRAM = """
import time, jax, jax.numpy as jnp
from cosmos_jax import compilation_cache
print('dir', compilation_cache.enable())
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3)
start = time.perf_counter()
f.lower(jnp.ones((64, 32))).compile()
print('compile', time.perf_counter() - start)
"""


def _run(env_value, home):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT), 'XDG_CACHE_HOME': str(home)}
  env.pop('COSMOS_JAX_COMPILATION_CACHE', None)
  if env_value is not None:
    env['COSMOS_JAX_COMPILATION_CACHE'] = env_value
  proc = subprocess.run([sys.executable, '-c', PROGRAM], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = dict(line.split(' ', 1) for line in proc.stdout.splitlines())
  return lines['dir'], float(lines['compile'])


def test_second_process_loads_the_compiled_program(tmp_path):
  cache = tmp_path / 'cache'
  directory, _ = _run(str(cache), tmp_path)
  assert directory == str(cache)
  entries = sorted(p.name for p in cache.iterdir())
  assert entries, 'the first process wrote nothing to the cache'
  _run(str(cache), tmp_path)
  assert sorted(p.name for p in cache.iterdir()) == entries  # the second found it: nothing new written


def test_default_directory_and_off(tmp_path):
  directory, _ = _run(None, tmp_path)
  assert directory == str(tmp_path / 'cosmos_jax' / 'jax_compilation_cache')
  assert any(pathlib.Path(directory).iterdir())
  assert _run('off', tmp_path)[0] == 'None'
