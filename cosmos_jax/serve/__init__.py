"""Serving cosmos_jax policies to robots, compatible with the official ALOHA server and client (NVlabs/cosmos-policy
18a2acc, cosmos_policy/experiments/robot/aloha/deploy.py).

* `protocols/`: robot request protocols (`aloha.AlohaProtocol`: request validation, response fields; pure numpy).
* `factory`: the weights and assets of a policy, from converted checkpoints or as a random tiny model.
* `query.PolicyQuery`: query orchestration (preprocessing, one action query or best-of-N planning, decoding).
* `runner.PolicyRunner`: a protocol in front of a query; what the servers drive.
* `service.PolicyService`: validation on the event loop before queuing; one model execution at a time in a worker
  thread fed from an explicit bounded queue that drops requests whose client went away or whose deadline passed.
* `http`: aiohttp server for the official ALOHA client (POST /act, port 8777).
* `websocket`: msgpack websocket server (openpi wire format), errors as text frames, /healthz.
* `client`: the websocket and HTTP clients and the action-chunk broker, re-exported from the light client package
  `cosmos_jax_client` (packages/cosmos_jax_client: numpy, msgpack, websockets, requests; no JAX), whose `codec`
  (json_numpy for HTTP, msgpack for the websocket; numeric dtypes only, no pickle) the servers use too.
* `command`: the serve command's work (config -> runner -> service -> server); `__main__` parses its flags.

Command line: `python -m cosmos_jax.serve http|websocket --config=configs/serve/aloha.py[:tiny]` (`--help`). Needs
the `serve` extra (aiohttp, websockets, msgpack, requests).
"""
