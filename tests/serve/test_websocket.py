"""The websocket server with our client: metadata on connect, msgpack arrays, the action-chunk broker, errors as
text frames on a connection that stays usable, the payload limit, and /healthz."""

import urllib.request

import msgpack
import numpy as np
import pytest
import websockets

from cosmos_jax.serve import client as client_lib
from cosmos_jax.serve import service as service_lib
from cosmos_jax.serve import websocket as websocket_lib
from cosmos_jax_client import codec
from tests.serve.conftest import make_observation
from tests.serve.test_http import check_response

MAX_PAYLOAD = 1 << 20


@pytest.fixture(scope='module')
def port(tiny_runner):
  service = service_lib.PolicyService(tiny_runner, max_payload_bytes=MAX_PAYLOAD)
  loop = service_lib.BackgroundLoop()
  server = websocket_lib.WebsocketServer(service, '127.0.0.1', 0)
  bound = loop.run(server.start())
  yield bound
  loop.run(server.stop())
  loop.stop()
  service.close()


def test_metadata_infer_and_action_chunk_broker(port, tiny_runner):
  with client_lib.WebsocketClient('127.0.0.1', port) as client:
    assert client.metadata['tasks'] == ['transfer cube'] and client.metadata['open_loop_steps'] == 50
    assert client.metadata['image_fields']['primary_image'] == [tiny_runner.protocol.image_size] * 2 + [3]
    observation = make_observation(tiny_runner.protocol, seed=1)
    response = client.infer(observation)
    check_response(response)
    broker = client_lib.ActionChunkBroker(client)
    assert broker.horizon == 50  # from the metadata
    steps = [broker.infer(observation) for _ in range(51)]
    assert broker.queries == 2  # step 0 and step 50 queried the server; steps 1..49 came from the chunk
    # Same fixed seed and observation as the direct query: the broker hands out that chunk row by row.
    np.testing.assert_array_equal(np.stack([s['action'] for s in steps[:50]]), response['actions'])
    np.testing.assert_array_equal(steps[50]['action'], response['actions'][0])
    assert [s['chunk_step'] for s in steps[:3]] == [0, 1, 2] and steps[50]['chunk_step'] == 0
    assert steps[1]['value_prediction'] == response['value_prediction'] and 'actions' not in steps[1]


def test_errors_are_text_frames_and_the_connection_stays_usable(port, tiny_runner):
  observation = make_observation(tiny_runner.protocol, seed=2)
  bad = [
      (codec.packb({**observation, 'proprio': np.full(14, np.nan, np.float32)}), 'non-finite'),
      (codec.packb({**observation, 'task_description': 'fold shirt'}), "unknown task 'fold shirt'"),
      (codec.packb({k: v for k, v in observation.items() if k != 'primary_image'}), 'missing field'),
      (codec.packb({**observation, 'primary_image': np.zeros((64, 64), np.uint8)}), 'must have shape'),
      (codec.packb({**observation, 'primary_image': observation['primary_image'].astype(np.int16)}),
       'must have dtype uint8'),
      (b'\xc1\xc1', 'not valid msgpack'),
      ('{"json": "text"}', 'expected a binary msgpack frame'),
  ]
  bad.append((msgpack.packb({'primary_image': {b'__ndarray__': True, b'data': bytes(8), b'dtype': '|O',
                                                b'shape': [1]}}), 'refused'))
  with client_lib.WebsocketClient('127.0.0.1', port) as client:
    for frame, message in bad:
      with pytest.raises(client_lib.ServerError, match=message):
        client.send_raw(frame)
    check_response(client.infer(observation))


def test_oversized_message_closes_the_connection_and_the_server_goes_on(port, tiny_runner):
  observation = make_observation(tiny_runner.protocol, seed=3)
  with client_lib.WebsocketClient('127.0.0.1', port) as client:
    with pytest.raises(websockets.ConnectionClosed) as closed:
      client.infer({**observation, 'images_history': np.zeros(MAX_PAYLOAD + 1, np.uint8)})
    assert closed.value.rcvd.code == 1009  # message too big
  with client_lib.WebsocketClient('127.0.0.1', port) as client:
    check_response(client.infer(observation))


def test_healthz(port):
  with urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=10) as response:
    assert response.status == 200 and response.read() == b'OK\n'
