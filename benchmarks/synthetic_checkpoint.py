"""Synthetic official-layout checkpoints for benchmarks/convert.py and tests/convert/test_convert_2b.py (random
values, real names and shapes)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys


REPO = pathlib.Path(__file__).resolve().parents[1]
DIT_2B_MANIFEST = REPO / 'third_party' / 'cosmos_predict2_2b_dit_manifest.json'

# Transformer Engine RMSNorms (the q/k norms of @18a2acc cosmos_policy/_src/predict2/networks/minimal_v4_dit.py:
# Attention) emit `<module>._extra_state` in real checkpoints, which the official loader skips
# (cosmos_policy/_src/imaginaire/utils/checkpointer.py:non_strict_load_model); the meta-device manifest does not
# list them.
_TE_NORM_SUFFIXES = ('q_norm.weight', 'k_norm.weight')


def official_2b_entries() -> list[dict]:
  return json.loads(DIT_2B_MANIFEST.read_text())['entries']


def write_official_dit(path: pathlib.Path, entries: list[dict], *, dtype: str = 'bfloat16', prefix: str = 'net.',
                       extra_state: bool = True, seed: int = 0) -> int:
  """Writes a `.pt` like a released Cosmos-Policy checkpoint: `net.`-prefixed parameters in `dtype` (random normal
  values scaled by 0.02), the official buffers, and TE `_extra_state` byte tensors. Returns the file size."""
  import torch  # pylint: disable=g-import-not-at-top

  generator = torch.Generator().manual_seed(seed)
  torch_dtype = getattr(torch, dtype)
  state = {}
  for entry in entries:
    name, shape = entry['name'], tuple(entry['shape'])
    if entry['kind'] == 'parameter':
      state[prefix + name] = (torch.randn(shape, generator=generator) * 0.02).to(torch_dtype)
      if extra_state and (name.endswith(_TE_NORM_SUFFIXES) or name == 't_embedding_norm.weight'):
        state[prefix + name.rsplit('.', 1)[0] + '._extra_state'] = torch.zeros(0, dtype=torch.uint8)
    else:  # buffers, stored in their own dtype
      state[prefix + name] = torch.zeros(shape, dtype=getattr(torch, entry['dtype']))
  torch.save(state, path)
  del state
  return path.stat().st_size


_MEASURE_CHILD = r"""
import json, resource, sys, time
from cosmos_jax.convert import __main__ as convert_main
imports_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
convert_main.run(sys.argv[1:])
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print('MEASURED ' + json.dumps({'seconds': seconds, 'peak_rss_bytes': peak_kb * 1024,
                                'rss_after_imports_bytes': imports_kb * 1024}))
"""


def measure_cli(args: list[str]) -> dict:
  """Runs `python -m cosmos_jax.convert ARGS` logic in a fresh process; returns its wall time and peak RSS."""
  env = {**os.environ, 'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu')}
  proc = subprocess.run([sys.executable, '-c', _MEASURE_CHILD, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'conversion failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
  line = [l for l in proc.stdout.splitlines() if l.startswith('MEASURED ')][-1]
  return {**json.loads(line[len('MEASURED '):]), 'stdout': proc.stdout.strip()}
