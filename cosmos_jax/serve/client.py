"""Clients: a websocket client (msgpack) with an action-chunk broker, and a small HTTP client speaking the
official ALOHA protocol (json_numpy bodies, plain or double-encoded).

    client = WebsocketClient('localhost', 8000)       # receives the metadata on connect
    broker = ActionChunkBroker(client)                # horizon: the metadata's open_loop_steps
    for step in range(...):
      out = broker.infer(observation)                 # queries the server every `horizon` steps
      robot.apply(out['action'])                      # one (action_dim,) action per step
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np
from websockets.sync import client as ws_client

from cosmos_jax.serve import codec


class ServerError(RuntimeError):
  """The server refused a request or failed; the message is the server's."""

  def __init__(self, message: str, status: int | None = None):
    super().__init__(message)
    self.status = status


class WebsocketClient:
  """Synchronous websocket client. `infer(observation) -> response`; a refused request raises ServerError and
  the connection stays usable."""

  def __init__(self, host: str = 'localhost', port: int | None = None, *, open_timeout: float = 30.0):
    self.uri = host if host.startswith('ws') else f'ws://{host}'
    if port is not None:
      self.uri += f':{port}'
    connection = ws_client.connect(self.uri, compression=None, max_size=None, open_timeout=open_timeout)
    # The connection outlives this call (closed by `close`); entering it is what websockets >= 17.1 asks of a
    # connection used outside a `with` block, and a no-op returning itself before that.
    self._connection = connection.__enter__()
    self.metadata = self._receive()

  def _receive(self) -> Any:
    message = self._connection.recv()
    if isinstance(message, str):
      raise ServerError(message)
    return codec.unpackb(message)

  def infer(self, observation: Mapping[str, Any]) -> dict:
    self._connection.send(codec.packb(dict(observation)))
    return self._receive()

  def send_raw(self, data: bytes | str) -> Any:
    """Sends a frame as is and returns the decoded reply (testing malformed requests)."""
    self._connection.send(data)
    return self._receive()

  def close(self) -> None:
    self._connection.close()

  def __enter__(self) -> 'WebsocketClient':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


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


class HTTPClient:
  """The official protocol over HTTP: POST json_numpy to /act. `double_encoded` sends {"encoded": ...} and
  unwraps the JSON-string reply."""

  def __init__(self, url: str = 'http://localhost:8777/act', timeout: float = 600.0):
    self.url = url
    self.timeout = timeout

  def post(self, body: bytes) -> tuple[int, Any]:
    """(status, decoded JSON) of a raw body."""
    request = urllib.request.Request(self.url, data=body, headers={'Content-Type': 'application/json'})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        return response.status, codec.json_loads(response.read())
    except urllib.error.HTTPError as e:
      return e.code, codec.json_loads(e.read())

  def act(self, observation: Mapping[str, Any], *, double_encoded: bool = False) -> dict:
    text = codec.json_dumps(dict(observation))
    body = json.dumps({codec.ENCODED_KEY: text}) if double_encoded else text
    status, reply = self.post(body.encode('utf-8'))
    if status != 200:
      raise ServerError(reply.get('error', str(reply)) if isinstance(reply, dict) else str(reply), status)
    if double_encoded:
      if not isinstance(reply, str):
        raise ServerError(f'a double-encoded request expects a JSON string reply, got {type(reply).__name__}')
      reply = codec.json_loads(reply)
    return reply
