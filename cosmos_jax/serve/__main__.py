"""`python -m cosmos_jax.serve`: serve a policy over HTTP (the official ALOHA client) or websocket (msgpack).

    # The released ALOHA policy, converted with `python -m cosmos_jax.convert` (statistics and text store are read
    # from next to the converted policy), HTTP on port 8777 as the official deploy.py:
    python -m cosmos_jax.serve http --dit out/aloha --vae out/vae
    # Best-of-N planning with the planning model (main planning command: N=8, ensembles 3 x 5, steps 10/5/5):
    python -m cosmos_jax.serve http --dit out/aloha --vae out/vae --planning-dit out/aloha_planning --planning
    # A random tiny model on the bundled sample (task 'transfer cube'), websocket:
    python -m cosmos_jax.serve websocket --tiny --port 8000
    # Instructions missing from the text store encoded on first use with a converted T5 (convert t5 ...):
    python -m cosmos_jax.serve http --dit out/aloha --vae out/vae --t5 out/t5
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cosmos_jax.serve import http as http_lib
from cosmos_jax.serve import service as service_lib
from cosmos_jax.serve import websocket as websocket_lib


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m cosmos_jax.serve', description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog='\n'.join(__doc__.split('\n')[2:]))
  parser.add_argument('protocol', choices=('http', 'websocket'),
                      help='http: POST /act with json_numpy (official ALOHA client); websocket: msgpack (openpi)')
  parser.add_argument('--host', default='0.0.0.0')
  parser.add_argument('--port', type=int, default=None,
                      help=f'default {http_lib.DEFAULT_PORT} (http) or {websocket_lib.DEFAULT_PORT} (websocket)')
  model = parser.add_argument_group('model')
  model.add_argument('--tiny', action='store_true', help='a random tiny policy on the bundled sample assets')
  model.add_argument('--tiny-image-size', type=int, default=224, help='image size the tiny policy expects')
  model.add_argument('--tiny-seed', type=int, default=0, help='seed of the tiny policy\'s random weights')
  model.add_argument('--dit', help='converted policy DiT (python -m cosmos_jax.convert dit ...)')
  model.add_argument('--vae', help='converted Wan2.1 VAE (python -m cosmos_jax.convert vae ...)')
  model.add_argument('--statistics', help='dataset_statistics.json (default: the one stored with --dit)')
  model.add_argument('--text-store', help='text store directory (default: the one stored with --dit)')
  model.add_argument('--t5', help='converted T5 encoder (python -m cosmos_jax.convert t5 ...): tasks missing from the '
                     'text store are encoded on first use and cached')
  model.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None,
                     help='DiT activation dtype (default: as converted; the released policy runs bfloat16)')
  model.add_argument('--attention', choices=('xla', 'cudnn'), default=None, help='DiT attention implementation')
  model.add_argument('--action-steps', type=int, default=None,
                     help='sampler steps of the action query without planning (default 10; --tiny: 3)')
  model.add_argument('--seed', type=int, default=195, help='noise seed (official: 195, the same at every request)')
  model.add_argument('--no-future-images', action='store_true', help='skip decoding future_image_predictions')
  plan = parser.add_argument_group('planning (best-of-N, policy_spec 10)')
  plan.add_argument('--planning', action='store_true', help='turn best-of-N planning on')
  plan.add_argument('--planning-dit', help='converted planning model (default: the policy does everything)')
  plan.add_argument('--num-candidates', type=int, default=8, help='N candidates')
  plan.add_argument('--planning-action-steps', type=int, default=10)
  plan.add_argument('--future-steps', type=int, default=5, help='future-state ensemble steps: linspace(1, this, K)')
  plan.add_argument('--future-ensemble', type=int, default=3, help='K future-state samples per candidate')
  plan.add_argument('--value-steps', type=int, default=5, help='value ensemble steps: linspace(1, this, V)')
  plan.add_argument('--value-ensemble', type=int, default=5, help='V value samples per future sample')
  plan.add_argument('--aggregation', default='majority_mean',
                    choices=('average', 'lcb', 'success_vote', 'majority_mean'))
  plan.add_argument('--value-of-state-action', action='store_true',
                    help='V(s, a, s\') instead of the planning model\'s V(s\') (value masking off)')
  plan.add_argument('--search-depth', type=int, default=1)
  serving = parser.add_argument_group('serving')
  serving.add_argument('--max-payload-mb', type=float, default=service_lib.DEFAULT_MAX_PAYLOAD_BYTES / 2 ** 20)
  serving.add_argument('--max-queue', type=int, default=service_lib.DEFAULT_MAX_QUEUE,
                       help='requests allowed to wait for the model (the running one not counted); more are '
                            'refused (503 with Retry-After / error frame)')
  serving.add_argument('--deadline-s', type=float, default=service_lib.DEFAULT_DEADLINE_S,
                       help='a request not started this long after queuing gets 504 and is never run')
  serving.add_argument('--body-timeout-s', type=float, default=service_lib.DEFAULT_BODY_TIMEOUT_S,
                       help='HTTP: a request body not received within this time gets 408 and the connection closes')
  serving.add_argument('--no-warmup', action='store_true', help='do not compile before accepting requests')
  return parser


def planning_config(args: argparse.Namespace):
  from cosmos_jax.policy import planning as planning_lib  # pylint: disable=g-import-not-at-top
  if not args.planning:
    if args.planning_dit:
      raise ValueError('--planning-dit needs --planning')
    return None
  return planning_lib.PlanningConfig(
      num_candidates=args.num_candidates, base_seed=args.seed, action_steps=args.planning_action_steps,
      predict_future=True, value_source='future_state', value_ensemble=True,
      future_steps=planning_lib.ensemble_steps(args.future_steps, args.future_ensemble),
      value_steps=planning_lib.ensemble_steps(args.value_steps, args.value_ensemble), aggregation=args.aggregation,
      value_of_future_state=not args.value_of_state_action, search_depth=args.search_depth)


def make_runner(args: argparse.Namespace):
  from cosmos_jax.serve import runner as runner_lib  # pylint: disable=g-import-not-at-top
  planning = planning_config(args)
  common = dict(decode_future_images=not args.no_future_images)
  if args.action_steps is not None:
    common['action_steps'] = args.action_steps
  if args.t5:
    common['t5_dir'] = args.t5
  if args.tiny:
    if args.dit or args.vae or args.planning_dit:
      raise ValueError('--tiny builds its own model; do not combine it with --dit/--vae/--planning-dit')
    return runner_lib.PolicyRunner.tiny(seed=args.tiny_seed, image_size=args.tiny_image_size,
                                        noise_seed=args.seed, planning=planning, **common)
  if not args.dit or not args.vae:
    raise ValueError('give --dit and --vae (converted checkpoints), or --tiny')
  overrides = {k: v for k, v in (('dtype', args.dtype), ('attention', args.attention)) if v is not None}
  return runner_lib.PolicyRunner.from_checkpoints(
      args.dit, args.vae, planning_dir=args.planning_dit, statistics=args.statistics, text_store=args.text_store,
      planning=planning, dit_overrides=overrides, seed=args.seed, **common)


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  try:
    runner = make_runner(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if not args.no_warmup:
    runner.warmup()
  service = service_lib.PolicyService(runner, max_queue=args.max_queue,
                                      max_payload_bytes=int(args.max_payload_mb * 2 ** 20),
                                      deadline_s=args.deadline_s, body_timeout_s=args.body_timeout_s)
  if args.protocol == 'http':
    server = http_lib.HTTPServer(service, args.host, args.port or http_lib.DEFAULT_PORT)
  else:
    server = websocket_lib.WebsocketServer(service, args.host, args.port or websocket_lib.DEFAULT_PORT)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    service.close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
