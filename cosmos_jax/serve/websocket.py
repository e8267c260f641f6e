"""Websocket server with msgpack (the openpi wire format, so openpi-style clients work), on `websockets`.

Protocol: on connect the server sends the policy metadata (one binary msgpack frame). Then, per request, the
client sends one binary frame (a msgpack map of the observation fields, arrays as {data, dtype, shape}) and the
server answers with one binary frame (the response map, as `PolicyRunner.act`, plus `timing` with
`request_decode_s` and the previous response's `prev_response_encode_s` / `prev_total_s`), or, when the request
is refused or fails, with one TEXT frame "error: <message>" (validation runs before queuing, so a malformed
request is answered at once; a full queue, a passed deadline, a model failure and a response that cannot be
encoded are error frames too). The connection stays open after an error (openpi closes it), so a client can
correct the request and go on. A connection that closes while its request waits takes the request out of the
queue (it is never run); the disconnect is logged at INFO. A message over the payload limit closes the connection with code
1009 (message too big); the server keeps accepting connections. `GET /healthz` answers "OK" without upgrading.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
import traceback

import websockets
from websockets.asyncio import server as ws_server

from cosmos_jax.serve import service as service_lib
from cosmos_jax.serve.protocols import base as protocol_lib
from cosmos_jax_client import codec

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000


def _health_check(connection: ws_server.ServerConnection, request) -> object | None:
  if request.path == '/healthz':
    return connection.respond(http.HTTPStatus.OK, 'OK\n')
  return None


class _ConnectionGone(Exception):
  """The connection closed while its request waited for the model."""


class WebsocketServer:
  """The websocket server on (host, port); port 0 picks a free one (see `port` after `start`)."""

  def __init__(self, service: service_lib.PolicyService, host: str = '0.0.0.0', port: int = DEFAULT_PORT):
    self.service = service
    self.host = host
    self.port = port
    self._server: ws_server.Server | None = None

  async def _act(self, connection: ws_server.ServerConnection, observation) -> dict:
    """service.act, cancelled (so dropped from the queue) as soon as the connection closes."""
    act = asyncio.ensure_future(self.service.act(
        observation, client_gone=lambda: connection.state is not websockets.State.OPEN))
    closed = asyncio.ensure_future(connection.wait_closed())
    try:
      await asyncio.wait((act, closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
      closed.cancel()
    if not act.done():
      act.cancel()
      raise _ConnectionGone()
    return act.result()

  async def _handler(self, connection: ws_server.ServerConnection) -> None:
    peer = connection.remote_address
    log.info('websocket connection from %s', peer)
    try:
      await connection.send(codec.packb(self.service.metadata()))
      previous: dict[str, float] = {}
      while True:
        message = await connection.recv()
        start = time.perf_counter()
        try:
          if isinstance(message, str):
            raise codec.CodecError('expected a binary msgpack frame, got a text frame')
          payload = codec.unpackb(message)
          decoded = time.perf_counter()
          observation = self.service.validate(payload)
        except (codec.CodecError, protocol_lib.InvalidObservation) as e:
          service_lib.log_request('websocket', {'request_decode_s': time.perf_counter() - start}, 'refused')
          await connection.send(f'error: {e}')
          continue
        validated = time.perf_counter()
        try:
          result = await self._act(connection, observation)
        except _ConnectionGone:
          log.info('websocket connection from %s closed while its request waited; the request is dropped', peer)
          return
        except service_lib.QueueFullError as e:
          log.warning('queue full, refused a request from %s: %s', peer, e)
          await connection.send(f'error: {e}')
          continue
        except service_lib.DeadlineExceeded as e:
          log.warning('deadline passed for a request from %s: %s', peer, e)
          await connection.send(f'error: {e}')
          continue
        except Exception as e:  # pylint: disable=broad-except
          log.error('inference failed:\n%s', traceback.format_exc())
          await connection.send(f'error: inference failed: {type(e).__name__}: {e}')
          continue
        result['timing'] = {'request_decode_s': decoded - start, 'validate_s': validated - decoded,
                            **result['timing'], **previous}
        encode_start = time.perf_counter()
        try:
          data = codec.packb(result)
        except Exception as e:  # pylint: disable=broad-except
          log.error('response encoding failed:\n%s', traceback.format_exc())
          await connection.send(f'error: response encoding failed: {type(e).__name__}: {e}')
          continue
        encode_s = time.perf_counter() - encode_start
        await connection.send(data)
        service_lib.log_request('websocket', {**result['timing'], 'response_encode_s': encode_s})
        previous = {'prev_response_encode_s': encode_s, 'prev_total_s': time.perf_counter() - start}
    except websockets.ConnectionClosed as e:
      log.info('websocket connection from %s closed (%s)', peer, e.rcvd or 'no close frame')

  async def start(self) -> int:
    self._server = await ws_server.serve(self._handler, self.host, self.port, compression=None,
                                         max_size=self.service.max_payload_bytes, process_request=_health_check)
    self.port = next(iter(self._server.sockets)).getsockname()[1]
    log.info('websocket policy server on ws://%s:%d', self.host, self.port)
    return self.port

  async def stop(self) -> None:
    if self._server is not None:
      self._server.close()
      await self._server.wait_closed()
      self._server = None

  def serve_forever(self) -> None:
    async def main():
      await self.start()
      try:
        await self._server.serve_forever()
      finally:
        await self.stop()

    asyncio.run(main())
