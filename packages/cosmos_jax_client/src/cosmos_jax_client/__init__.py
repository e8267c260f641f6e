"""Light client for cosmos_jax policy servers: numpy, msgpack, websockets and requests; no JAX.

* `websocket_client.WebsocketClient`, `http_client.HTTPClient`: `infer(observation) -> response`.
* `action_chunk_broker.ActionChunkBroker`: one action per step from the last response's chunk.
* `codec`: the wire formats (json_numpy JSON for HTTP, msgpack for the websocket), shared with the server.
* `errors.ServerError`: a refused or failed request, with the server's message.
"""
