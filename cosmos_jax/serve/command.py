"""The serve command's work, from a config (configs/serve/*.py) to a running server; `__main__` parses the flags.

Kept apart from `__main__` so that it can be imported (tests, notebooks) without defining absl flags.
"""

from __future__ import annotations

import logging

import ml_collections

from cosmos_jax.policy import planning as planning_lib
from cosmos_jax.serve import factory
from cosmos_jax.serve import http as http_lib
from cosmos_jax.serve import runner as runner_lib
from cosmos_jax.serve import service as service_lib
from cosmos_jax.serve import websocket as websocket_lib

log = logging.getLogger(__name__)

# Mode -> (server, its default port).
MODES = {'http': (http_lib.HTTPServer, http_lib.DEFAULT_PORT),
         'websocket': (websocket_lib.WebsocketServer, websocket_lib.DEFAULT_PORT)}


def planning_config(config: ml_collections.ConfigDict) -> planning_lib.PlanningConfig | None:
  """The best-of-N settings of config.planning (official deploy.py options; see configs/serve/aloha.py), or None
  when planning is off. Contradictory or ineffective combinations are refused by PlanningConfig."""
  p = config.planning
  if not p.enabled:
    if p.checkpoint:
      raise ValueError('planning.checkpoint needs planning.enabled=True')
    return None
  for name in ('future_ensemble', 'value_ensemble'):
    if p[name] < 0:
      raise ValueError(f'planning.{name} must be >= 0 (0: ensemble off), got {p[name]}')
  source = p.value
  masked = p.value_of_future_state
  if masked is None:  # V(s') masking belongs to a planning model trained with it (official default: off)
    masked = bool(p.checkpoint) and source == 'future_state'
  return planning_lib.PlanningConfig(
      num_candidates=p.num_candidates, base_seed=config.model.seed, randomize_seed=config.model.randomize_seed,
      use_variance_scale=config.model.use_variance_scale, action_steps=p.action_steps,
      predict_future=p.predict_future, value_source=source,
      future_steps=(planning_lib.member_steps(p.future_steps, p.future_ensemble or None) if p.predict_future
                    else (1,)),
      future_aggregation=p.future_aggregation,
      value_steps=(planning_lib.member_steps(p.value_steps, p.value_ensemble or None) if source != 'parallel'
                   else (1,)),
      value_ensemble=bool(p.value_ensemble) and source != 'parallel', aggregation=p.aggregation,
      value_of_future_state=bool(masked), q_value_mask_future_state=p.q_value_mask_future_state,
      search_depth=p.search_depth, depth_aggregation=p.depth_aggregation)


def make_models(config: ml_collections.ConfigDict) -> factory.PolicyModels:
  m = config.model
  if m.tiny:
    if m.checkpoint or m.vae or config.planning.checkpoint:
      raise ValueError('model.tiny builds its own model; do not combine it with model.checkpoint/model.vae/'
                       'planning.checkpoint')
    return factory.tiny(m.tiny_seed, benchmark=config.layout, t5_dir=m.t5 or None)
  if not m.checkpoint:
    raise ValueError('give the policy: --checkpoint=WORKDIR_OR_CHECKPOINT (--config.model.checkpoint), or use the '
                     'tiny variant (--config=configs/serve/aloha.py:tiny)')
  overrides = {k: v for k, v in (('dtype', m.dtype), ('attention', m.attention)) if v}
  p = config.planning
  return factory.from_checkpoints(m.checkpoint, m.vae or None, step=m.step, use_ema=m.use_ema,
                                  planning_dir=p.checkpoint or None, planning_step=p.step,
                                  planning_use_ema=p.use_ema, statistics=m.statistics or None,
                                  text_store=m.text_store or None, t5_dir=m.t5 or None, dit_overrides=overrides,
                                  layout=config.layout, merge_lora=m.get('merge_lora', True),
                                  lora_base=m.get('lora_base') or None)


def make_runner(config: ml_collections.ConfigDict) -> runner_lib.PolicyRunner:
  planning = planning_config(config)
  m = config.model
  return runner_lib.PolicyRunner.build(make_models(config), layout=config.layout, image_size=m.image_size,
                                       action_steps=m.action_steps, seed=m.seed, randomize_seed=m.randomize_seed,
                                       use_variance_scale=m.use_variance_scale, planning=planning,
                                       planning_devices=config.planning.devices,
                                       decode_future_images=m.future_images)


def make_service(config: ml_collections.ConfigDict, runner: service_lib.Runner) -> service_lib.PolicyService:
  s = config.serving
  return service_lib.PolicyService(runner, max_queue=s.max_queue, max_payload_bytes=int(s.max_payload_mb * 2 ** 20),
                                   deadline_s=s.deadline_s, body_timeout_s=s.body_timeout_s)


def make_server(mode: str, config: ml_collections.ConfigDict, service: service_lib.PolicyService):
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; modes: {sorted(MODES)}')
  server_class, default_port = MODES[mode]
  return server_class(service, config.host, default_port if config.port is None else config.port)


def serve(mode: str, config: ml_collections.ConfigDict) -> None:
  """Builds the runner (compiling it unless serving.warmup is off) and serves until interrupted."""
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; modes: {sorted(MODES)}')
  runner = make_runner(config)
  if config.serving.warmup:
    runner.warmup()
  service = make_service(config, runner)
  server = make_server(mode, config, service)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    log.info('interrupted; shutting down')
  finally:
    service.close()
