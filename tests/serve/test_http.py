"""The HTTP server driven the way the official ALOHA client drives it: `requests` with json_numpy bodies (plain
and double-encoded), then malformed requests, each refused with a clear error while the server keeps serving."""

import json
import re
import urllib.request

import json_numpy
import numpy as np
import pytest
import requests

from cosmos_jax.serve import client as client_lib
from cosmos_jax.serve import http as http_lib
from cosmos_jax.serve import service as service_lib
from tests.serve.conftest import IMAGE_SIZE, make_observation

MAX_PAYLOAD = 1 << 20  # a valid 64 px request is about 70 kB of JSON


@pytest.fixture(scope='module')
def server(tiny_runner):
  service = service_lib.PolicyService(tiny_runner, max_payload_bytes=MAX_PAYLOAD)
  loop = service_lib.BackgroundLoop()
  http_server = http_lib.HTTPServer(service, '127.0.0.1', 0)
  port = loop.run(http_server.start())
  yield f'http://127.0.0.1:{port}'
  loop.run(http_server.stop())
  loop.stop()
  service.close()


def _post_official(url, observation, double_encoded=False):
  """Exactly what run_aloha_eval.py sends after json_numpy.patch(): requests.post(json=observation)."""
  body = json_numpy.dumps(observation)
  if double_encoded:
    body = json.dumps({'encoded': body})
  return requests.post(f'{url}/act', data=body, headers={'Content-Type': 'application/json'}, timeout=300)


def check_response(response):
  """The official response fields with their shapes and dtypes, and our timing."""
  assert set(response) >= {'actions', 'future_image_predictions', 'value_prediction', 'value_predictions', 'timing'}
  actions = response['actions']
  assert isinstance(actions, np.ndarray) and actions.shape == (50, 14) and actions.dtype == np.float64
  assert np.all(np.isfinite(actions))
  assert not np.allclose(actions, actions[:1])  # a real chunk, not one action repeated
  assert response['value_prediction'] == response['value_predictions']
  assert 0.0 <= response['value_prediction'] <= 1.0
  futures = response['future_image_predictions']
  assert sorted(futures) == ['future_image', 'future_wrist_image', 'future_wrist_image2']
  for image in futures.values():
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
  timing = response['timing']
  for key in ('request_decode_s', 'queue_s', 'inference_s', 'vae_encode_s', 'policy_s', 'vae_decode_s'):
    assert timing[key] >= 0.0, key
  assert timing['inference_s'] >= timing['policy_s']


def test_official_protocol_both_encodings(server, tiny_runner):
  observation = make_observation(tiny_runner.protocol, seed=1)
  plain = _post_official(server, {**observation, 'return_all_query_results': True})
  assert plain.status_code == 200 and 'policy;dur=' in plain.headers['Server-Timing']
  reply = json_numpy.loads(plain.text)
  check_response(reply)
  assert len(reply['all_actions']) == 1 and reply['all_value_predictions'] == [reply['value_prediction']]
  assert reply['all_future_image_predictions_by_depth'] == [[]]  # official: a plain query has no per-depth images
  np.testing.assert_array_equal(reply['all_actions'][0], reply['actions'])

  double = _post_official(server, observation, double_encoded=True)
  assert double.status_code == 200
  text = json.loads(double.text)
  assert isinstance(text, str)  # the official double-encoded reply: a JSON string of the json_numpy dump
  unwrapped = json_numpy.loads(text)
  check_response(unwrapped)
  assert 'all_actions' not in unwrapped
  # Fixed seed, same observation: the same chunk whichever encoding carried it.
  np.testing.assert_array_equal(unwrapped['actions'], reply['actions'])


def test_health_and_metadata(server):
  with urllib.request.urlopen(f'{server}/healthz', timeout=10) as response:
    assert response.status == 200 and response.read() == b'OK\n'
  meta = requests.get(f'{server}/metadata', timeout=10).json()
  assert meta['tasks'] == ['transfer cube'] and meta['max_payload_bytes'] == MAX_PAYLOAD


def _bad_requests(runner):
  """(name, body, expected status, message pattern) for every kind of malformed request."""
  obs = make_observation(runner, seed=2)
  dump = lambda o: json_numpy.dumps(o)
  object_array = {'__numpy__': '', 'dtype': '|O', 'shape': [0]}
  return [
      ('bad JSON', '{"primary_image": [1, 2', 400, 'not valid JSON'),
      ('not an object', '[1, 2, 3]', 400, 'must be a JSON object'),
      ('wrong image shape', dump({**obs, 'primary_image': np.zeros((32, 32, 4), np.uint8)}), 400,
       r"'primary_image' must have shape \(H, W, 3\)"),
      ('wrong image dtype', dump({**obs, 'left_wrist_image': np.zeros((64, 64, 3), np.float32)}), 400,
       'must have dtype uint8, got float32'),
      ('missing field', dump({k: v for k, v in obs.items() if k != 'proprio'}), 400,
       r"missing field\(s\) \['proprio'\]"),
      ('unknown task', dump({**obs, 'task_description': 'fold shirt'}), 400, "unknown task 'fold shirt'"),
      ('NaN proprio', dump({**obs, 'proprio': np.full(14, np.nan, np.float32)}), 400, 'non-finite'),
      ('object dtype', json.dumps({'primary_image': object_array}), 400, 'refused'),
      ('encoded with extra keys', json.dumps({'encoded': dump(obs), 'x': 1}), 400, 'only the key'),
      ('oversized payload', dump({**obs, 'proprio_history': np.zeros(MAX_PAYLOAD, np.uint8)}), 413,
       f'{MAX_PAYLOAD}-byte limit'),
  ]


def test_malformed_requests_get_clear_errors_and_the_server_keeps_serving(server, tiny_runner):
  for name, body, status, pattern in _bad_requests(tiny_runner.protocol):
    response = requests.post(f'{server}/act', data=body, headers={'Content-Type': 'application/json'}, timeout=60)
    assert response.status_code == status, (name, response.text)
    error = response.json()
    assert error['status'] == status
    assert re.search(pattern, error['error']), (name, error['error'])
  # The next valid request is answered, through our own HTTP client this time.
  reply = client_lib.HTTPClient(f'{server}/act').act(make_observation(tiny_runner.protocol, seed=4))
  check_response(reply)
  with pytest.raises(client_lib.ServerError, match='unknown task') as refused:
    client_lib.HTTPClient(f'{server}/act').act({**make_observation(tiny_runner.protocol), 'task_description': '?'},
                                               double_encoded=True)
  assert refused.value.status == 400
