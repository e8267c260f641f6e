"""Serving cosmos_jax policies (policy_spec section 12).

* `runner.PolicyRunner`: the in-process policy (validation, preprocessing, policy or best-of-N planning, response).
* `codec`: json_numpy (HTTP) and msgpack (websocket) array codecs; numeric dtypes only, no pickle.
* `service.PolicyService`: validation on the event loop before queuing; one model execution at a time in a worker
  thread fed from an explicit bounded queue that drops requests whose client went away or whose deadline passed.
* `http`: aiohttp server for the official ALOHA client (POST /act, port 8777).
* `websocket`: msgpack websocket server (openpi wire format), errors as text frames, /healthz.
* `client`: websocket client, action-chunk broker, HTTP client.

Command line: `python -m cosmos_jax.serve --help`. Needs the `serve` extra (aiohttp, websockets, msgpack).
"""
