"""Server start-up to the first answered request, cold (empty compilation cache) against warm (cache filled).

Each run starts `python -m cosmos_jax.serve http --config=CONFIG` (default: the tiny ALOHA policy) in a fresh
process with $COSMOS_JAX_COMPILATION_CACHE pointing at a directory, reads the port from its log, and times from the
launch to the first /act answer (the server compiles its programs before it listens: serving.warmup). A cold run
gets a new empty directory, which it fills; a warm run reuses a filled one. Runs alternate (cold, warm, then warm,
cold, ...) and the figure is the ratio of the medians, cold / warm (above 1: the cache helps).

A warm start reads two things from that directory: compiled executables (JAX's persistent compilation cache) and
the traced programs (cosmos_jax/program_cache.py: jax.export of the VAE encode, action query, future-image decode
and tiny weight init), so it neither traces nor compiles them. Measured (2 shared cores, load 1.7-2.1, median of
3 rounds, `python benchmarks/warm_start.py --rounds 3`): cold 9.25 s, warm 2.25 s, cold/warm 4.11x (another run,
load 1.6-2.4, 2 rounds: 12.93 vs 2.94 s, 4.39x; 2.87x with the compilation cache alone). The rest of a warm start: imports ~0.8 s, executable reads ~0.7-1.0 s, the VAE init
traced for its shape check ~0.3 s, the warm-up request and the first answer ~0.4 s each.

Usage: python benchmarks/warm_start.py [--rounds 3] [--config configs/serve/aloha.py:tiny]
                                       [--out benchmarks/results/warm_start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def example_request(config_arg: str) -> dict:
  """The tiny ALOHA protocol's valid neutral request (built from the bundled sample's assets, no model)."""
  from cosmos_jax.data import bundled
  from cosmos_jax.data import stats as stats_lib
  from cosmos_jax.data import text as text_lib
  from cosmos_jax.serve.protocols import aloha
  from configs.serve import aloha as serve_config

  variant = config_arg.split(':', 1)[1] if ':' in config_arg else None
  config = serve_config.get_config(variant)
  sample = bundled.sample_dir('aloha')
  protocol = aloha.AlohaProtocol(image_size=config.model.image_size,
                                 statistics=stats_lib.load_statistics(sample / stats_lib.STATISTICS_FILENAME),
                                 tasks=text_lib.TextStore.load(bundled.text_store_dir('aloha')).tasks)
  return protocol.example_request()


def cache_size(directory: pathlib.Path) -> tuple[int, int]:
  files = [p for p in directory.rglob('*') if p.is_file()]
  return len(files), sum(p.stat().st_size for p in files)


def start_to_first_answer(config_arg: str, cache_dir: pathlib.Path, request: dict, timeout: float) -> dict:
  from cosmos_jax.serve import client as client_lib

  env = {**os.environ, 'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu'), 'PYTHONPATH': str(REPO),
         'COSMOS_JAX_COMPILATION_CACHE': str(cache_dir)}
  load = os.getloadavg()[0]
  start = time.perf_counter()
  process = subprocess.Popen([sys.executable, '-m', 'cosmos_jax.serve', 'http', f'--config={config_arg}',
                              '--config.host=127.0.0.1', '--config.port=0'], cwd=REPO, env=env, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  log = []
  try:
    port = None
    while port is None:
      line = process.stderr.readline()
      if not line and process.poll() is not None:
        raise RuntimeError('the server exited before listening:\n' + ''.join(log[-40:]))
      if time.perf_counter() - start > timeout:
        raise TimeoutError(f'no server after {timeout} s:\n' + ''.join(log[-40:]))
      log.append(line)
      found = re.search(r'HTTP policy server on http://127\.0\.0\.1:(\d+)', line)
      port = int(found.group(1)) if found else None
    listening = time.perf_counter() - start
    reply = client_lib.HTTPClient(f'http://127.0.0.1:{port}/act', timeout=timeout).act(request)
    answered = time.perf_counter() - start
    if 'actions' not in reply:
      raise RuntimeError(f'the first answer has no actions: {sorted(reply)}')
  finally:
    process.send_signal(signal.SIGINT)
    try:
      process.wait(timeout=60)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
  return dict(seconds_to_first_answer=answered, seconds_to_listening=listening, load_before=load,
              load_after=os.getloadavg()[0])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default='configs/serve/aloha.py:tiny')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--timeout', type=float, default=1200)
  parser.add_argument('--out', default='benchmarks/results/warm_start.json')
  args = parser.parse_args()

  request = example_request(args.config)
  runs = []
  with tempfile.TemporaryDirectory(prefix='warm_start_') as tmp:
    filled = None
    for index in range(args.rounds):
      order = ('cold', 'warm') if index % 2 == 0 or filled is None else ('warm', 'cold')
      for kind in order:
        if kind == 'cold':
          cache_dir = pathlib.Path(tmp) / f'cache_{index}'
          cache_dir.mkdir()
        else:
          cache_dir = filled
        run = dict(round=index, kind=kind, **start_to_first_answer(args.config, cache_dir, request, args.timeout))
        run['cache_files'], run['cache_bytes'] = cache_size(cache_dir)
        if kind == 'cold':
          filled = cache_dir
        runs.append(run)
        print(f"round {index} {kind}: first answer after {run['seconds_to_first_answer']:.2f} s (listening after "
              f"{run['seconds_to_listening']:.2f} s), cache {run['cache_files']} files "
              f"{run['cache_bytes'] / 1e6:.1f} MB, load {run['load_before']:.1f}", flush=True)
  medians = {kind: statistics.median(r['seconds_to_first_answer'] for r in runs if r['kind'] == kind)
             for kind in ('cold', 'warm')}
  listening = {kind: statistics.median(r['seconds_to_listening'] for r in runs if r['kind'] == kind)
               for kind in ('cold', 'warm')}
  ratio = medians['cold'] / medians['warm']
  loads = [r['load_before'] for r in runs] + [r['load_after'] for r in runs]
  report = (f"start-up to the first answer ({args.config}), median of {args.rounds}: cold {medians['cold']:.2f} s, "
            f"warm {medians['warm']:.2f} s, cold/warm {ratio:.2f}x (to listening: {listening['cold']:.2f} vs "
            f"{listening['warm']:.2f} s); load {min(loads):.1f}-{max(loads):.1f}")
  print(report)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(benchmark='warm_start', command=' '.join(['python', 'benchmarks/warm_start.py',
                                                                           *sys.argv[1:]]),
                                 cores=os.cpu_count(), median_s=medians, median_listening_s=listening,
                                 cold_over_warm=ratio, runs=runs, table=report), indent=1))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
