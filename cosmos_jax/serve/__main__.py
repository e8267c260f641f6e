"""Serve a policy to robots: `python -m cosmos_jax.serve http|websocket --config=configs/serve/aloha.py[:variant]
[--config.x=y ...]`.

  http       POST /act with json_numpy bodies, the official ALOHA client's protocol (default port 8777)
  websocket  msgpack frames, openpi style (default port 8000); clients: packages/cosmos_jax_client

    # A random tiny policy on the bundled sample (task 'transfer cube'), on a laptop CPU:
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py:tiny --config.port=8777
    # The released ALOHA policy, converted with `python -m cosmos_jax.convert` (its statistics and text store are
    # read from next to the converted policy):
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py --config.model.dit=out/aloha \\
        --config.model.vae=out/vae
    # Best-of-N planning with the planning model (main planning command: N=8, ensembles 3 x 5, steps 10/5/5):
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py:planning --config.model.dit=out/aloha \\
        --config.model.vae=out/vae --config.planning.dit=out/aloha_planning
    # Instructions missing from the text store encoded on first use with a converted T5 (convert t5 ...):
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py --config.model.dit=out/aloha \\
        --config.model.vae=out/vae --config.model.t5=out/t5

Every setting is a config field (configs/serve/aloha.py lists them, with the former flag names).
"""

import logging
import sys

from absl import app
from ml_collections import config_flags

from cosmos_jax import compilation_cache
from cosmos_jax.serve import command

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Serving config file, e.g. configs/serve/aloha.py:tiny; override fields with --config.x=y.',
    lock_config=True)


def main(argv):
  modes = sorted(command.MODES)
  if len(argv) != 2 or argv[1] not in command.MODES:
    raise app.UsageError(f'give the mode, one of {modes}, before the flags; got {argv[1:]}')
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/serve/aloha.py:tiny')
  logging.getLogger().setLevel(logging.INFO)
  compilation_cache.enable()
  try:
    command.serve(argv[1], _CONFIG.value)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  app.run(main)
