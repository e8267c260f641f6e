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
  """The best-of-N settings (the main ALOHA planning command with the config's numbers), or None when off."""
  p = config.planning
  if not p.enabled:
    if p.dit:
      raise ValueError('planning.dit needs planning.enabled=True')
    return None
  return planning_lib.PlanningConfig.main_command(
      num_candidates=p.num_candidates, base_seed=config.model.seed, action_steps=p.action_steps,
      future_steps=planning_lib.ensemble_steps(p.future_steps, p.future_ensemble),
      value_steps=planning_lib.ensemble_steps(p.value_steps, p.value_ensemble), aggregation=p.aggregation,
      value_of_future_state=not p.value_of_state_action, search_depth=p.search_depth)


def make_models(config: ml_collections.ConfigDict) -> factory.PolicyModels:
  m = config.model
  if m.tiny:
    if m.dit or m.vae or config.planning.dit:
      raise ValueError('model.tiny builds its own model; do not combine it with model.dit/model.vae/planning.dit')
    return factory.tiny(m.tiny_seed, benchmark=config.layout, t5_dir=m.t5 or None)
  if not m.dit or not m.vae:
    raise ValueError('give the converted checkpoints, --config.model.dit=DIR --config.model.vae=DIR, or use the '
                     'tiny variant (--config=configs/serve/aloha.py:tiny)')
  overrides = {k: v for k, v in (('dtype', m.dtype), ('attention', m.attention)) if v}
  return factory.from_checkpoints(m.dit, m.vae, planning_dir=config.planning.dit or None,
                                  statistics=m.statistics or None, text_store=m.text_store or None,
                                  t5_dir=m.t5 or None, dit_overrides=overrides)


def make_runner(config: ml_collections.ConfigDict) -> runner_lib.PolicyRunner:
  planning = planning_config(config)
  return runner_lib.PolicyRunner.build(make_models(config), layout=config.layout, image_size=config.model.image_size,
                                       action_steps=config.model.action_steps, seed=config.model.seed,
                                       planning=planning, decode_future_images=config.model.future_images)


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
