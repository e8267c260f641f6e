"""The serving layer under load and abuse, with a stand-in runner: the real request validation, and an `infer` that
sleeps a known time and counts its calls. Shown here: one execution at a time with health probes answered
meanwhile; malformed requests answered in milliseconds without a queue slot while the queue is full; a full queue
refused with Retry-After (the running request not counted); a client that disconnects while queued is never run;
a request past its deadline gets 504 and is never run; a slow body is cut off; every error is JSON; a model
failure or an unencodable response is answered and the server (and the websocket connection) goes on; client
disconnects are logged at INFO without a traceback."""

import concurrent.futures
import contextlib
import json
import logging
import socket
import threading
import time

import numpy as np
import pytest
import requests
from websockets.sync import client as ws_sync

from cosmos_jax.serve import client as client_lib
from cosmos_jax.serve import http as http_lib
from cosmos_jax.serve import service as service_lib
from cosmos_jax.serve import websocket as websocket_lib
from cosmos_jax_client import codec
from tests.serve.conftest import make_observation

ACT_SECONDS = 0.6
FAST_S = 0.2  # what "answered at once" means here


class TimedRunner:
  """The real request validation (the ALOHA protocol); `infer` sleeps ACT_SECONDS, records its interval and returns the observation's
  proprio as every action row (so a response can be matched to its request). `fail_next` / `unencodable_next`
  make the next inference raise, or return a value no codec can send."""

  def __init__(self, validator):
    self.validate = validator.validate
    self.intervals = []
    self.seen = []
    self.fail_next = False
    self.unencodable_next = False
    self._lock = threading.Lock()

  @property
  def calls(self):
    with self._lock:
      return len(self.seen)

  def metadata(self):
    return {'policy': 'timed stand-in', 'open_loop_steps': 50}

  def infer(self, observation):
    start = time.perf_counter()
    with self._lock:
      self.seen.append(observation.proprio.copy())
    time.sleep(ACT_SECONDS)
    with self._lock:
      self.intervals.append((start, time.perf_counter()))
    if self.fail_next:
      self.fail_next = False
      raise RuntimeError('model failure on purpose')
    result = {'actions': np.tile(observation.proprio, (50, 1)), 'timing': {'policy_s': ACT_SECONDS}}
    if self.unencodable_next:
      self.unencodable_next = False
      result['extra'] = object()
    return result


@contextlib.contextmanager
def serving(validator, protocol='http', **service_kwargs):
  runner = TimedRunner(validator)
  service = service_lib.PolicyService(runner, **service_kwargs)
  loop = service_lib.BackgroundLoop()
  server = (http_lib.HTTPServer if protocol == 'http' else websocket_lib.WebsocketServer)(service, '127.0.0.1', 0)
  port = loop.run(server.start())
  try:
    yield port, runner, service
  finally:
    loop.run(server.stop())
    loop.stop()
    service.close()


def _post(port, observation, timeout=30):
  response = requests.post(f'http://127.0.0.1:{port}/act', data=codec.json_dumps(observation), timeout=timeout)
  return response.status_code, codec.json_loads(response.content), response.headers


def _wait_until(condition, timeout=10.0, what='condition'):
  end = time.perf_counter() + timeout
  while not condition():
    if time.perf_counter() > end:
      raise AssertionError(f'timed out waiting for {what}')
    time.sleep(0.005)


def _send_raw(port, head: bytes, body: bytes) -> socket.socket:
  sock = socket.create_connection(('127.0.0.1', port))
  sock.sendall(head + body)
  return sock


def _http_head(length: int) -> bytes:
  return (f'POST /act HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
          f'Content-Length: {length}\r\n\r\n').encode()


def _malformed(runner):
  """(name, body, expected status) of the malformed requests of the issue."""
  obs = make_observation(runner, seed=9)
  return [
      ('empty object', '{}', 400),
      ('NaN proprio', codec.json_dumps({**obs, 'proprio': np.full(14, np.nan, np.float32)}), 400),
      ('wrong image shape', codec.json_dumps({**obs, 'primary_image': np.zeros((32, 32, 4), np.uint8)}), 400),
      ('unknown task', codec.json_dumps({**obs, 'task_description': 'fold shirt'}), 400),
  ]


def test_one_execution_at_a_time_and_health_probes_meanwhile(aloha_protocol):
  with serving(aloha_protocol, max_queue=2) as (port, runner, _):
    observations = [make_observation(aloha_protocol, seed=i) for i in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      futures = [pool.submit(_post, port, o) for o in observations]
      _wait_until(lambda: runner.calls >= 1, what='the first inference')
      probe_start = time.perf_counter()
      assert requests.get(f'http://127.0.0.1:{port}/healthz', timeout=5).text == 'OK\n'
      probe_s = time.perf_counter() - probe_start
      results = [f.result() for f in futures]
  assert probe_s < ACT_SECONDS / 2, f'health probe waited {probe_s:.3f} s for the model'
  assert [status for status, _, _ in results] == [200] * 3
  for observation, (_, reply, _) in zip(observations, results):
    np.testing.assert_allclose(reply['actions'][0], observation['proprio'], rtol=1e-6)
  intervals = sorted(runner.intervals)
  assert len(intervals) == 3
  for (_, end), (start, _) in zip(intervals, intervals[1:]):
    assert start >= end, 'two model executions overlapped'
  queued = sorted(r['timing']['queue_s'] for _, r, _ in results)
  assert queued[-1] >= 1.5 * ACT_SECONDS  # the last one waited for the two before it
  for _, reply, _ in results:
    timing = reply['timing']
    assert timing['inference_s'] >= ACT_SECONDS and timing['validate_s'] < ACT_SECONDS
    assert {'request_read_s', 'request_decode_s', 'queue_s', 'policy_s'} <= set(timing)


def test_malformed_requests_are_answered_at_once_and_take_no_queue_slot(aloha_protocol):
  """One request running and one waiting (max_queue=2: one free slot). Each malformed request gets its 400 in under
  FAST_S; eight concurrent copies of it get theirs without waiting for the model and leave the free slot free:
  the next valid request is accepted. With the queue then full, malformed requests are still answered 400 at once
  (validation comes before the queue)."""
  with serving(aloha_protocol, max_queue=2) as (port, runner, service):
    valid = [make_observation(aloha_protocol, seed=i) for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      running = pool.submit(_post, port, valid[0])
      _wait_until(lambda: runner.calls == 1, what='the first inference')
      waiting = [pool.submit(_post, port, valid[1])]
      _wait_until(lambda: service.queued == 1, what='one queued request')

      def timed_post(body):
        start = time.perf_counter()
        response = requests.post(f'http://127.0.0.1:{port}/act', data=body, timeout=30)
        return response.status_code, response.json(), time.perf_counter() - start

      for name, body, status in _malformed(aloha_protocol):
        got, error, seconds = timed_post(body)
        assert got == status and error['status'] == status, (name, error)
        assert seconds < FAST_S, f'{name}: answered after {seconds:.3f} s with the model busy'
        # Eight at once, as the load: none waits for the model, none takes the free slot.
        for got, error, seconds in pool.map(timed_post, [body] * 8):
          assert got == status and seconds < ACT_SECONDS, (name, error, seconds)
        assert service.queued == 1, f'{name} took a queue slot'
      waiting.append(pool.submit(_post, port, valid[2]))  # takes the free slot
      _wait_until(lambda: service.queued == 2, what='the queue to fill')
      for name, body, status in _malformed(aloha_protocol):
        got, error, seconds = timed_post(body)
        assert got == status and seconds < FAST_S, (name, got, seconds)
      assert runner.calls == 1
      refused_status, refused, headers = _post(port, valid[3])
      assert refused_status == 503 and refused['status'] == 503
      results = [running.result()] + [f.result() for f in waiting]
  assert [status for status, _, _ in results] == [200] * 3
  assert runner.calls == 3
  assert 'Retry-After' in headers and int(headers['Retry-After']) >= 1
  # The running request is not counted: two waiting is the limit.
  assert '2 requests are already waiting' in refused['error'], refused['error']


def test_queue_limit_counts_waiting_requests_only(aloha_protocol):
  with serving(aloha_protocol, max_queue=0) as (port, runner, _):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      first = pool.submit(_post, port, make_observation(aloha_protocol))  # runs at once: no waiting needed
      _wait_until(lambda: runner.calls == 1, what='the first inference')
      status, reply, headers = _post(port, make_observation(aloha_protocol, seed=1))
      assert first.result()[0] == 200
  assert status == 503 and headers['Retry-After'] == '1' and '0 requests are already waiting' in reply['error']


def test_client_that_disconnects_while_queued_is_never_run(aloha_protocol, caplog):
  caplog.set_level(logging.INFO)
  with serving(aloha_protocol, max_queue=4) as (port, runner, service):
    first, abandoned, last = (make_observation(aloha_protocol, seed=i) for i in range(3))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      running = pool.submit(_post, port, first)
      _wait_until(lambda: runner.calls == 1, what='the first inference')
      body = codec.json_dumps(abandoned).encode()
      sock = _send_raw(port, _http_head(len(body)), body)
      _wait_until(lambda: service.queued == 1, what='the abandoned request to queue')
      sock.close()
      _wait_until(lambda: service.requests_dropped == 1, what='the abandoned request to be dropped')
      assert service.queued == 0
      later = pool.submit(_post, port, last)
      assert running.result()[0] == 200 and later.result()[0] == 200
  assert runner.calls == 2
  np.testing.assert_allclose(runner.seen[1], last['proprio'], rtol=1e-6)  # the abandoned one never ran
  assert any('client went away' in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


def test_past_its_deadline_a_request_gets_504_and_is_not_run(aloha_protocol):
  deadline = ACT_SECONDS / 3
  with serving(aloha_protocol, deadline_s=deadline) as (port, runner, service):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      running = pool.submit(_post, port, make_observation(aloha_protocol))
      _wait_until(lambda: runner.calls == 1, what='the first inference')
      start = time.perf_counter()
      status, reply, _ = _post(port, make_observation(aloha_protocol, seed=1))
      waited = time.perf_counter() - start
      assert running.result()[0] == 200
    assert status == 504 and reply['status'] == 504 and 'deadline' in reply['error']
    assert deadline <= waited < ACT_SECONDS, waited  # answered at its deadline, not when the model was free
    time.sleep(0.1)
    assert runner.calls == 1 and service.requests_dropped == 1


def test_slow_body_is_cut_off_after_the_read_timeout(aloha_protocol):
  with serving(aloha_protocol, body_timeout_s=0.3) as (port, _, _):
    sock = _send_raw(port, _http_head(100_000), b'{"abc')
    sock.settimeout(5)
    start = time.perf_counter()
    reply = b''
    while chunk := sock.recv(65536):
      reply += chunk
    closed_after = time.perf_counter() - start
    sock.close()
    assert reply.startswith(b'HTTP/1.1 408'), reply[:100]
    error = json.loads(reply.split(b'\r\n\r\n', 1)[1])
    assert error['status'] == 408 and 'did not arrive within 0.3 s' in error['error']
    assert 0.25 < closed_after < 2.0, f'connection closed after {closed_after:.2f} s'
    assert requests.get(f'http://127.0.0.1:{port}/healthz', timeout=5).status_code == 200


def test_disconnect_mid_body_is_logged_at_info_without_a_traceback(aloha_protocol, caplog):
  caplog.set_level(logging.DEBUG)
  with serving(aloha_protocol) as (port, runner, _):
    sock = _send_raw(port, _http_head(100_000), b'{"abc')
    time.sleep(0.1)
    sock.close()
    _wait_until(lambda: any('disconnected while sending' in r.getMessage() for r in caplog.records),
                what='the disconnect to be logged')
    assert _post(port, make_observation(aloha_protocol))[0] == 200
  assert runner.calls == 1
  record = next(r for r in caplog.records if 'disconnected while sending' in r.getMessage())
  assert record.levelno == logging.INFO
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


def test_every_error_is_json(aloha_protocol):
  with serving(aloha_protocol) as (port, runner, _):
    url = f'http://127.0.0.1:{port}'
    missing = requests.get(f'{url}/nope', timeout=5)
    assert missing.status_code == 404 and missing.json()['status'] == 404
    assert 'POST /act' in missing.json()['error']
    wrong_method = requests.get(f'{url}/act', timeout=5)
    assert wrong_method.status_code == 405 and wrong_method.json()['status'] == 405
    assert wrong_method.headers['Allow'] == 'POST' and 'allowed: POST' in wrong_method.json()['error']
    runner.fail_next = True
    status, reply, _ = _post(port, make_observation(aloha_protocol))
    assert status == 500 and 'RuntimeError: model failure on purpose' in reply['error']
    runner.unencodable_next = True
    status, reply, _ = _post(port, make_observation(aloha_protocol))
    assert status == 500 and 'response encoding failed' in reply['error']
    status, reply, _ = _post(port, make_observation(aloha_protocol, seed=7))
    assert status == 200


def test_websocket_queue_disconnect_and_encode_errors(aloha_protocol, caplog):
  """Over the websocket: a malformed request answered at once while the model is busy, a connection closed while
  its request waits (never run), a full queue as an error frame, and an unencodable response answered as an
  error frame on a connection that stays usable."""
  caplog.set_level(logging.INFO)
  with serving(aloha_protocol, 'websocket', max_queue=1) as (port, runner, service):
    first, abandoned, refused, last = (make_observation(aloha_protocol, seed=i) for i in range(4))
    with client_lib.WebsocketClient('127.0.0.1', port) as busy, \
        client_lib.WebsocketClient('127.0.0.1', port) as other:
      with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(busy.infer, first)
        _wait_until(lambda: runner.calls == 1, what='the first inference')
        start = time.perf_counter()
        with pytest.raises(client_lib.ServerError, match='non-finite'):
          other.infer({**last, 'proprio': np.full(14, np.nan)})
        assert time.perf_counter() - start < FAST_S
        with ws_sync.connect(f'ws://127.0.0.1:{port}', compression=None, max_size=None) as gone:
          gone.recv()  # metadata
          gone.send(codec.packb(abandoned))
          _wait_until(lambda: service.queued == 1, what='the abandoned request to queue')
        _wait_until(lambda: service.requests_dropped == 1, what='the abandoned request to be dropped')
        # The queue has room for one again: fill it, then one more is refused.
        with client_lib.WebsocketClient('127.0.0.1', port) as third:
          with concurrent.futures.ThreadPoolExecutor(1) as pool2:
            queued = pool2.submit(third.infer, last)
            _wait_until(lambda: service.queued == 1, what='a queued request')
            with pytest.raises(client_lib.ServerError, match='already waiting'):
              other.infer(refused)
            np.testing.assert_allclose(queued.result()['actions'][0], last['proprio'], rtol=1e-6)
        np.testing.assert_allclose(running.result()['actions'][0], first['proprio'], rtol=1e-6)
      runner.unencodable_next = True
      with pytest.raises(client_lib.ServerError, match='response encoding failed'):
        other.infer(last)
      assert other.infer(last)['actions'].shape == (50, 14)  # same connection, still usable
  assert runner.calls == 4  # first, last (queued), the unencodable one, last again; never the abandoned one
  assert not any(np.allclose(seen, abandoned['proprio']) for seen in runner.seen)
  assert not [r for r in caplog.records if r.exc_info], caplog.text
