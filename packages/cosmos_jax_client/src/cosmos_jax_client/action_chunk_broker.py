"""One action per control step from the last action chunk (openpi's broker): the policy is queried every `horizon`
steps, the official ALOHA client's open-loop execution.

    broker = ActionChunkBroker(client)                # horizon: the client's metadata['open_loop_steps']
    for step in range(...):
      out = broker.infer(observation)                 # queries the server every `horizon` steps
      robot.apply(out['action'])                      # one (action_dim,) action per step
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class ActionChunkBroker:
  """Hands out one action per call from the last response's chunk; queries the policy again when `horizon`
  actions have been used (or on `reset`). The other response fields are passed through with every action."""

  def __init__(self, policy: Any, horizon: int | None = None, action_key: str = 'actions'):
    if horizon is None:
      horizon = int(getattr(policy, 'metadata', {}).get('open_loop_steps', 0))
    if horizon < 1:
      raise ValueError(f'action horizon must be >= 1, got {horizon} (pass horizon= when the policy has no metadata)')
    self.policy = policy
    self.horizon = horizon
    self.action_key = action_key
    self.queries = 0
    self._response: dict | None = None
    self._step = 0

  def infer(self, observation: Mapping[str, Any]) -> dict:
    if self._response is None:
      response = self.policy.infer(observation)
      chunk = np.asarray(response[self.action_key])
      if chunk.ndim != 2 or chunk.shape[0] < self.horizon:
        raise ValueError(f'response {self.action_key!r} has shape {chunk.shape}; expected (>= {self.horizon}, '
                         'action_dim)')
      self._response, self._step = response, 0
      self.queries += 1
    out = {k: v for k, v in self._response.items() if k != self.action_key}
    out['action'] = np.asarray(self._response[self.action_key])[self._step]
    out['chunk_step'] = self._step
    self._step += 1
    if self._step >= self.horizon:
      self._response = None
    return out

  def reset(self) -> None:
    self._response, self._step = None, 0
