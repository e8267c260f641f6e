"""Wan2.1 VAE: encode time and peak memory for the policy sequence, decode time for the future-image frames.

The default case is the ALOHA layout: 41 pixel frames (blank + 10 slots x 4) of 224x224 -> 11 latents of 28x28,
at the real width (base_dim 96, random weights: the timing does not depend on the values). Decoding: the policy
decodes the whole 11-latent sequence and keeps frames 25, 29 and 33 (future-image slots 7, 8, 9); by causality the
first 10 latents already determine those frames, which the second decode row measures (and checks).

Memory: XLA's compiled memory analysis (arguments + outputs + temporaries of the one program; available without
running) and, on GPU, the allocator's peak; on CPU the process's peak RSS is printed as well.

Usage:
  python benchmarks/vae.py [--out benchmarks/results/vae.json] [--frames 41] [--size 224] [--dtype float32]
                           [--repeats N] [--compile-only]
On this project's 2-core CPU the full 41x224x224 encode is about 10 TFLOP (~15 min); `--size 64` keeps a CPU run
to a minute or two while `--compile-only` still reports the full-size memory analysis.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import resource
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.nn import vae
from cosmos_jax.policy import video as video_lib

ALOHA_SLOTS = ('proprio', 'left wrist', 'right wrist', 'primary', 'action', 'future proprio', 'future left wrist',
               'future right wrist', 'future primary', 'value')
FUTURE_IMAGE_SLOTS = (7, 8, 9)


def _flops(compiled) -> float:
  try:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get('flops', float('nan')))
  except Exception:  # best-effort on some backends
    return float('nan')


def _memory(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
    return dict(argument_gb=m.argument_size_in_bytes / 1e9, output_gb=m.output_size_in_bytes / 1e9,
                temp_gb=m.temp_size_in_bytes / 1e9,
                total_gb=(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes) / 1e9)
  except Exception:
    return {}


def _device_peak_gb() -> float:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use', float('nan')) / 1e9


def _time(fn, args, repeats: int) -> tuple[dict, Any]:
  """Runs fn `repeats` times; the first call is reported apart (allocation, thread-pool start-up), the median is
  over the later calls when there are any. Returns (timing fields, last output)."""
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  steady = times[1:] or times
  return dict(first_call_s=times[0], median_s=statistics.median(steady), min_s=min(steady), repeats=repeats,
              device_peak_gb=_device_peak_gb()), out


def policy_images(batch: int, size: int, seed: int = 0) -> list:
  rng = np.random.default_rng(seed)
  image = lambda: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  return [None if name in ('proprio', 'action', 'future proprio', 'value') else image() for name in ALOHA_SLOTS]


def run(cfg: vae.VAEConfig, frames: int, size: int, batch: int, repeats: int, compile_only: bool) -> list[dict]:
  slots = (frames - 1) // 4
  if 1 + 4 * slots != frames or slots > len(ALOHA_SLOTS):
    raise ValueError(f'--frames must be 1 + 4k with k <= {len(ALOHA_SLOTS)}, got {frames}')
  device = jax.devices()[0].device_kind
  common = dict(device=device, backend=jax.default_backend(), dtype=jnp.dtype(cfg.dtype).name,
                base_dim=cfg.base_dim, batch=batch, frames=frames, size=size)
  rows = []

  t0 = time.perf_counter()
  params = jax.jit(lambda k: vae.init_params(cfg, k))(jax.random.key(0)) if not compile_only else (
      vae.abstract_params(cfg))
  init_s = time.perf_counter() - t0

  video_shape = jax.ShapeDtypeStruct((batch, frames, size, size, 3), cfg.dtype)
  t0 = time.perf_counter()
  encoder = vae._encode_mean.lower(params, cfg, video_shape).compile()
  encode_compile_s = time.perf_counter() - t0
  row = dict(name='encode policy sequence', **common, compile_s=encode_compile_s, init_s=init_s,
             gflop=_flops(encoder) / 1e9, **_memory(encoder))
  latents = None
  if not compile_only:
    video = video_lib.pixels_to_unit(video_lib.policy_pixel_sequence(policy_images(batch, size)[:slots], size, size), cfg.dtype)
    timing, mu = _time(encoder, (params, video), repeats)
    row.update(timing, gflop_per_s=row['gflop'] / timing['median_s'])
    latents = vae.normalize_latent(mu, cfg)
  rows.append(row)

  num_latents = vae.latent_frames(frames)
  wanted = [4 * (k - 1) + 1 for k in FUTURE_IMAGE_SLOTS if k < num_latents]
  decoded_frames = {}
  for label, used in (('decode all latents (policy)', num_latents),
                      ('decode latents up to last future slot', (max(FUTURE_IMAGE_SLOTS) + 1) if wanted else None)):
    if used is None or used > num_latents:
      continue
    latent_shape = jax.ShapeDtypeStruct((batch, used, size // 8, size // 8, cfg.z_dim), cfg.dtype)
    t0 = time.perf_counter()
    decoder = vae._decode_mean.lower(params, cfg, latent_shape).compile()
    row = dict(name=label, **common, latents=used, frames_kept=wanted, compile_s=time.perf_counter() - t0,
               gflop=_flops(decoder) / 1e9, **_memory(decoder))
    if not compile_only:
      mu = vae.denormalize_latent(latents[:, :used], cfg)
      timing, video = _time(decoder, (params, mu), repeats)
      row.update(timing, gflop_per_s=row['gflop'] / timing['median_s'])
      decoded_frames[used] = np.asarray(video[:, wanted])
    rows.append(row)
  if len(decoded_frames) == 2:
    a, b = decoded_frames.values()
    rows[-1]['max_abs_diff_vs_full_decode'] = float(np.abs(a - b).max())
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='benchmarks/results/vae.json')
  parser.add_argument('--frames', type=int, default=41)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--dtype', default=None, choices=['float32', 'bfloat16'],
                      help='default: float32 on CPU; on GPU both bfloat16 (the policy) and float32')
  parser.add_argument('--repeats', type=int, default=None, help='timed calls (default 1 on CPU, 5 on GPU)')
  parser.add_argument('--compile-only', action='store_true', help='only compile: FLOPs and memory analysis')
  args = parser.parse_args()

  on_gpu = jax.default_backend() == 'gpu'
  repeats = args.repeats or (5 if on_gpu else 1)
  dtypes = [args.dtype] if args.dtype else (['bfloat16', 'float32'] if on_gpu else ['float32'])
  rows = []
  for dtype in dtypes:
    cfg = vae.VAEConfig.policy() if dtype == 'bfloat16' else vae.VAEConfig.wan21()
    rows += run(cfg, args.frames, args.size, args.batch, repeats, args.compile_only)
  if not on_gpu:
    print(f'(no GPU visible, backend {jax.default_backend()}: GPU rows need one)')
  peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

  header = (f"{'run':<40}{'dtype':<10}{'input T,H,W':<13}{'compile s':>10}{'median s':>10}{'GFLOP':>9}{'GFLOP/s':>9}"
            f"{'XLA mem GB':>11}{'dev peak GB':>12}")
  print(header)
  print('-' * len(header))
  for r in rows:
    shape = (f"{r['frames']}x{r['size']}x{r['size']}" if 'latents' not in r
             else f"{r['latents']}x{r['size'] // 8}x{r['size'] // 8}")
    print(f"{r['name']:<40}{r['dtype']:<10}{shape:<13}{r['compile_s']:>10.1f}{r.get('median_s', float('nan')):>10.2f}"
          f"{r['gflop']:>9.0f}{r.get('gflop_per_s', float('nan')):>9.1f}{r.get('total_gb', float('nan')):>11.2f}"
          f"{r.get('device_peak_gb', float('nan')):>12.2f}")
  print(f'process peak RSS: {peak_rss_gb:.2f} GB')
  for r in rows:
    if 'max_abs_diff_vs_full_decode' in r:
      print(f"frames {r['frames_kept']} from {r['latents']} latents vs all latents: max abs diff "
            f"{r['max_abs_diff_vs_full_decode']:.2e}")

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(host=platform.node(), jax=jax.__version__, compile_only=args.compile_only,
                                 peak_rss_gb=peak_rss_gb, runs=rows), indent=2))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
