"""One official-protocol /act request to a runner served over HTTP, as the official ALOHA client sends it (a
json_numpy body of random images, mid-range proprio and the task text); the decoded answer comes back."""

import json_numpy
import numpy as np
import requests

from cosmos_jax.serve import command
from cosmos_jax.serve import http as http_lib
from cosmos_jax.serve import service as service_lib


def act_over_http(runner, service_config, image_size: int) -> dict:
  service = command.make_service(service_config, runner)
  loop = service_lib.BackgroundLoop()
  server = http_lib.HTTPServer(service, '127.0.0.1', 0)
  port = loop.run(server.start())
  try:
    protocol = runner.protocol
    rng = np.random.default_rng(0)
    observation = {f: rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8) for f in protocol.image_fields}
    lo, hi = protocol.statistics['proprio_min'], protocol.statistics['proprio_max']
    observation['proprio'] = (0.5 * (lo + hi)).astype(np.float32)
    observation['task_description'] = 'transfer cube'
    response = requests.post(f'http://127.0.0.1:{port}/act', data=json_numpy.dumps(observation),
                             headers={'Content-Type': 'application/json'}, timeout=600)
    assert response.status_code == 200, response.text
    return json_numpy.loads(response.text)
  finally:
    loop.run(server.stop())
    loop.stop()
    service.close()
