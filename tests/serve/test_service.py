"""The serving layer with a stand-in runner whose `act` takes a known time: inference runs off the event loop
(health probes are answered meanwhile), one execution at a time in arrival order, a full queue is refused, and a
failure inside the model is a 500 after which the server goes on."""

import concurrent.futures
import threading
import time

import numpy as np
import pytest
import requests

from cosmos_jax.serve import codec
from cosmos_jax.serve import http as http_lib
from cosmos_jax.serve import runner as runner_lib
from cosmos_jax.serve import service as service_lib

ACT_SECONDS = 0.4


class TimedRunner:
  """Records the interval of every `act`; 'fail' as the task raises inside the model, 'invalid' fails validation."""

  def __init__(self):
    self.intervals = []
    self._lock = threading.Lock()

  def metadata(self):
    return {'policy': 'timed stand-in'}

  def act(self, observation):
    if observation.get('task_description') == 'invalid':
      raise runner_lib.InvalidObservation('invalid on purpose')
    start = time.perf_counter()
    time.sleep(ACT_SECONDS)
    if observation.get('task_description') == 'fail':
      raise RuntimeError('model failure on purpose')
    with self._lock:
      self.intervals.append((start, time.perf_counter()))
    return {'actions': np.full((50, 14), observation['id'], np.float64), 'timing': {'policy_s': ACT_SECONDS}}


@pytest.fixture()
def server():
  runner = TimedRunner()
  service = service_lib.PolicyService(runner, max_queue=2)
  loop = service_lib.BackgroundLoop()
  http_server = http_lib.HTTPServer(service, '127.0.0.1', 0)
  port = loop.run(http_server.start())
  yield f'http://127.0.0.1:{port}', runner
  loop.run(http_server.stop())
  loop.stop()
  service.close()


def _post(url, observation):
  response = requests.post(f'{url}/act', data=codec.json_dumps(observation), timeout=30)
  return response.status_code, codec.json_loads(response.content)


def test_one_execution_at_a_time_and_health_probes_meanwhile(server):
  url, runner = server
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    futures = [pool.submit(_post, url, {'id': i}) for i in range(3)]
    time.sleep(ACT_SECONDS / 4)
    probe_start = time.perf_counter()
    assert requests.get(f'{url}/healthz', timeout=5).text == 'OK\n'
    probe_s = time.perf_counter() - probe_start
    results = [f.result() for f in futures]
  assert probe_s < ACT_SECONDS / 2, f'health probe waited {probe_s:.3f} s for the model'
  assert all(status == 200 for status, _ in results)
  assert sorted(int(r['actions'][0, 0]) for _, r in results) == [0, 1, 2]
  intervals = sorted(runner.intervals)
  assert len(intervals) == 3
  for (_, end), (start, _) in zip(intervals, intervals[1:]):
    assert start >= end, 'two model executions overlapped'
  queued = sorted(r['timing']['queue_s'] for _, r in results)
  assert queued[-1] >= 1.5 * ACT_SECONDS  # the last one waited for the two before it
  assert all(r['timing']['inference_s'] >= ACT_SECONDS for _, r in results)


def test_full_queue_is_refused(server):
  url, _ = server
  with concurrent.futures.ThreadPoolExecutor(6) as pool:
    futures = [pool.submit(_post, url, {'id': i}) for i in range(6)]
    results = [f.result() for f in futures]
  statuses = sorted(status for status, _ in results)
  assert statuses.count(200) >= 3 and 503 in statuses, statuses  # 1 running + max_queue=2 waiting
  refused = next(r for s, r in results if s == 503)
  assert 'already queued' in refused['error']


def test_model_failure_is_a_500_and_the_server_goes_on(server):
  url, _ = server
  status, reply = _post(url, {'id': 0, 'task_description': 'fail'})
  assert status == 500 and 'RuntimeError: model failure on purpose' in reply['error']
  status, reply = _post(url, {'id': 0, 'task_description': 'invalid'})
  assert status == 400 and reply['error'] == 'invalid on purpose'
  status, reply = _post(url, {'id': 7})
  assert status == 200 and reply['actions'][0, 0] == 7
