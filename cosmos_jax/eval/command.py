"""The absl `main` both simulator evaluations share (`aloha_sim`, `libero_sim`): the config with the checkpoint
shorthands applied, and exit status 2 with the reason on stderr for bad input (a missing checkpoint, a bad field)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app

from cosmos_jax import compilation_cache
from cosmos_jax import host_memory
from cosmos_jax.convert import checkpoint_flags as checkpoint_flags_lib


def main(argv, *, config_flag, checkpoint_flags: checkpoint_flags_lib.CheckpointFlags, run: Callable[..., dict],
         example: str) -> int:
  """Runs `run(config)`; `example` is the --config value that the usage error suggests."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; settings go in --config.x=y')
  if config_flag.value is None:
    raise app.UsageError(f'--config is required, e.g. --config={example}')
  host_memory.retain_freed_memory()
  compilation_cache.enable()
  config = config_flag.value
  checkpoint_flags.apply(config)
  try:
    run(config)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0
