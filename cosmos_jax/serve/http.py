"""HTTP server compatible with the official ALOHA client (policy_spec section 12), on aiohttp.

    POST /act       json_numpy request (or {"encoded": <JSON string>}) -> json_numpy response
    GET  /healthz   "OK"
    GET  /metadata  the policy's metadata (JSON)

The response holds `actions` (chunk, action_dim) float64 un-normalised, `future_image_predictions`,
`value_prediction` and its alias `value_predictions` (the official client reads the plural), the optional
`all_*` lists, and `timing` (seconds: `request_decode_s` for the request body, `queue_s`, `inference_s` and its
stages). The response's own encoding time is in the `Server-Timing` header and the log.

Errors are JSON objects {"error": <message>, "status": <code>}: 400 for a body that does not decode or a request
that fails validation (shape, dtype, range, missing field, unknown task, NaN), 413 for a body over the payload
limit, 503 when the queue is full, 500 for a failure inside the model. The server keeps serving after each.
(The official server answers every failure with the JSON string "error" and status 200, which its client cannot
tell apart from a crash; a client of either server sees a non-dict reply as a failure.)
"""

from __future__ import annotations

import logging
import time
import traceback

from aiohttp import web

from cosmos_jax.serve import codec
from cosmos_jax.serve import runner as runner_lib
from cosmos_jax.serve import service as service_lib

log = logging.getLogger(__name__)

DEFAULT_PORT = 8777
ACT_PATH = '/act'


def _error(status: int, message: str) -> web.Response:
  return web.json_response({'error': message, 'status': status}, status=status)


def make_app(service: service_lib.PolicyService) -> web.Application:
  """The aiohttp application (routes bound to `service`)."""

  async def act(request: web.Request) -> web.Response:
    start = time.perf_counter()
    limit = service.max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
      return _error(413, f'request body of {request.content_length} bytes exceeds the {limit}-byte limit')
    try:
      body = await request.read()
    except web.HTTPRequestEntityTooLarge:
      return _error(413, f'request body exceeds the {limit}-byte limit')
    try:
      payload, double_encoded = codec.decode_request(body)
    except codec.CodecError as e:
      service_lib.log_request('http', {'request_decode_s': time.perf_counter() - start}, 'bad-body')
      return _error(400, str(e))
    decoded = time.perf_counter()
    try:
      result = await service.act(payload)
    except runner_lib.InvalidObservation as e:
      service_lib.log_request('http', {'request_decode_s': decoded - start}, 'invalid')
      return _error(400, str(e))
    except service_lib.QueueFullError as e:
      return _error(503, str(e))
    except Exception as e:  # pylint: disable=broad-except
      log.error('inference failed:\n%s', traceback.format_exc())
      return _error(500, f'inference failed: {type(e).__name__}: {e}')
    result['timing'] = {'request_decode_s': decoded - start, **result['timing']}
    encode_start = time.perf_counter()
    try:
      data = codec.encode_response(result, double_encoded)
    except codec.CodecError as e:
      log.error('response encoding failed: %s', e)
      return _error(500, f'response encoding failed: {e}')
    timing = {**result['timing'], 'response_encode_s': time.perf_counter() - encode_start}
    service_lib.log_request('http', timing)
    server_timing = ', '.join(f'{k[:-2]};dur={v * 1e3:.2f}' for k, v in timing.items())
    return web.Response(body=data, content_type='application/json', headers={'Server-Timing': server_timing})

  async def healthz(_: web.Request) -> web.Response:
    return web.Response(text='OK\n')

  async def metadata(_: web.Request) -> web.Response:
    return web.json_response(service.metadata())

  app = web.Application(client_max_size=service.max_payload_bytes)
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
    self._runner = web.AppRunner(make_app(self.service), access_log=None)
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
    import asyncio  # pylint: disable=g-import-not-at-top

    async def main():
      await self.start()
      try:
        await asyncio.Event().wait()
      finally:
        await self.stop()

    asyncio.run(main())
