"""The light client package (packages/cosmos_jax_client) installs alone into an empty virtualenv, without JAX, and
drives the tiny policy over both protocols: websocket (with the action-chunk broker) and HTTP /act, with a refused
request raising ServerError on a connection that stays usable."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cosmos_jax.serve import http as http_lib
from cosmos_jax.serve import service as service_lib
from cosmos_jax.serve import websocket as websocket_lib
from tests.serve.conftest import make_observation

CLIENT_PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'packages' / 'cosmos_jax_client'
# What the client declares (pyproject.toml); installed from the pip cache or the index, like a robot computer would.
CLIENT_DEPENDENCIES = ('numpy', 'msgpack', 'websockets', 'requests')

# Runs inside the empty virtualenv: argv = websocket port, HTTP port, proprio (JSON list).
CLIENT_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from cosmos_jax_client import action_chunk_broker, errors, http_client, websocket_client

    ws_port, http_port, proprio = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    with websocket_client.WebsocketClient('127.0.0.1', ws_port) as client:
      meta = client.metadata
      rng = np.random.default_rng(0)
      observation = {field: rng.integers(0, 256, shape, dtype=np.uint8) for field, shape in meta['image_fields'].items()}
      observation.update(proprio=np.asarray(proprio, np.float32), task_description=meta['tasks'][0])
      broker = action_chunk_broker.ActionChunkBroker(client)
      steps = [broker.infer(observation) for _ in range(broker.horizon)]
      response = {**steps[0], 'actions': np.stack([s['action'] for s in steps])}
      try:
        client.infer({**observation, 'task_description': 'fold shirt'})
        refused = None
      except errors.ServerError as e:
        refused = str(e)
      again = client.infer(observation)
    with http_client.HTTPClient(f'http://127.0.0.1:{http_port}/act') as http:
      over_http = http.infer(observation)
      try:
        http.infer({**observation, 'proprio': np.full(len(proprio), np.nan, np.float32)})
        http_refused = None
      except errors.ServerError as e:
        http_refused = [e.status, str(e)]
    print(json.dumps({
        'jax_loaded': any(name == 'jax' or name.startswith('jax.') for name in sys.modules),
        'actions_shape': list(response['actions'].shape), 'actions_dtype': str(response['actions'].dtype),
        'future_images': sorted(response['future_image_predictions']),
        'broker_queries': broker.queries, 'broker_horizon': broker.horizon,
        'chunk_steps': [s['chunk_step'] for s in steps],
        'refused': refused, 'again_matches': bool(np.array_equal(again['actions'], response['actions'])),
        'http_matches': bool(np.array_equal(over_http['actions'], response['actions'])),
        'http_refused': http_refused, 'first_action': response['actions'][0].tolist()}))
''')


@pytest.fixture(scope='module')
def client_venv(tmp_path_factory):
  """An empty virtualenv holding only the client package (installed --no-deps) and its declared dependencies."""
  robot = tmp_path_factory.mktemp('robot')
  # A copy, as a robot computer would have it: pip builds a local directory in place (build/, *.egg-info).
  source = shutil.copytree(CLIENT_PACKAGE, robot / 'cosmos_jax_client',
                           ignore=shutil.ignore_patterns('build', '*.egg-info', '__pycache__'))
  venv = robot / 'venv'
  # No pip inside (seconds saved); this environment's pip installs into it (pip >= 22.3: --python).
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
  python = venv / 'bin' / 'python'
  pip = [sys.executable, '-m', 'pip', '--python', str(python), 'install', '-q', '--disable-pip-version-check']
  subprocess.run(pip + ['--no-deps', str(source)], check=True)
  subprocess.run(pip + list(CLIENT_DEPENDENCIES), check=True)
  return python


@pytest.fixture(scope='module')
def ports(tiny_runner):
  service = service_lib.PolicyService(tiny_runner)
  loop = service_lib.BackgroundLoop()
  servers = [websocket_lib.WebsocketServer(service, '127.0.0.1', 0), http_lib.HTTPServer(service, '127.0.0.1', 0)]
  yield [loop.run(server.start()) for server in servers]
  for server in servers:
    loop.run(server.stop())
  loop.stop()
  service.close()


def _run_in(python, *args, check=True):
  # A clean environment: nothing of this checkout or of the test virtualenv on the path.
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
  return subprocess.run([str(python), *args], capture_output=True, text=True, env=env, cwd=python.parent,
                        check=check, timeout=300)


def test_the_client_venv_has_no_jax_and_no_cosmos_jax(client_venv):
  for module in ('jax', 'cosmos_jax'):
    result = _run_in(client_venv, '-c', f'import {module}', check=False)
    assert result.returncode != 0 and f"No module named '{module}'" in result.stderr, result.stderr
  result = _run_in(client_venv, '-c', 'import cosmos_jax_client, sys; print(cosmos_jax_client.__file__)')
  assert 'site-packages' in result.stdout and str(CLIENT_PACKAGE) not in result.stdout


def test_the_light_client_drives_the_tiny_policy(client_venv, ports, tiny_runner):
  observation = make_observation(tiny_runner.protocol)
  ws_port, http_port = ports
  result = _run_in(client_venv, '-c', CLIENT_SCRIPT, str(ws_port), str(http_port),
                   json.dumps(observation['proprio'].tolist()))
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert not summary['jax_loaded']
  assert summary['actions_shape'] == [50, 14] and summary['actions_dtype'] == 'float64'
  assert summary['future_images'] == ['future_image', 'future_wrist_image', 'future_wrist_image2']
  # One query served the whole chunk; a second query on the same connection (after a refused one) and one over
  # HTTP give the same chunk (fixed sampler seed, same observation).
  assert summary['broker_horizon'] == 50 and summary['broker_queries'] == 1
  assert summary['chunk_steps'] == list(range(50))
  assert "unknown task 'fold shirt'" in summary['refused'] and summary['again_matches']
  assert summary['http_matches']
  assert summary['http_refused'][0] == 400 and 'non-finite' in summary['http_refused'][1]
  # The same request through the in-process runner gives the same first action (fixed sampler seed).
  rng = np.random.default_rng(0)
  local = {field: rng.integers(0, 256, (tiny_runner.protocol.image_size, tiny_runner.protocol.image_size, 3), dtype=np.uint8)
           for field in tiny_runner.metadata()['image_fields']}
  local.update(proprio=observation['proprio'], task_description='transfer cube')
  np.testing.assert_array_equal(np.asarray(summary['first_action']), tiny_runner.act(local)['actions'][0])
