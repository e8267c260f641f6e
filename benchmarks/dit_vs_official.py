"""cosmos_jax's DiT against the official PyTorch DiT on the same CPU: same weights, same inputs, A/B interleaved.

Wraps the side-by-side harness `official_dit_bench` (its README: the official source at commit 18a2acc and a
separate Python for it, with torch==2.13.0). The harness's `bench_official.py` runs once to set the case up (the
official `MinimalV1LVGDiT` with its weights, inputs and output; fp32, no activation checkpointing). Then each
round runs, in fresh processes and alternating which goes first,
  * the official network on that case (`--official-side`, run by the official Python: the harness's measurement,
    2 warm-up calls then the median of 5, forward under no_grad and forward+backward of mean(y^2)), and
  * cosmos_jax on the same weights and inputs (`--ours-side`: the harness's `side_by_side_dit.py` method, output
    checked against the official one, 2 warm-up calls then the median of 7).
Both record wall time and the process's CPU time per call. The figure is official / ours of the median wall
times (above 1: cosmos_jax is faster), quoted as the median over rounds with the 1-minute load average beside
each run; the CPU-time ratio is printed too, as it is far less sensitive to other processes on a shared machine.

The bench case is the harness's: D=256, 4 blocks, 4 heads, B=2, 11 latent frames of 16x16, 64 text tokens, fp32.
`--threads N` is the official side's torch thread count; XLA uses every core it may run on. `--pin CPUS` runs both
sides under `taskset -c CPUS` (e.g. `--pin 1 --threads 1`: one core each; on a busy shared machine this avoids
thread-pool barriers waiting for descheduled threads, a cost that hits the two runtimes very differently).

Usage:
  python benchmarks/dit_vs_official.py --official-python OFFICIAL_VENV/bin/python --official-src SRC \
      [--harness DIR] [--rounds 3] [--threads 2] [--pin CPUS] [--out benchmarks/results/dit_vs_official.json]
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
MEASURES = ('forward', 'forward_backward')
DEFAULT_HARNESS = os.environ.get('OFFICIAL_DIT_BENCH', str(REPO.parent / 'shared' / 'tools' / 'official_dit_bench'))


# --------------------------------------------------------------------------------------------------------------
# Our side (run in its own process by the driver below).


def measure_ours(case_dir: str, repeats: int = 7) -> dict:
  """The harness's cosmos_jax measurement on the case written by `bench_official.py` into case_dir, in the
  configuration the commands use (host_memory.retain_freed_memory, before JAX starts)."""
  from cosmos_jax import host_memory
  retained = host_memory.retain_freed_memory()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from safetensors.numpy import load_file

  from cosmos_jax.convert import dit_rules
  from cosmos_jax.nn import dit

  case = pathlib.Path(case_dir)
  official = json.loads((case / 'official.json').read_text())
  cfg = dit.DiTConfig.from_official(official['config'])
  params = dit_rules.load_official(cfg, load_file(str(case / 'official_state_dict.safetensors')))
  io = dict(np.load(case / 'official_io.npz'))
  channels_last = lambda a: jnp.asarray(np.moveaxis(a, 1, -1))
  args = dict(x=channels_last(io['x_B_C_T_H_W']), timesteps=jnp.asarray(io['timesteps_B_T']),
              crossattn_emb=jnp.asarray(io['crossattn_emb']),
              condition_mask=channels_last(io['condition_video_input_mask_B_C_T_H_W']),
              padding_mask=jnp.asarray(io['padding_mask'][:, 0]))
  forward = jax.jit(lambda p, a: dit.forward(p, cfg, **a))
  loss = lambda p, a: jnp.mean(dit.forward(p, cfg, **a).astype(jnp.float32) ** 2)
  forward_backward = jax.jit(jax.value_and_grad(loss))

  y = np.asarray(forward(params, args))
  ref = np.moveaxis(io['output_B_C_T_H_W'], 1, -1)
  rel_l2 = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))

  results = {'forward': _timeit(lambda: forward(params, args), jax.block_until_ready, repeats),
             'forward_backward': _timeit(lambda: forward_backward(params, args), jax.block_until_ready, repeats)}
  return dict(rel_l2=rel_l2, results=results, jax=jax.__version__, retain_freed_host_memory=retained,
              dit_config=dict(
      dtype=cfg.dtype, attention=cfg.attention, remat_policy=cfg.remat_policy),
      xla_flags=os.environ.get('XLA_FLAGS', ''))


def _timeit(fn, sync, repeats: int) -> dict:
  sync(fn())
  sync(fn())
  times, cpu = [], []
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    sync(fn())
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
  return dict(median_s=statistics.median(times), min_s=min(times), max_s=max(times),
              cpu_median_s=statistics.median(cpu), page_faults_per_call=faults)


def measure_official(case_dir: str, threads: int, repeats: int = 5) -> dict:
  """The harness's official measurement, on the case its `bench_official.py` wrote (run by the official Python
  with the harness stubs and the official source on PYTHONPATH)."""
  import numpy as np
  import torch
  from cosmos_policy._src.predict2.networks.minimal_v1_lvg_dit import MinimalV1LVGDiT
  from cosmos_policy._src.predict2.networks.minimal_v4_dit import SACConfig
  from safetensors.torch import load_file

  torch.set_num_threads(threads)
  case = pathlib.Path(case_dir)
  official = json.loads((case / 'official.json').read_text())
  net = MinimalV1LVGDiT(**official['config'], sac_config=SACConfig(mode='none')).float()
  net.load_state_dict(load_file(str(case / 'official_state_dict.safetensors')))
  io = dict(np.load(case / 'official_io.npz'))
  kw = {k: torch.from_numpy(io[k]) for k in ('x_B_C_T_H_W', 'timesteps_B_T', 'crossattn_emb',
                                              'condition_video_input_mask_B_C_T_H_W', 'fps', 'padding_mask')}

  def forward():
    with torch.no_grad():
      return net(**kw)

  def forward_backward():
    net.zero_grad(set_to_none=True)
    (net(**kw).float() ** 2).mean().backward()

  y = forward().numpy()
  ref = io['output_B_C_T_H_W']
  rel_l2 = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
  results = {'forward': _timeit(forward, lambda _: None, repeats),
             'forward_backward': _timeit(forward_backward, lambda _: None, repeats)}
  return dict(rel_l2_vs_setup=rel_l2, results=results, torch=torch.__version__, threads=torch.get_num_threads())


# --------------------------------------------------------------------------------------------------------------
# Driver.


def _load() -> float:
  return os.getloadavg()[0]


def _run(cmd: list[str], env: dict, cwd: str | None, timeout: float) -> float:
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
  if proc.returncode:
    raise RuntimeError(f'command failed ({proc.returncode}): {" ".join(cmd)}\n{proc.stdout[-3000:]}\n'
                       f'{proc.stderr[-3000:]}')
  return time.perf_counter() - start


def _official_env(args) -> dict:
  harness = pathlib.Path(args.harness)
  env = {**os.environ, 'PYTHONPATH': f'{harness / "stubs"}:{args.official_src}'}
  env.pop('JAX_PLATFORMS', None)
  return env


def set_up_case(args, case_dir: pathlib.Path) -> dict:
  """The harness's bench_official.py: writes the official config, weights, inputs and output into case_dir."""
  harness = pathlib.Path(args.harness)
  cmd = [*_pin(args), args.official_python, str(harness / 'bench_official.py'), str(case_dir / 'official.json'),
         str(args.threads)]
  _run(cmd, _official_env(args), str(harness), args.timeout)
  return json.loads((case_dir / 'official.json').read_text())


def run_official(args, case_dir: pathlib.Path) -> dict:
  out = case_dir / 'official_side.json'
  cmd = [*_pin(args), args.official_python, str(pathlib.Path(__file__).resolve()), '--official-side', str(case_dir),
         '--side-out', str(out), '--threads', str(args.threads)]
  load_before = _load()
  seconds = _run(cmd, _official_env(args), str(args.harness), args.timeout)
  return dict(side='official', load_before=load_before, load_after=_load(), process_s=seconds,
              **json.loads(out.read_text()))


def run_ours(args, case_dir: pathlib.Path) -> dict:
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}
  out = case_dir / 'ours_side.json'
  cmd = [*_pin(args), sys.executable, str(pathlib.Path(__file__).resolve()), '--ours-side', str(case_dir),
         '--side-out', str(out)]
  load_before = _load()
  seconds = _run(cmd, env, str(REPO), args.timeout)
  result = json.loads(out.read_text())
  return dict(side='ours', load_before=load_before, load_after=_load(), process_s=seconds, **result)


def _pin(args) -> list[str]:
  return ['taskset', '-c', args.pin] if args.pin else []


def summarise(rounds: list[dict]) -> dict:
  summary = {}
  for measure in MEASURES:
    row = {}
    for kind, key in (('wall', 'median_s'), ('cpu', 'cpu_median_s')):
      official = [r['official']['results'][measure][key] for r in rounds]
      ours = [r['ours']['results'][measure][key] for r in rounds]
      ratios = [o / u for o, u in zip(official, ours)]
      row[kind] = dict(official_median_s=statistics.median(official), ours_median_s=statistics.median(ours),
                       ratio_of_medians=statistics.median(official) / statistics.median(ours),
                       median_round_ratio=statistics.median(ratios), round_ratios=ratios)
    summary[measure] = row
  return summary


def table(rounds: list[dict], summary: dict) -> str:
  lines = [f'{"round":>5s} {"first":>8s} {"load":>11s}  ' + ' '.join(
      f'{h:>24s}' for h in ('forward: official/ours', 'ratio (cpu ratio)', 'fwd+bwd: official/ours',
                            'ratio (cpu ratio)'))]
  for index, r in enumerate(rounds):
    off, ours = r['official']['results'], r['ours']['results']
    loads = [r['official']['load_before'], r['official']['load_after'], r['ours']['load_before'],
             r['ours']['load_after']]
    cells = []
    for m in MEASURES:
      o, u = off[m]['median_s'], ours[m]['median_s']
      cells += [f'{o * 1e3:.1f}/{u * 1e3:.1f} ms', f'{o / u:.2f}x ({off[m]["cpu_median_s"] / ours[m]["cpu_median_s"]:.2f}x)']
    lines.append(f'{index:5d} {r["first"]:>8s} {min(loads):5.1f}-{max(loads):<5.1f}  ' + ' '.join(
        f'{c:>24s}' for c in cells))
  for m in MEASURES:
    w, c = summary[m]['wall'], summary[m]['cpu']
    lines.append(f'{m:17s} wall: official {w["official_median_s"] * 1e3:8.1f} ms, ours {w["ours_median_s"] * 1e3:8.1f} ms,'
                 f' official/ours {w["ratio_of_medians"]:.2f}x (median round ratio {w["median_round_ratio"]:.2f}x);'
                 f' cpu time: {c["official_median_s"] * 1e3:.1f} vs {c["ours_median_s"] * 1e3:.1f} ms,'
                 f' {c["ratio_of_medians"]:.2f}x')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--official-python', help='the Python of the official code\'s virtualenv')
  parser.add_argument('--official-src', help='the official source tree at commit 18a2acc')
  parser.add_argument('--harness', default=DEFAULT_HARNESS, help='the official_dit_bench folder')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--threads', type=int, default=2, help='torch threads on the official side')
  parser.add_argument('--pin', default='', help='taskset CPU list for both sides (e.g. 0)')
  parser.add_argument('--timeout', type=float, default=1800, help='seconds per process')
  parser.add_argument('--out', default='benchmarks/results/dit_vs_official.json')
  parser.add_argument('--ours-side', metavar='CASE_DIR', help=argparse.SUPPRESS)
  parser.add_argument('--official-side', metavar='CASE_DIR', help=argparse.SUPPRESS)
  parser.add_argument('--side-out', help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.ours_side or args.official_side:
    result = measure_ours(args.ours_side) if args.ours_side else measure_official(args.official_side, args.threads)
    pathlib.Path(args.side_out).write_text(json.dumps(result, indent=1))
    return
  for name in ('official_python', 'official_src'):
    if not getattr(args, name):
      parser.error(f'--{name.replace("_", "-")} is required (see the harness README)')
  if not (pathlib.Path(args.harness) / 'bench_official.py').is_file():
    parser.error(f'no bench_official.py in --harness {args.harness}')

  rounds = []
  with tempfile.TemporaryDirectory(prefix='dit_vs_official_') as tmp:
    case_dir = pathlib.Path(tmp)
    print('set-up: the harness writes the official weights, inputs and output (not timed here)', flush=True)
    set_up_case(args, case_dir)
    for index in range(args.rounds):
      order = ('official', 'ours') if index % 2 == 0 else ('ours', 'official')
      record = {'first': order[0]}
      for side in order:
        record[side] = run_official(args, case_dir) if side == 'official' else run_ours(args, case_dir)
        print(f'round {index} {side:8s} load {record[side]["load_before"]:.1f}: ' + '  '.join(
            f'{m} {record[side]["results"][m]["median_s"] * 1e3:.1f} ms' for m in MEASURES), flush=True)
      rounds.append(record)
  summary = summarise(rounds)
  report = table(rounds, summary)
  print(report)
  result = dict(
      benchmark='dit_vs_official', command=' '.join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0].startswith(
          str(REPO)) else sys.argv[0], *sys.argv[1:]]),
      machine=dict(cores=os.cpu_count(), platform=platform.platform(), processor=platform.processor()),
      pin=args.pin or None, official_threads=args.threads, rel_l2_vs_official=rounds[0]['ours']['rel_l2'],
      ours_retain_freed_host_memory=rounds[0]['ours']['retain_freed_host_memory'],
      ours_config=rounds[0]['ours']['dit_config'], jax=rounds[0]['ours']['jax'],
      torch=rounds[0]['official']['torch'], xla_flags=rounds[0]['ours']['xla_flags'],
      case='harness bench config: D=256, 4 blocks, 4 heads, B=2, T=11, 16x16 latent, 64 text tokens, fp32',
      summary=summary, rounds=rounds, table=report)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
