"""Minimal reproducers of the three XLA:CPU costs behind the DiT's slow CPU training step, each against its fix.

At the side-by-side bench case's sizes (2 x 704 tokens of width 256, MLP width 1024, 4 heads of 64):
  1. dense_grad: a bias-free dense layer applied to a [B, L, D] activation. The weight gradient contracts over two
     axes; XLA:CPU materialises a transposed copy of the output gradient for it, fused with the elementwise
     producer (a strided loop fusion). Fix (nn/dit.py `_Dense`): a 2-D matmul over the flattened tokens.
  2. attention: `jax.nn.dot_product_attention` (XLA path) forward+backward against nn/attention.py's hand-written
     backward, where every [L, L] matrix is only ever the left operand of a matmul (no transposed copies of the
     probabilities, no head-grouped layout).
  3. page_faults: a step whose temporaries exceed glibc's 32 MiB mmap threshold, in a fresh process each time, with
     glibc's defaults and with `cosmos_jax.host_memory.retain_freed_memory()`: minor page faults and system time per
     call (the kernel zeroing fresh pages every step).
1 and 2 are A/B interleaved in one process (median wall and CPU time of --rounds calls); 3 runs each side in its
own process, alternating. Outputs of each pair are compared (max abs difference).

Usage: python benchmarks/xla_cpu_findings.py [--rounds 15] [--out benchmarks/results/xla_cpu_findings.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
B, L, D, F, HEADS = 2, 704, 256, 1024, 4


def _ab(fns: dict, args, rounds: int) -> dict:
  import jax
  compiled = {name: jax.jit(fn).lower(*args).compile() for name, fn in fns.items()}
  outs = {name: c(*args) for name, c in compiled.items()}
  ref = jax.tree.leaves(next(iter(outs.values())))
  diff = {name: max(float(abs(a - b).max()) for a, b in zip(jax.tree.leaves(o), ref)) for name, o in outs.items()}
  wall = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(rounds):
    for name, c in compiled.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(c(*args))
      wall[name].append(time.perf_counter() - start)
      cpu[name].append(time.process_time() - start_cpu)
  rows = {name: dict(median_ms=statistics.median(wall[name]) * 1e3, cpu_median_ms=statistics.median(cpu[name]) * 1e3,
                     max_abs_diff_vs_first=diff[name]) for name in fns}
  first, last = list(rows)
  rows['speedup'] = rows[first]['median_ms'] / rows[last]['median_ms']
  rows['cpu_speedup'] = rows[first]['cpu_median_ms'] / rows[last]['cpu_median_ms']
  return rows


def dense_grad(rounds: int) -> dict:
  import jax
  import jax.numpy as jnp
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (B, L, D))
  w1 = jax.random.normal(keys[1], (D, F)) / D**0.5
  w2 = jax.random.normal(keys[2], (F, D)) / F**0.5

  def mlp_grad(dense):
    def loss(params, x):
      h = jax.nn.gelu(dense(x, params[0]), approximate=False)
      return jnp.mean(dense(h, params[1]) ** 2)
    return lambda params, x: jax.grad(loss)(params, x)

  rank3 = lambda x, w: jnp.dot(x, w)
  flat = lambda x, w: jnp.dot(x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[-1])
  return _ab({'rank-3 dot (before)': mlp_grad(rank3), 'flattened 2-D dot (nn/dit.py)': mlp_grad(flat)},
             ((w1, w2), x), rounds)


def attention(rounds: int) -> dict:
  import jax
  import jax.numpy as jnp
  from cosmos_jax.nn import attention as attention_lib
  keys = jax.random.split(jax.random.key(1), 4)
  q, k, v, w = (jax.random.normal(key, (B, L, HEADS, D // HEADS)) for key in keys)

  def grads(fn):
    return lambda q, k, v: jax.grad(lambda *a: jnp.sum(fn(*a) * w), argnums=(0, 1, 2))(q, k, v)

  return _ab({'jax.nn.dot_product_attention (before)': grads(jax.nn.dot_product_attention),
              'nn/attention.py (custom backward)': grads(attention_lib.dot_product_attention)}, (q, k, v), rounds)


_FAULTS_PROGRAM = """
import json, resource, statistics, sys, time
from cosmos_jax import host_memory
applied = host_memory.retain_freed_memory()
import jax, jax.numpy as jnp
x = jnp.linspace(0.0, 1.0, 8 * 704 * 64).reshape(8, 704, 64)
step = jax.jit(jax.grad(lambda x: jnp.sum(jax.nn.softmax(jnp.einsum('hqd,hkd->hqk', x, x), axis=-1) @ x)))
step(x).block_until_ready(); step(x).block_until_ready()
r0, times = resource.getrusage(resource.RUSAGE_SELF), []
for _ in range(int(sys.argv[1])):
  start = time.perf_counter(); step(x).block_until_ready(); times.append(time.perf_counter() - start)
r1 = resource.getrusage(resource.RUSAGE_SELF)
n = len(times)
print(json.dumps(dict(applied=applied, median_ms=statistics.median(times) * 1e3,
                      page_faults_per_call=(r1.ru_minflt - r0.ru_minflt) / n,
                      system_ms_per_call=(r1.ru_stime - r0.ru_stime) / n * 1e3,
                      user_ms_per_call=(r1.ru_utime - r0.ru_utime) / n * 1e3)))
"""


def page_faults(rounds: int, processes: int = 3) -> dict:
  runs = {'glibc defaults (before)': [], 'retain_freed_memory (commands)': []}
  for _ in range(processes):
    for name, setting in (('glibc defaults (before)', '0'), ('retain_freed_memory (commands)', '1')):
      env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu', 'COSMOS_JAX_RETAIN_HOST_MEMORY': setting}
      proc = subprocess.run([sys.executable, '-c', _FAULTS_PROGRAM, str(rounds)], env=env, capture_output=True,
                            text=True, timeout=600)
      if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
      runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
  rows = {name: {key: statistics.median(r[key] for r in rs) for key in
                 ('median_ms', 'page_faults_per_call', 'system_ms_per_call', 'user_ms_per_call')}
          for name, rs in runs.items()}
  first, last = list(rows)
  rows['speedup'] = rows[first]['median_ms'] / rows[last]['median_ms']
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=15)
  parser.add_argument('--out', default='benchmarks/results/xla_cpu_findings.json')
  args = parser.parse_args()
  from cosmos_jax import host_memory
  host_memory.retain_freed_memory()  # the in-process cases run as the commands do
  load = [os.getloadavg()[0]]
  results = {}
  for name, fn in (('dense_grad', dense_grad), ('attention', attention), ('page_faults', page_faults)):
    results[name] = fn(args.rounds)
    load.append(os.getloadavg()[0])
  lines = []
  for case, rows in results.items():
    lines.append(f'{case}: speedup {rows["speedup"]:.2f}x' + (f' (CPU time {rows["cpu_speedup"]:.2f}x)'
                                                               if 'cpu_speedup' in rows else ''))
    for name, row in rows.items():
      if isinstance(row, dict):
        lines.append('  ' + f'{name:40s} ' + '  '.join(f'{k} {v:.4g}' for k, v in row.items()))
  lines.append(f'load average (1 min): {min(load):.1f}-{max(load):.1f}')
  report = '\n'.join(lines)
  print(report)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(benchmark='xla_cpu_findings', command=' '.join(['python', 'benchmarks/xla_cpu_findings.py',
                                                                                 *sys.argv[1:]]),
                                 cores=os.cpu_count(), load_average=load, results=results, table=report), indent=1))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
