"""Robot request protocols: one module per benchmark's request and response format (ALOHA, LIBERO, RoboCasa),
each a `base.RobotProtocol`."""

from cosmos_jax.serve.protocols import aloha
from cosmos_jax.serve.protocols import base
from cosmos_jax.serve.protocols import libero
from cosmos_jax.serve.protocols import robocasa

PROTOCOLS: dict[str, type[base.RobotProtocol]] = {'aloha': aloha.AlohaProtocol, 'libero': libero.LiberoProtocol,
                                                  'robocasa': robocasa.RoboCasaProtocol}


def get(name: str) -> type[base.RobotProtocol]:
  """The protocol class of a benchmark (its layout name)."""
  if name not in PROTOCOLS:
    raise ValueError(f'no request protocol for {name!r}; protocols: {sorted(PROTOCOLS)}')
  return PROTOCOLS[name]
