"""HTTP client speaking the official ALOHA protocol to `python -m cosmos_jax.serve http` (or the official server):
`POST /act` with a json_numpy body, plain or double-encoded ({"encoded": <JSON string>}, reply a JSON string).

    client = HTTPClient('http://localhost:8777/act')
    response = client.infer(observation)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import requests

from cosmos_jax_client import codec
from cosmos_jax_client import errors


class HTTPClient:
  """`infer(observation)` (the interface every client shares) or `act(observation, double_encoded=...)`; a refused
  request raises ServerError with the server's message and HTTP status. One keep-alive session."""

  def __init__(self, url: str = 'http://localhost:8777/act', timeout: float = 600.0):
    self.url = url
    self.timeout = timeout
    self._session = requests.Session()
    self._metadata: dict | None = None

  @property
  def metadata(self) -> dict:
    """The server's GET /metadata (fetched once)."""
    if self._metadata is None:
      base = self.url[:-len('/act')] if self.url.rstrip('/').endswith('/act') else self.url.rstrip('/')
      response = self._session.get(f'{base.rstrip("/")}/metadata', timeout=self.timeout)
      if response.status_code != 200:
        raise errors.ServerError(f'GET /metadata answered {response.status_code}: {response.text[:200]}',
                                 response.status_code)
      self._metadata = response.json()
    return self._metadata

  def post(self, body: bytes) -> tuple[int, Any]:
    """(status, decoded JSON, or the text when the reply is not JSON) of a raw body."""
    response = self._session.post(self.url, data=body, headers={'Content-Type': 'application/json'},
                                  timeout=self.timeout)
    try:
      return response.status_code, codec.json_loads(response.content)
    except codec.CodecError:
      return response.status_code, response.text

  def act(self, observation: Mapping[str, Any], *, double_encoded: bool = False) -> dict:
    text = codec.json_dumps(dict(observation))
    body = json.dumps({codec.ENCODED_KEY: text}) if double_encoded else text
    status, reply = self.post(body.encode('utf-8'))
    if status != 200:
      raise errors.ServerError(reply.get('error', str(reply)) if isinstance(reply, dict) else str(reply), status)
    if double_encoded:
      if not isinstance(reply, str):
        raise errors.ServerError(f'a double-encoded request expects a JSON string reply, got {type(reply).__name__}')
      reply = codec.json_loads(reply)
    return reply

  def infer(self, observation: Mapping[str, Any]) -> dict:
    return self.act(observation)

  def close(self) -> None:
    self._session.close()

  def __enter__(self) -> 'HTTPClient':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
