"""The clients, as the cosmos_jax package names them: they live in the light client package `cosmos_jax_client`
(packages/cosmos_jax_client, installable alone on a robot computer without JAX) and are re-exported here for code
that already depends on cosmos_jax (closed-loop evaluation, benchmarks).
"""

from cosmos_jax_client.action_chunk_broker import ActionChunkBroker
from cosmos_jax_client.errors import ServerError
from cosmos_jax_client.http_client import HTTPClient
from cosmos_jax_client.websocket_client import WebsocketClient

__all__ = ['ActionChunkBroker', 'HTTPClient', 'ServerError', 'WebsocketClient']
