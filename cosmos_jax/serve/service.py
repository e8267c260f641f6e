"""What both servers share: validation on the event loop, then one model execution at a time in a worker thread,
fed from an explicit queue that drops work nobody will read.

A request handler calls `PolicyService.validate(payload)` on the event loop (pure numpy: a malformed request gets
its client error in milliseconds and never takes a queue slot, however busy the model is), then awaits
`PolicyService.act(observation, client_gone=...)`. The queue is a deque owned by the event loop; the worker thread
is handed one job only when it is idle, so a queued job can still be skipped:

  * its handler was cancelled (the client disconnected; aiohttp cancels the handler, the websocket server when the
    connection closes): the job leaves the queue at once;
  * `client_gone()` says so when the job reaches the head of the queue (a transport closed without cancellation);
  * it waited `deadline_s` without starting: `DeadlineExceeded` (HTTP 504) and the job is never run. A job that
    has started runs to completion (a running XLA program cannot be interrupted).

`max_queue` bounds the requests WAITING for the model (the running one is not counted); one more is refused at once
with `QueueFullError`, which carries a `retry_after_s` estimate (the servers send it as `Retry-After`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # three 224x224x3 uint8 images are ~0.6 MB as base64 JSON
DEFAULT_MAX_QUEUE = 8
# A request that has not started this long after it was queued is answered 504 and dropped: generous, since the
# 2B planning query on one GPU takes seconds and a full queue is several of them.
DEFAULT_DEADLINE_S = 60.0
# The whole request body must arrive within this time after the headers (16 MB at ~0.5 MB/s).
DEFAULT_BODY_TIMEOUT_S = 30.0
# Inference-time guess for Retry-After before any request has finished.
_INITIAL_INFERENCE_S = 1.0


class Runner(Protocol):
  """What the service drives (`runner.PolicyRunner`, or a stand-in in tests)."""

  def metadata(self) -> dict: ...

  def validate(self, payload: Any) -> Any: ...

  def infer(self, observation: Any) -> dict: ...


class QueueFullError(RuntimeError):
  """Too many requests are already waiting for the model."""

  def __init__(self, message: str, retry_after_s: int):
    super().__init__(message)
    self.retry_after_s = retry_after_s


class DeadlineExceeded(RuntimeError):
  """The request waited longer than the deadline without reaching the model; it was not run."""


@dataclasses.dataclass(eq=False)
class _Job:
  observation: Any
  future: asyncio.Future
  queued_at: float
  client_gone: Callable[[], bool] | None
  expiry: asyncio.TimerHandle | None = None


class PolicyService:
  """A runner behind an explicit queue and one model worker thread."""

  def __init__(self, runner: Runner, *, max_queue: int = DEFAULT_MAX_QUEUE,
               max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, deadline_s: float = DEFAULT_DEADLINE_S,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S):
    if max_queue < 0:
      raise ValueError(f'max_queue must be >= 0 (requests allowed to wait), got {max_queue}')
    if max_payload_bytes < 1024:
      raise ValueError(f'max_payload_bytes must be >= 1024, got {max_payload_bytes}')
    if not deadline_s > 0:
      raise ValueError(f'deadline_s must be > 0, got {deadline_s}')
    if not body_timeout_s > 0:
      raise ValueError(f'body_timeout_s must be > 0, got {body_timeout_s}')
    self.runner = runner
    self.max_queue = max_queue
    self.max_payload_bytes = max_payload_bytes
    self.deadline_s = deadline_s
    self.body_timeout_s = body_timeout_s
    # One worker; a job is submitted only when it is idle, so the executor's own queue never holds anything.
    self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='policy')
    # Touched on the event loop thread only.
    self._waiting: collections.deque[_Job] = collections.deque()
    self._running: _Job | None = None
    self._inference_s = _INITIAL_INFERENCE_S  # running mean for Retry-After
    self.requests_served = 0
    self.requests_dropped = 0

  def metadata(self) -> dict:
    return {**self.runner.metadata(), 'max_payload_bytes': self.max_payload_bytes, 'max_queue': self.max_queue,
            'deadline_s': self.deadline_s}

  @property
  def queued(self) -> int:
    """Requests waiting for the model (not counting the running one)."""
    return len(self._waiting)

  def validate(self, payload: Any) -> Any:
    """The runner's validation, run by the handler on the event loop before queuing (raises InvalidObservation)."""
    return self.runner.validate(payload)

  async def act(self, observation: Any, *, client_gone: Callable[[], bool] | None = None) -> dict:
    """The runner's response to a validated observation; `timing` gains `queue_s` (waiting for the model) and
    `inference_s` (every model call, results blocked on). Raises QueueFullError or DeadlineExceeded; cancelling
    the awaiting task takes the job out of the queue."""
    if self._running is not None and len(self._waiting) >= self.max_queue:
      retry = self.retry_after_s()
      raise QueueFullError(f'{len(self._waiting)} requests are already waiting for the model (limit '
                           f'{self.max_queue}); retry in about {retry} s', retry)
    loop = asyncio.get_running_loop()
    job = _Job(observation, loop.create_future(), time.perf_counter(), client_gone)
    job.expiry = loop.call_later(self.deadline_s, self._expire, job)
    self._waiting.append(job)
    self._start_next(loop)
    try:
      return await job.future
    except asyncio.CancelledError:
      self._forget(job, 'its client went away while it was queued')
      raise

  def retry_after_s(self) -> int:
    """Seconds until a slot is likely free: the mean inference time times the requests ahead, at least 1."""
    return max(1, math.ceil(self._inference_s * (len(self._waiting) + 1)))

  def _forget(self, job: _Job, why: str) -> None:
    if job.expiry is not None:
      job.expiry.cancel()
    if job in self._waiting:
      self._waiting.remove(job)
      self.requests_dropped += 1
      log.info('dropped a queued request: %s', why)

  def _expire(self, job: _Job) -> None:
    if job in self._waiting and not job.future.done():
      self._forget(job, f'not started within the {self.deadline_s:g} s deadline')
      job.future.set_exception(self._deadline_error(job))

  def _deadline_error(self, job: _Job) -> DeadlineExceeded:
    return DeadlineExceeded(f'the request waited {time.perf_counter() - job.queued_at:.2f} s without reaching the '
                            f'model (deadline {self.deadline_s:g} s); it was not run')

  def _start_next(self, loop: asyncio.AbstractEventLoop) -> None:
    while self._running is None and self._waiting:
      job = self._waiting.popleft()
      if job.future.done():  # cancelled or expired
        continue
      job.expiry.cancel()
      if job.client_gone is not None and job.client_gone():
        self.requests_dropped += 1
        log.info('dropped a queued request: its client went away while it was queued')
        job.future.cancel()
        continue
      if time.perf_counter() - job.queued_at >= self.deadline_s:  # its timer is due but has not fired yet
        self.requests_dropped += 1
        log.info('dropped a queued request: not started within the %g s deadline', self.deadline_s)
        job.future.set_exception(self._deadline_error(job))
        continue
      self._running = job
      started = time.perf_counter()
      work = self._executor.submit(self.runner.infer, job.observation)
      work.add_done_callback(functools.partial(self._hand_back, loop, job, started))

  def _hand_back(self, loop: asyncio.AbstractEventLoop, job: _Job, started: float,
                 work: concurrent.futures.Future) -> None:
    """Worker thread -> event loop."""
    try:
      loop.call_soon_threadsafe(self._finished, loop, job, started, work)
    except RuntimeError:  # the loop was closed while the model ran (server shut down): nobody awaits the result
      pass

  def _finished(self, loop: asyncio.AbstractEventLoop, job: _Job, started: float,
                work: concurrent.futures.Future) -> None:
    done = time.perf_counter()
    self._running = None
    self._inference_s = 0.8 * self._inference_s + 0.2 * (done - started)
    if job.future.done():
      log.info('a request finished after its client went away; the result is discarded')
    else:
      error = work.exception()
      if error is not None:
        job.future.set_exception(error)
      else:
        result = work.result()
        result['timing'] = {'queue_s': started - job.queued_at, 'inference_s': done - started,
                            **result.get('timing', {})}
        self.requests_served += 1
        job.future.set_result(result)
    self._start_next(loop)

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
