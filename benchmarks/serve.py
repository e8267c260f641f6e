"""Request latency through the policy servers (p50 / p95), with the server's per-stage timing.

Each row starts a server in this process (HTTP and/or websocket, ephemeral port, background event loop), sends
--requests sequential requests from a client in the main thread (json_numpy over HTTP as the official ALOHA client;
msgpack over websocket with our client) and records the client-side wall time per request, after --warmup requests
(compilation). The server-side stages come from the response's `timing` (request decode, queue, VAE encode,
policy or planning, VAE decode of the future images).

Rows:
  tiny-cpu          the random tiny policy (PolicyRunner.tiny: tiny DiT, official width-8 VAE) on the host CPU, at
                    --tiny-image-size (64 by default: the width-8 VAE at 224 px takes tens of seconds per request
                    on a small CPU; the protocol and code path are the same).
  2b                the 2B DiT + the real Wan2.1 VAE on a GPU, 224 px, 10 action steps (the released base policy
                    command). Converted checkpoints with --dit/--vae, else random weights of the real shapes
                    (latency does not depend on the values), bf16.
  2b-planning       as 2b plus best-of-N planning with the main ALOHA planning settings (N = 8, steps 10 / 5 / 5,
                    ensembles 3 x 5, majority_mean; --planning-dit, else the policy weights as the planning model),
                    all candidates batched on the one GPU.
GPU rows are skipped (and listed as skipped) when JAX has no GPU.

Usage: python benchmarks/serve.py [--rows tiny-cpu,2b,2b-planning] [--protocols http,websocket] [--requests 10]
                                  [--out benchmarks/results/serve.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cosmos_jax.data import bundled  # pylint: disable=g-import-not-at-top
from cosmos_jax.data import stats as stats_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.data import text as text_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.nn import dit as dit_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.nn import vae as vae_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.policy import planning  # pylint: disable=g-import-not-at-top
from cosmos_jax.serve import client as client_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.serve import factory  # pylint: disable=g-import-not-at-top
from cosmos_jax.serve import http as http_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.serve import runner as runner_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.serve import service as service_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.serve import websocket as websocket_lib  # pylint: disable=g-import-not-at-top

ROWS = ('tiny-cpu', '2b', '2b-planning')
GPU_ROWS = ('2b', '2b-planning')
STAGES = ('request_decode_s', 'queue_s', 'inference_s', 'vae_encode_s', 'policy_s', 'planning_s', 'vae_decode_s')


def random_2b_runner(args, with_planning: bool) -> runner_lib.PolicyRunner:
  """The 2B policy with random weights of the real shapes (bf16), the real VAE (bf16), bundled stats/text."""
  dit_cfg = dit_lib.DiTConfig.preset('2B', dtype='bfloat16', param_dtype='bfloat16', attention=args.attention)
  vae_cfg = vae_lib.VAEConfig.policy()
  dit_params = jax.jit(lambda k: dit_lib.init_params(dit_cfg, k))(jax.random.key(0))
  vae_params = jax.jit(lambda k: vae_lib.init_params(vae_cfg, k))(jax.random.key(1))
  sample = bundled.sample_dir('aloha')
  models = factory.PolicyModels(
      dit_cfg=dit_cfg, dit_params=dit_params, vae_cfg=vae_cfg, vae_params=vae_params,
      statistics=stats_lib.load_statistics(sample / stats_lib.STATISTICS_FILENAME),
      text_store=text_lib.TextStore.load(bundled.text_store_dir('aloha')), name='random-weight 2B policy')
  return runner_lib.PolicyRunner.build(models, image_size=224, action_steps=10,
                                       planning=planning.PlanningConfig.main_command() if with_planning else None)


def make_runner(row: str, args) -> runner_lib.PolicyRunner:
  if row == 'tiny-cpu':
    with jax.default_device(jax.devices('cpu')[0]):
      return runner_lib.PolicyRunner.tiny(image_size=args.tiny_image_size)
  with_planning = row == '2b-planning'
  if args.dit:
    return runner_lib.PolicyRunner.from_checkpoints(
        args.dit, args.vae, planning_dir=args.planning_dit if with_planning else None,
        planning=planning.PlanningConfig.main_command() if with_planning else None, action_steps=10,
        dit_overrides={'dtype': 'bfloat16', 'attention': args.attention})
  return random_2b_runner(args, with_planning)


def observation(runner: runner_lib.PolicyRunner, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  protocol = runner.protocol
  size = protocol.image_size
  obs = {f: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for f in protocol.image_fields}
  lo, hi = protocol.statistics['proprio_min'], protocol.statistics['proprio_max']
  obs['proprio'] = (lo + rng.uniform(0.2, 0.8, lo.shape) * (hi - lo)).astype(np.float32)
  obs['task_description'] = protocol.tasks[0]
  return obs


def percentile(values, q) -> float:
  return float(np.percentile(np.asarray(values), q))


def measure(runner, protocol: str, args) -> dict:
  service = service_lib.PolicyService(runner)
  loop = service_lib.BackgroundLoop()
  server = (http_lib.HTTPServer if protocol == 'http' else websocket_lib.WebsocketServer)(service, '127.0.0.1', 0)
  port = loop.run(server.start())
  try:
    if protocol == 'http':
      http_client = client_lib.HTTPClient(f'http://127.0.0.1:{port}/act')
      send, close = http_client.act, lambda: None
    else:
      ws_client = client_lib.WebsocketClient('127.0.0.1', port)
      send, close = ws_client.infer, ws_client.close
    obs = [observation(runner, i) for i in range(args.requests + args.warmup)]
    latencies, timings = [], []
    for i, o in enumerate(obs):
      start = time.perf_counter()
      response = send(o)
      elapsed = time.perf_counter() - start
      assert np.asarray(response['actions']).shape == (runner.query.layout.chunk_size, runner.query.layout.action_dim)
      if i >= args.warmup:
        latencies.append(elapsed)
        timings.append(response['timing'])
    close()
  finally:
    loop.run(server.stop())
    loop.stop()
    service.close()
  stages = {k: float(np.median([t[k] for t in timings])) for k in STAGES if all(k in t for t in timings)}
  return {'protocol': protocol, 'requests': len(latencies), 'p50_s': percentile(latencies, 50),
          'p95_s': percentile(latencies, 95), 'mean_s': float(np.mean(latencies)), 'min_s': float(min(latencies)),
          'max_s': float(max(latencies)), 'server_stage_median_s': stages, 'latencies_s': latencies}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--rows', default=','.join(ROWS))
  parser.add_argument('--protocols', default='http,websocket')
  parser.add_argument('--requests', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=1, help='untimed requests first (compilation)')
  parser.add_argument('--tiny-image-size', type=int, default=64)
  parser.add_argument('--dit', help='converted 2B policy (else random 2B weights)')
  parser.add_argument('--vae', help='converted Wan2.1 VAE (with --dit)')
  parser.add_argument('--planning-dit', help='converted planning model for the 2b-planning row')
  parser.add_argument('--attention', default='cudnn', choices=('xla', 'cudnn'), help='2B rows')
  parser.add_argument('--out', default='benchmarks/results/serve.json')
  args = parser.parse_args(argv)
  rows = [r.strip() for r in args.rows.split(',') if r.strip()]
  unknown = sorted(set(rows) - set(ROWS))
  if unknown:
    parser.error(f'unknown rows {unknown}; known: {ROWS}')
  if bool(args.dit) != bool(args.vae):
    parser.error('--dit and --vae go together')
  protocols = [p.strip() for p in args.protocols.split(',')]
  has_gpu = any(d.platform == 'gpu' for d in jax.devices())

  results, skipped = [], []
  for row in rows:
    if row in GPU_ROWS and not has_gpu:
      skipped.append({'row': row, 'reason': f'no GPU (JAX backend {jax.default_backend()})'})
      continue
    start = time.perf_counter()
    runner = make_runner(row, args)
    build_s = time.perf_counter() - start
    warmup_s = runner.warmup()
    device = (jax.devices('cpu')[0] if row == 'tiny-cpu' else jax.devices()[0])
    for protocol in protocols:
      entry = {'row': row, 'device': device.device_kind, 'image_size': runner.query.image_size,
               'planning': dataclasses.asdict(runner.query.planning) if runner.query.planning else None,
               'action_steps': runner.query.action_steps, 'build_s': build_s, 'compile_warmup_s': warmup_s}
      if row == 'tiny-cpu':
        with jax.default_device(jax.devices('cpu')[0]):
          entry.update(measure(runner, protocol, args))
      else:
        entry.update(measure(runner, protocol, args))
      results.append(entry)
      print(f'{row} {protocol}: p50 {entry["p50_s"] * 1e3:.1f} ms, p95 {entry["p95_s"] * 1e3:.1f} ms', flush=True)
    del runner

  header = (f'{"row":<12} {"protocol":<10} {"device":<22} {"px":>4} {"n":>3} {"p50 ms":>9} {"p95 ms":>9} '
            f'{"encode ms":>9} {"model ms":>9} {"decode ms":>9}')
  print(header)
  print('-' * len(header))
  for e in results:
    s = e['server_stage_median_s']
    model = s.get('policy_s', s.get('planning_s', float('nan')))
    print(f'{e["row"]:<12} {e["protocol"]:<10} {e["device"][:22]:<22} {e["image_size"]:>4} {e["requests"]:>3} '
          f'{e["p50_s"] * 1e3:>9.1f} {e["p95_s"] * 1e3:>9.1f} {s.get("vae_encode_s", 0) * 1e3:>9.1f} '
          f'{model * 1e3:>9.1f} {s.get("vae_decode_s", 0) * 1e3:>9.1f}')
  for s in skipped:
    print(f'{s["row"]:<12} skipped: {s["reason"]}')

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      'benchmark': 'serve', 'command': ' '.join(['python', 'benchmarks/serve.py'] + list(argv or sys.argv[1:])),
      'host': {'platform': platform.platform(), 'python': platform.python_version(), 'jax': jax.__version__,
               'cpu_count': os.cpu_count(), 'backend': jax.default_backend()},
      'note': 'client wall time per request (sequential, one client); server stages are medians of the '
              'response timing. CPU figures depend heavily on machine load.',
      'results': results, 'skipped': skipped}, indent=2))
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
