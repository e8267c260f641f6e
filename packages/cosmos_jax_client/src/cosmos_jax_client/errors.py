"""The one exception a client raises for a request the server refused or failed."""

from __future__ import annotations


class ServerError(RuntimeError):
  """The server refused a request or failed; the message is the server's, `status` the HTTP status (None over
  the websocket)."""

  def __init__(self, message: str, status: int | None = None):
    super().__init__(message)
    self.status = status
