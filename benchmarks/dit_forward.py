"""DiT forward time and achieved GFLOP/s.

CPU: the tiny configs (the golden-vector sizes) at the ALOHA latent shape. GPU (when one is visible): the 2B
preset at the ALOHA shape (B=1, 11 latent frames of 28×28, 512 text tokens) in bf16, with XLA and cuDNN attention.

FLOP count: `cosmos_jax.nn.dit.forward_flops` (its docstring states the formula; multiply-add = 2 FLOPs).
XLA's own count (`cost_analysis()['flops']`) is printed beside it as a cross-check.

Usage: python benchmarks/dit_forward.py [--out benchmarks/results/dit_forward.json] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from cosmos_jax import host_memory
from cosmos_jax.nn import dit


def bench(name: str, cfg: dit.DiTConfig, shape: tuple[int, int, int, int], text_tokens: int, repeats: int) -> dict:
  b, t, h, w = shape
  params = jax.jit(lambda k: jax.tree.map(lambda p: p.astype(cfg.param_dtype), dit.init_params(cfg, k)))(
      jax.random.key(0))
  key = jax.random.key(1)
  x = jax.random.normal(key, (b, t, h, w, cfg.in_channels), jnp.float32)
  timesteps = jnp.full((b, t), 0.5, jnp.float32)
  text = jax.random.normal(key, (b, text_tokens, cfg.crossattn_emb_channels), jnp.float32)
  cond = jnp.zeros((b, t, h, w, 1), jnp.float32)
  fn = jax.jit(lambda p, x, ts, c, m: dit.forward(p, cfg, x, ts, c, m))
  t0 = time.perf_counter()
  compiled = fn.lower(params, x, timesteps, text, cond).compile()
  compile_s = time.perf_counter() - t0
  compiled(params, x, timesteps, text, cond).block_until_ready()  # warm-up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    compiled(params, x, timesteps, text, cond).block_until_ready()
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  flops = dit.forward_flops(cfg, b, t, h, w, text_tokens)
  try:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    xla_flops = float(analysis.get('flops', float('nan')))
  except Exception:  # cost analysis is best-effort on some backends
    xla_flops = float('nan')
  return dict(name=name, device=jax.devices()[0].device_kind, dtype=cfg.dtype, attention=cfg.attention,
              shape_B_T_H_W=list(shape), text_tokens=text_tokens, compile_s=compile_s, median_s=median,
              min_s=min(times), repeats=repeats, gflop=flops / 1e9, xla_gflop=xla_flops / 1e9,
              gflop_per_s=flops / median / 1e9)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='benchmarks/results/dit_forward.json')
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()
  host_memory.retain_freed_memory()  # as the commands run (before JAX starts its CPU client)

  aloha = (1, 11, 28, 28)
  runs = []
  tiny_b = dit.DiTConfig(model_channels=96, num_blocks=2, num_heads=3, crossattn_emb_channels=40, adaln_lora_dim=24)
  runs.append(bench('tiny fp32', dit.DiTConfig.preset('tiny'), aloha, 512, args.repeats))
  runs.append(bench('tiny_b fp32', tiny_b, aloha, 512, args.repeats))
  if jax.default_backend() == 'gpu':
    for attention in ('xla', 'cudnn'):
      cfg = dit.DiTConfig.preset('2B', dtype='bfloat16', param_dtype='bfloat16', attention=attention)
      runs.append(bench(f'2B bf16 {attention}', cfg, aloha, 512, args.repeats))
  else:
    print(f'(no GPU visible, backend {jax.default_backend()}: the 2B bf16 XLA/cuDNN rows need one)')

  header = f"{'run':<16}{'device':<22}{'B,T,H,W':<14}{'compile s':>10}{'median ms':>11}{'GFLOP':>10}{'XLA GFLOP':>11}{'GFLOP/s':>10}"
  print(header)
  print('-' * len(header))
  for r in runs:
    shape = ','.join(map(str, r['shape_B_T_H_W']))
    print(f"{r['name']:<16}{r['device'][:21]:<22}{shape:<14}{r['compile_s']:>10.2f}{r['median_s'] * 1e3:>11.2f}"
          f"{r['gflop']:>10.2f}{r['xla_gflop']:>11.2f}{r['gflop_per_s']:>10.1f}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(host=platform.node(), backend=jax.default_backend(), jax=jax.__version__,
                                 runs=runs), indent=2))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
