"""Why cosmos_jax/convert/torch_io.py keeps its own safetensors reader and writer: peak memory against the
`safetensors` library on the same file, side by side.

    python benchmarks/safetensors_io.py [--size-mib 1024] [--tensors 64] [--repeats 3] [--out FILE]

A state_dict of --tensors bf16 tensors totalling --size-mib is written and read back tensor by tensor, each
measurement in a fresh process (peak resident set size, `ru_maxrss`, minus the process's size after its imports):

  write  library: safetensors.numpy.save_file takes a dict of arrays, so an export (a lazy view over the converted
                  params, one tensor at a time) must be materialised first: peak ~ the whole file.
  write  ours:    torch_io.save_safetensors makes two passes over the lazy mapping (header, then data): peak ~ one
                  tensor.
  read   library: safe_open(...).get_tensor per name: the file is memory-mapped and the pages read stay in the
                  resident set: peak ~ the whole file.
  read   ours:    torch_io.open_state_dict: `readinto` a fresh array per tensor: peak ~ one tensor.

The 2B DiT in bf16 is ~4 GB; the converter holds the converted parameters as well, so a whole extra copy is what
this avoids. Medians over --repeats runs; the table gives peak / file size and the library / ours ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
import ml_dtypes, numpy as np
mode, path, tensors, elements = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from collections.abc import Mapping
import safetensors, safetensors.numpy
from cosmos_jax.convert import torch_io

class Lazy(Mapping):  # like an export view: each tensor is made when it is read
  def __len__(self): return tensors
  def __iter__(self): return iter(f'blocks.{i}.weight' for i in range(tensors))
  def __getitem__(self, key):
    i = int(key.split('.')[1])
    return np.full(elements, i, np.float32).astype(ml_dtypes.bfloat16)

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == 'write_library':
  safetensors.numpy.save_file(dict(Lazy()), path)
elif mode == 'write_ours':
  torch_io.save_safetensors(Lazy(), path)
elif mode == 'read_library':
  with safetensors.safe_open(path, framework='numpy') as f:
    for name in f.keys():
      assert f.get_tensor(name).size == elements
elif mode == 'read_ours':
  with torch_io.open_state_dict(path) as state_dict:
    for name in state_dict:
      assert state_dict[name].size == elements
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print('MEASURED ' + json.dumps({'seconds': seconds, 'peak_bytes': (peak - base) * 1024}))
"""

MODES = ('write_library', 'write_ours', 'read_library', 'read_ours')


def measure(mode: str, path: pathlib.Path, tensors: int, elements: int) -> dict:
  proc = subprocess.run([sys.executable, '-c', _CHILD, mode, str(path), str(tensors), str(elements)], cwd=REPO,
                        capture_output=True, text=True, check=False,
                        env={**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'})
  if proc.returncode:
    raise RuntimeError(f'{mode} failed:\n{proc.stdout}\n{proc.stderr}')
  line = [l for l in proc.stdout.splitlines() if l.startswith('MEASURED ')][-1]
  return json.loads(line[len('MEASURED '):])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--size-mib', type=int, default=1024)
  parser.add_argument('--tensors', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'safetensors_io.json'))
  args = parser.parse_args()
  elements = args.size_mib * 2**20 // 2 // args.tensors  # bf16
  file_bytes = elements * 2 * args.tensors
  runs = {mode: [] for mode in MODES}
  with tempfile.TemporaryDirectory() as tmp:
    for _ in range(args.repeats):
      for mode in MODES:  # interleaved, so machine load hits every row alike
        path = pathlib.Path(tmp) / ('library.safetensors' if mode.endswith('library') else 'ours.safetensors')
        runs[mode].append(measure(mode, path, args.tensors, elements))
  rows = [{'mode': mode, 'median_peak_bytes': statistics.median(r['peak_bytes'] for r in runs[mode]),
           'median_seconds': statistics.median(r['seconds'] for r in runs[mode]), 'runs': runs[mode]}
          for mode in MODES]
  by_mode = {r['mode']: r for r in rows}
  print(f'{args.tensors} bf16 tensors, {file_bytes / 2**20:.0f} MiB file, one tensor '
        f'{file_bytes / args.tensors / 2**20:.0f} MiB, medians of {args.repeats}')
  header = f"{'operation':<16}{'peak MiB':>10}{'peak/file':>11}{'seconds':>9}{'library/ours peak':>19}"
  print(header)
  print('-' * len(header))
  for r in rows:
    op = r['mode'].split('_')[0]
    ratio = by_mode[f'{op}_library']['median_peak_bytes'] / max(by_mode[f'{op}_ours']['median_peak_bytes'], 1)
    print(f"{r['mode']:<16}{r['median_peak_bytes'] / 2**20:>10.0f}{r['median_peak_bytes'] / file_bytes:>11.2f}"
          f"{r['median_seconds']:>9.2f}{(f'{ratio:.1f}x' if r['mode'].endswith('ours') else ''):>19}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(machine=platform.platform(), python=platform.python_version(), tensors=args.tensors,
                                 file_bytes=file_bytes, rows=rows), indent=2))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
