"""Wan2.1 VAE: the causal chunked pass against the whole-sequence pass, memory and time, outputs compared.

Cases (each in its own fresh process, so that its peak RSS is its own):
  * encode the ALOHA policy sequence (blank frame + 4-frame slots of random images) at --frames pixel frames, and
    at 9 frames, by both paths: the chunked encode's memory must not grow with the frames;
  * decode the resulting latents by both paths.
Every case reports XLA's compiled memory analysis (temporaries, i.e. working memory, plus arguments and outputs;
known without running), and unless --compile-only the median time and the process's peak RSS (with the RSS just
before the timed calls, which holds the weights). The chunked and whole outputs of each case are compared.

The real 41x224x224 encode is about 10 TFLOP: ~15 min a call on a 2-core CPU. `--size 64` (or `--base-dim 8`)
keeps a CPU run short; `--compile-only` still gives the full-size memory analysis.

Usage:
  python benchmarks/vae.py [--frames 41] [--size 224] [--base-dim 96] [--dtype float32] [--repeats N]
                           [--compile-only] [--out benchmarks/results/vae.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'benchmarks'))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
ALOHA_SLOTS = ('proprio', 'left wrist', 'right wrist', 'primary', 'action', 'future proprio', 'future left wrist',
               'future right wrist', 'future primary', 'value')
PATHS = {'chunked': 1, 'whole': 0}  # VAEConfig.chunk_latents


def _rss_gb() -> float:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1e6
  return float('nan')


def memory_fields(compiled) -> dict:
  m = compiled.memory_analysis()
  return dict(temp_gb=m.temp_size_in_bytes / 1e9, argument_gb=m.argument_size_in_bytes / 1e9,
              output_gb=m.output_size_in_bytes / 1e9)


def policy_video(batch: int, frames: int, size: int, dtype):
  """The uint8 policy sequence of `frames` = 1 + 4k pixel frames, as the VAE's float input."""
  import numpy as np

  from cosmos_jax.policy import video as video_lib
  slots = (frames - 1) // 4
  if 1 + 4 * slots != frames or slots > len(ALOHA_SLOTS):
    raise ValueError(f'--frames must be 1 + 4k with k <= {len(ALOHA_SLOTS)}, got {frames}')
  rng = np.random.default_rng(0)
  items = [None if name in ('proprio', 'action', 'future proprio', 'value') else
           rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for name in ALOHA_SLOTS[:slots]]
  return video_lib.pixels_to_unit(video_lib.policy_pixel_sequence(items, size, size, batch), dtype)


def run_case(case: dict) -> dict:
  """One (operation, path, frames) case in this process; writes its output next to the result."""
  from cosmos_jax import host_memory
  host_memory.retain_freed_memory()  # as the commands run (before JAX starts its CPU client)
  import jax
  import jax.numpy as jnp
  import numpy as np

  from cosmos_jax.nn import vae
  dtype = jnp.dtype(case['dtype'])
  cfg = vae.VAEConfig(base_dim=case['base_dim'], dtype=dtype, chunk_latents=PATHS[case['path']],
                      latent_stats='bf16' if dtype == jnp.bfloat16 else 'fp32')
  batch, frames, size = case['batch'], case['frames'], case['size']
  compile_only = case['compile_only']
  params = vae.abstract_params(cfg)
  if not compile_only:  # random weights of the right shapes: the time does not depend on them
    params = common.random_params(params)
  if case['op'] == 'encode':
    fn = vae._encode_mean
    arg = (jax.ShapeDtypeStruct((batch, frames, size, size, 3), dtype) if compile_only
           else policy_video(batch, frames, size, dtype))
  else:
    fn = vae._decode_mean
    latents = vae.latent_frames(frames)
    arg = (jax.ShapeDtypeStruct((batch, latents, size // 8, size // 8, cfg.z_dim), dtype) if compile_only
           else jnp.asarray(np.load(case['latent_from'])['out'], dtype))
  start = time.perf_counter()
  compiled = fn.lower(params, cfg, arg).compile()
  row = dict(case, compile_s=time.perf_counter() - start, **memory_fields(compiled))
  row['gflop'] = float('nan')  # XLA counts a scan body once: only the whole pass's count is the real one
  if case['path'] == 'whole':
    try:
      analysis = compiled.cost_analysis()
      row['gflop'] = float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis).get('flops', 0)) / 1e9
    except Exception:  # best effort
      pass
  if compile_only:
    return row
  row['rss_before_gb'] = _rss_gb()
  times, out = [], None
  for _ in range(case['repeats']):
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(params, arg))
    times.append(time.perf_counter() - start)
  row.update(median_s=statistics.median(times), min_s=min(times), times_s=times,
             peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
  np.savez(case['out_file'], out=np.asarray(out, np.float32))
  return row


def _subprocess_case(case: dict, timeout: float) -> dict:
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  result_file = case['out_file'] + '.json'
  proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), '--case', json.dumps(case),
                         '--case-out', result_file], env=env, capture_output=True, text=True, timeout=timeout)
  if proc.returncode:
    raise RuntimeError(f'case {case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')
  return json.loads(pathlib.Path(result_file).read_text())


def compare(a_file: str, b_file: str) -> dict:
  import numpy as np
  a, b = np.load(a_file)['out'], np.load(b_file)['out']
  err = float(np.abs(a - b).max())
  return dict(max_abs_diff=err, max_rel_diff=err / float(np.abs(b).max()))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--frames', type=int, default=41)
  parser.add_argument('--small-frames', type=int, default=9, help='the short sequence the memory is compared with')
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--base-dim', type=int, default=96, help='96: the real Wan2.1 VAE')
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--repeats', type=int, default=1)
  parser.add_argument('--compile-only', action='store_true', help='memory analysis only, no run')
  parser.add_argument('--timeout', type=float, default=7200, help='seconds per case')
  parser.add_argument('--out', default='benchmarks/results/vae.json')
  parser.add_argument('--case', help=argparse.SUPPRESS)
  parser.add_argument('--case-out', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.case:
    pathlib.Path(args.case_out).write_text(json.dumps(run_case(json.loads(args.case))))
    return

  rows, checks = [], {}
  load = [os.getloadavg()[0]]
  with tempfile.TemporaryDirectory(prefix='vae_bench_') as tmp:
    common = dict(base_dim=args.base_dim, batch=args.batch, size=args.size, dtype=args.dtype,
                  repeats=args.repeats, compile_only=args.compile_only)
    files = {}
    for frames in (args.small_frames, args.frames):
      for path in PATHS:  # interleaved: the chunked and whole cases of one shape run back to back
        files['encode', path, frames] = f'{tmp}/encode_{path}_{frames}.npz'
        case = dict(common, op='encode', path=path, frames=frames, out_file=files['encode', path, frames])
        rows.append(_subprocess_case(case, args.timeout))
        load.append(os.getloadavg()[0])
        print(f"encode {path:8s} {frames:3d} frames: temp {rows[-1]['temp_gb']:.3f} GB"
              + ('' if args.compile_only else f", {rows[-1]['median_s']:.2f} s, peak RSS "
                 f"{rows[-1]['peak_rss_gb']:.2f} GB"), flush=True)
    for path in PATHS:
      files['decode', path, args.frames] = f'{tmp}/decode_{path}.npz'
      case = dict(common, op='decode', path=path, frames=args.frames, out_file=files['decode', path, args.frames],
                  latent_from=files['encode', 'whole', args.frames])
      rows.append(_subprocess_case(case, args.timeout))
      load.append(os.getloadavg()[0])
      print(f"decode {path:8s} {vae_latents(args.frames):3d} latents: temp {rows[-1]['temp_gb']:.3f} GB"
            + ('' if args.compile_only else f", {rows[-1]['median_s']:.2f} s, peak RSS "
               f"{rows[-1]['peak_rss_gb']:.2f} GB"), flush=True)
    if not args.compile_only:
      for op, frames in (('encode', args.small_frames), ('encode', args.frames), ('decode', args.frames)):
        checks[f'{op} {frames} frames: chunked vs whole'] = compare(files[op, 'chunked', frames],
                                                                    files[op, 'whole', frames])

  by = {(r['op'], r['path'], r['frames']): r for r in rows}
  small, big = args.small_frames, args.frames
  growth = dict(
      chunked_temp_ratio=by['encode', 'chunked', big]['temp_gb'] / by['encode', 'chunked', small]['temp_gb'],
      whole_temp_ratio=by['encode', 'whole', big]['temp_gb'] / by['encode', 'whole', small]['temp_gb'])
  if not args.compile_only:
    growth.update(
        chunked_peak_rss_ratio=by['encode', 'chunked', big]['peak_rss_gb'] / by['encode', 'chunked', small]['peak_rss_gb'],
        whole_peak_rss_ratio=by['encode', 'whole', big]['peak_rss_gb'] / by['encode', 'whole', small]['peak_rss_gb'])

  header = (f"{'op':<7}{'path':<9}{'frames':>7}{'compile s':>10}{'median s':>10}{'GFLOP':>9}{'temp GB':>9}"
            f"{'args GB':>9}{'RSS before':>11}{'peak RSS':>9}")
  lines = [header, '-' * len(header)]
  for r in rows:
    lines.append(f"{r['op']:<7}{r['path']:<9}{r['frames']:>7}{r['compile_s']:>10.1f}"
                 f"{r.get('median_s', float('nan')):>10.2f}{r['gflop']:>9.0f}{r['temp_gb']:>9.3f}"
                 f"{r['argument_gb']:>9.3f}{r.get('rss_before_gb', float('nan')):>11.2f}"
                 f"{r.get('peak_rss_gb', float('nan')):>9.2f}")
  lines.append(f"encode memory {big} vs {small} frames: chunked temp x{growth['chunked_temp_ratio']:.2f}, whole temp "
               f"x{growth['whole_temp_ratio']:.2f}" + ('' if args.compile_only else
               f"; peak RSS chunked x{growth['chunked_peak_rss_ratio']:.2f}, whole x{growth['whole_peak_rss_ratio']:.2f}"))
  for name, c in checks.items():
    lines.append(f"{name}: max abs diff {c['max_abs_diff']:.2e} (relative {c['max_rel_diff']:.2e})")
  lines.append(f'load average (1 min) during the run: {min(load):.1f}-{max(load):.1f}')
  report = '\n'.join(lines)
  print(report)

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(
      benchmark='vae', command=' '.join(['python', 'benchmarks/vae.py', *sys.argv[1:]]), host=platform.node(),
      cores=os.cpu_count(), load_average=load, config=vars(args) | {'case': None, 'case_out': None},
      growth=growth, checks=checks, rows=rows, table=report), indent=1))
  print(f'wrote {out}')


def vae_latents(frames: int) -> int:
  return 1 + (frames - 1) // 4


if __name__ == '__main__':
  main()
