"""The in-process policy behind every server: a robot request protocol in front of a policy query.

`PolicyRunner.validate(request)` (the protocol, pure numpy: the servers call it on the event loop before
queuing) gives an `Observation`; `infer(observation)` runs the query and formats its response; `act(request)`
does both. Validation errors are `InvalidObservation`s whose message names the field, the expected value and the
received one; the servers send that message back and keep serving. `warmup()` runs one neutral request so the
first real one does not pay for compilation.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from cosmos_jax.policy import planning as planning_lib
from cosmos_jax.serve import factory
from cosmos_jax.serve import query as query_lib
from cosmos_jax.serve import protocols
from cosmos_jax.serve.protocols import aloha
from cosmos_jax.serve.protocols import base

log = logging.getLogger(__name__)


class PolicyRunner:
  """`protocol` (requests and responses) + `query` (the model). Not thread-safe: the servers run one `infer` at
  a time."""

  def __init__(self, query: query_lib.PolicyQuery, protocol: base.RobotProtocol, name: str):
    self.query = query
    self.protocol = protocol
    self.name = name

  @classmethod
  def build(cls, models: factory.PolicyModels, *, layout: str = 'aloha', image_size: int = 224,
            action_steps: int = 10, seed: int = query_lib.DEFAULT_SEED, randomize_seed: bool = False,
            use_variance_scale: bool = False, planning: planning_lib.PlanningConfig | None = None,
            planning_devices: int = 0, decode_future_images: bool = True,
            proprio_margin: float | None = aloha.DEFAULT_PROPRIO_MARGIN) -> 'PolicyRunner':
    """The runner of `models` with `layout`'s request protocol."""
    query = query_lib.PolicyQuery(models, layout=layout, image_size=image_size, action_steps=action_steps,
                                  seed=seed, randomize_seed=randomize_seed, use_variance_scale=use_variance_scale,
                                  planning=planning, planning_devices=planning_devices,
                                  decode_future_images=decode_future_images)
    protocol = protocols.get(layout)(image_size=image_size, statistics=models.statistics,
                                     tasks=models.text_store.tasks, proprio_margin=proprio_margin,
                                     accept_new_tasks=models.text_encoder is not None)
    return cls(query, protocol, models.name)

  @classmethod
  def from_checkpoints(cls, checkpoint: str | os.PathLike, vae: str | os.PathLike | None = None, *,
                       step: int | None = None, use_ema: bool | None = None,
                       planning_dir: str | os.PathLike | None = None, statistics: str | os.PathLike | None = None,
                       text_store: str | os.PathLike | None = None, planning: planning_lib.PlanningConfig | None = None,
                       t5_dir: str | os.PathLike | None = None, dit_overrides: Mapping[str, Any] | None = None,
                       merge_lora: bool = True, lora_base: str | os.PathLike | None = None,
                       **kwargs) -> 'PolicyRunner':
    """From a policy checkpoint or training workdir (`factory.from_checkpoints`). A planning_dir without a
    `planning` config uses the main ALOHA planning settings."""
    models = factory.from_checkpoints(checkpoint, vae, step=step, use_ema=use_ema, planning_dir=planning_dir,
                                      statistics=statistics, text_store=text_store, t5_dir=t5_dir,
                                      dit_overrides=dit_overrides, layout=kwargs.get('layout', 'aloha'),
                                      merge_lora=merge_lora, lora_base=lora_base)
    if planning_dir is not None and planning is None:
      planning = planning_lib.PlanningConfig.main_command()
    return cls.build(models, planning=planning, **kwargs)

  @classmethod
  def tiny(cls, seed: int = 0, image_size: int = 224, *, action_steps: int = 3,
           noise_seed: int = query_lib.DEFAULT_SEED, with_planning_model: bool = False,
           t5_dir: str | os.PathLike | None = None, **kwargs) -> 'PolicyRunner':
    """A random tiny policy on the bundled ALOHA sample (`factory.tiny`; task 'transfer cube'; `layout='libero'` or
    'robocasa': stand-in assets). `seed` draws the
    weights; `noise_seed` is the sampler seed (the official 195)."""
    models = factory.tiny(seed, benchmark=kwargs.get('layout', 'aloha'), with_planning_model=with_planning_model,
                          t5_dir=t5_dir)
    return cls.build(models, image_size=image_size, action_steps=action_steps, seed=noise_seed, **kwargs)

  def metadata(self) -> dict:
    """What a client needs to know before sending observations (sent on websocket connect)."""
    return {'policy': self.name, **self.protocol.metadata(), **self.query.metadata()}

  def validate(self, request: Any) -> base.Observation:
    return self.protocol.validate(request)

  def infer(self, observation: base.Observation) -> dict:
    """The response to a validated observation, with the per-stage `timing` (seconds, results blocked on)."""
    return self.protocol.response(self.query(observation))

  def act(self, request: Any) -> dict:
    """Validates and answers one request; `timing` gains `validate_s` and `total_s`."""
    start = time.perf_counter()
    observation = self.validate(request)
    validated = time.perf_counter()
    response = self.infer(observation)
    response['timing'] = {'validate_s': validated - start, **response['timing'],
                          'total_s': time.perf_counter() - start}
    return response

  def warmup(self, task: str | None = None) -> float:
    """Compiles every program with one neutral request; returns the seconds it took."""
    start = time.perf_counter()
    self.act(self.protocol.example_request(task))
    seconds = time.perf_counter() - start
    log.info('warm-up (compilation) took %.1f s', seconds)
    return seconds
