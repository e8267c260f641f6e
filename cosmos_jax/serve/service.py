"""What both servers share: one model execution at a time, off the event loop, with a bounded queue and timing.

`PolicyService.act(observation)` is awaited by a request handler. The runner call runs in a single worker thread
(so the event loop keeps accepting connections, answering health probes and rejecting bad requests while the
model runs), and requests wait in that thread's queue in arrival order. When more than `max_queue` requests are
already waiting, a new one is refused at once (`QueueFullError`) instead of piling up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Mapping
from typing import Any

from cosmos_jax.serve import runner as runner_lib

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # three 224x224x3 uint8 images are ~0.6 MB as base64 JSON
DEFAULT_MAX_QUEUE = 8


class QueueFullError(RuntimeError):
  """Too many requests are already waiting for the model."""


class PolicyService:
  """A `PolicyRunner` behind a one-thread executor."""

  def __init__(self, runner: runner_lib.PolicyRunner, *, max_queue: int = DEFAULT_MAX_QUEUE,
               max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES):
    if max_queue < 1:
      raise ValueError(f'max_queue must be >= 1, got {max_queue}')
    if max_payload_bytes < 1024:
      raise ValueError(f'max_payload_bytes must be >= 1024, got {max_payload_bytes}')
    self.runner = runner
    self.max_queue = max_queue
    self.max_payload_bytes = max_payload_bytes
    self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='policy')
    self._pending = 0  # submitted and not finished (touched on the event loop thread only)
    self.requests_served = 0

  def metadata(self) -> dict:
    return {**self.runner.metadata(), 'max_payload_bytes': self.max_payload_bytes, 'max_queue': self.max_queue}

  async def act(self, observation: Mapping[str, Any]) -> dict:
    """The runner's response; `timing` gains `queue_s` (waiting for the model) and `inference_s` (validation,
    preprocessing and every model call, results blocked on)."""
    if self._pending > self.max_queue:
      raise QueueFullError(f'{self._pending} requests are already queued (limit {self.max_queue}); retry later')
    self._pending += 1
    submitted = time.perf_counter()
    started: list[float] = []

    def run():
      started.append(time.perf_counter())
      return self.runner.act(observation)

    try:
      result = await asyncio.get_running_loop().run_in_executor(self._executor, run)
    finally:
      self._pending -= 1
    done = time.perf_counter()
    queue_s = (started[0] - submitted) if started else 0.0
    result['timing'] = {'queue_s': queue_s, 'inference_s': done - started[0], **result.get('timing', {})}
    self.requests_served += 1
    return result

  def close(self) -> None:
    self._executor.shutdown(wait=True, cancel_futures=True)


def log_request(kind: str, timing: Mapping[str, float], status: str = 'ok') -> None:
  parts = ' '.join(f'{k}={v * 1e3:.1f}ms' for k, v in timing.items() if isinstance(v, float))
  log.info('%s %s %s', kind, status, parts)


class BackgroundLoop:
  """An asyncio event loop in a daemon thread (servers in tests, benchmarks and notebooks).

  `run(coro)` runs a coroutine on it and returns its result; `stop()` ends the loop and joins the thread.
  """

  def __init__(self, name: str = 'serve-loop'):
    import threading  # pylint: disable=g-import-not-at-top
    self.loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._main, name=name, daemon=True)
    self._thread.start()

  def _main(self):
    asyncio.set_event_loop(self.loop)
    self.loop.run_forever()

  def run(self, coro, timeout: float | None = 60.0):
    return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

  def stop(self) -> None:
    if self.loop.is_closed():
      return
    self.loop.call_soon_threadsafe(self.loop.stop)
    self._thread.join(timeout=30)
    self.loop.close()
