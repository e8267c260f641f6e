"""HTTP server compatible with the official ALOHA client (run_aloha_eval.py), on aiohttp.

    POST /act       json_numpy request (or {"encoded": <JSON string>}) -> json_numpy response
    GET  /healthz   "OK"
    GET  /metadata  the policy's metadata (JSON)

The response holds `actions` (chunk, action_dim) float64 un-normalised, `future_image_predictions`,
`value_prediction` and its alias `value_predictions` (the official client reads the plural), the optional
`all_*` lists, and `timing` (seconds: `request_decode_s` for the request body, `queue_s`, `inference_s` and its
stages). The response's own encoding time is in the `Server-Timing` header and the log.

Every error is a JSON object {"error": <message>, "status": <code>}: 400 for a body that does not decode or a
request that fails validation (shape, dtype, range, missing field, unknown task, NaN; checked on the event loop
before queuing, so it is answered at once however busy the model is), 404 / 405 for an unknown route or method,
408 (and the connection closed) for a body that does not arrive within the body timeout, 413 for a body over the
payload limit, 503 with `Retry-After` when the queue is full, 504 for a request that waited past its deadline
without being run, 500 for a failure inside the model or while encoding the response. The server keeps serving
after each. A client that disconnects (mid-body, or while its request waits) is logged at INFO and its request is
never run.
(The official server answers every failure with the JSON string "error" and status 200, which its client cannot
tell apart from a crash; a client of either server sees a non-dict reply as a failure.)
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback

from aiohttp import web

from cosmos_jax.serve import service as service_lib
from cosmos_jax.serve.protocols import base as protocol_lib
from cosmos_jax_client import codec

log = logging.getLogger(__name__)

DEFAULT_PORT = 8777
ACT_PATH = '/act'
ROUTES = (('POST', ACT_PATH), ('GET', '/healthz'), ('GET', '/metadata'))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
  return web.json_response({'error': message, 'status': status}, status=status, headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler) -> web.StreamResponse:
  """aiohttp's own errors (404, 405, ...) in the same JSON form as ours."""
  try:
    return await handler(request)
  except web.HTTPException as e:
    if e.status < 400:
      raise
    if isinstance(e, web.HTTPNotFound):
      message = (f'no route {request.method} {request.path}; the server answers '
                 + ', '.join(f'{method} {path}' for method, path in ROUTES))
    elif isinstance(e, web.HTTPMethodNotAllowed):
      message = f'{request.method} is not allowed on {request.path}; allowed: {", ".join(sorted(e.allowed_methods))}'
    else:
      message = e.text or e.reason
    headers = {k: v for k, v in e.headers.items() if k in ('Allow', 'Retry-After')}
    return _error(e.status, message, headers)


def _client_gone(request: web.Request) -> bool:
  return request.transport is None or request.transport.is_closing()


async def _answer_and_close(request: web.Request, status: int, message: str) -> web.Response:
  """Sends the error, then closes the connection instead of lingering over the rest of an unread body."""
  response = _error(status, message)
  response.force_close()
  await response.prepare(request)
  await response.write_eof()
  if request.transport is not None:
    request.transport.close()
  return response


def make_app(service: service_lib.PolicyService) -> web.Application:
  """The aiohttp application (routes bound to `service`)."""

  async def act(request: web.Request) -> web.StreamResponse:
    start = time.perf_counter()
    peer = request.remote
    limit = service.max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
      log.warning('413 to %s: declared body of %d bytes exceeds the %d-byte limit', peer, request.content_length,
                  limit)
      return _error(413, f'request body of {request.content_length} bytes exceeds the {limit}-byte limit')
    try:
      body = await asyncio.wait_for(request.read(), service.body_timeout_s)
    except asyncio.TimeoutError:
      log.info('408 to %s: the request body did not arrive within %g s; connection closed', peer,
               service.body_timeout_s)
      return await _answer_and_close(request, 408, f'the request body did not arrive within '
                                                   f'{service.body_timeout_s:g} s')
    except web.HTTPRequestEntityTooLarge:
      log.warning('413 to %s: body exceeds the %d-byte limit', peer, limit)
      return _error(413, f'request body exceeds the {limit}-byte limit')
    except ConnectionError:
      log.info('client %s disconnected while sending the request body', peer)
      raise asyncio.CancelledError() from None  # aiohttp ends a cancelled handler quietly
    received = time.perf_counter()
    try:
      payload, double_encoded = codec.decode_request(body)
      decoded = time.perf_counter()
      observation = service.validate(payload)
    except (codec.CodecError, protocol_lib.InvalidObservation) as e:
      service_lib.log_request('http', {'request_decode_s': time.perf_counter() - received}, 'refused')
      return _error(400, str(e))
    validated = time.perf_counter()
    try:
      result = await service.act(observation, client_gone=lambda: _client_gone(request))
    except service_lib.QueueFullError as e:
      log.warning('503 to %s: %s', peer, e)
      return _error(503, str(e), {'Retry-After': str(e.retry_after_s)})
    except service_lib.DeadlineExceeded as e:
      log.warning('504 to %s: %s', peer, e)
      return _error(504, str(e))
    except asyncio.CancelledError:
      log.info('client %s went away before its response was ready', peer)
      raise
    except Exception as e:  # pylint: disable=broad-except
      log.error('inference failed:\n%s', traceback.format_exc())
      return _error(500, f'inference failed: {type(e).__name__}: {e}')
    result['timing'] = {'request_read_s': received - start, 'request_decode_s': decoded - received,
                        'validate_s': validated - decoded, **result['timing']}
    encode_start = time.perf_counter()
    try:
      data = codec.encode_response(result, double_encoded)
    except Exception as e:  # pylint: disable=broad-except
      log.error('response encoding failed:\n%s', traceback.format_exc())
      return _error(500, f'response encoding failed: {type(e).__name__}: {e}')
    timing = {**result['timing'], 'response_encode_s': time.perf_counter() - encode_start}
    service_lib.log_request('http', timing)
    server_timing = ', '.join(f'{k[:-2]};dur={v * 1e3:.2f}' for k, v in timing.items())
    return web.Response(body=data, content_type='application/json', headers={'Server-Timing': server_timing})

  async def healthz(_: web.Request) -> web.Response:
    return web.Response(text='OK\n')

  async def metadata(_: web.Request) -> web.Response:
    return web.json_response(service.metadata())

  app = web.Application(client_max_size=service.max_payload_bytes, middlewares=[_json_errors])
  app.router.add_post(ACT_PATH, act)
  app.router.add_get('/healthz', healthz)
  app.router.add_get('/metadata', metadata)
  return app


class HTTPServer:
  """The HTTP server on (host, port); port 0 picks a free one (see `port` after `start`)."""

  def __init__(self, service: service_lib.PolicyService, host: str = '0.0.0.0', port: int = DEFAULT_PORT):
    self.service = service
    self.host = host
    self.port = port
    self._runner: web.AppRunner | None = None

  async def start(self) -> int:
    # handler_cancellation: a client that disconnects cancels its handler, which takes its job out of the queue.
    self._runner = web.AppRunner(make_app(self.service), access_log=None, handler_cancellation=True)
    await self._runner.setup()
    site = web.TCPSite(self._runner, self.host, self.port)
    await site.start()
    self.port = self._runner.addresses[0][1]
    log.info('HTTP policy server on http://%s:%d%s', self.host, self.port, ACT_PATH)
    return self.port

  async def stop(self) -> None:
    if self._runner is not None:
      await self._runner.cleanup()
      self._runner = None

  def serve_forever(self) -> None:
    async def main():
      await self.start()
      try:
        await asyncio.Event().wait()
      finally:
        await self.stop()

    asyncio.run(main())
