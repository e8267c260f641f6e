"""Synchronous websocket client for `python -m cosmos_jax.serve websocket` (msgpack frames, openpi style).

    client = WebsocketClient('localhost', 8000)       # receives the policy metadata on connect
    response = client.infer(observation)              # a dict of numpy arrays and scalars
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from websockets.sync import client as ws_client

from cosmos_jax_client import codec
from cosmos_jax_client import errors


class WebsocketClient:
  """`infer(observation) -> response`; a refused request raises ServerError and the connection stays usable."""

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
    if isinstance(message, str):  # the server's error frame
      raise errors.ServerError(message)
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
