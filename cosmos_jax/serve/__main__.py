"""Serve a policy to robots: `python -m cosmos_jax.serve http|websocket --config=configs/serve/aloha.py[:variant]
[--config.x=y ...]`.

  http       POST /act with json_numpy bodies, the official ALOHA client's protocol (default port 8777)
  websocket  msgpack frames, openpi style (default port 8000); clients: packages/cosmos_jax_client

    # A random tiny policy on the bundled sample (task 'transfer cube'), on a laptop CPU:
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py:tiny --config.port=8777
    # A policy fine-tuned here, from its training workdir (latest step; EMA parameters when the run kept them;
    # the VAE it trained with, its statistics and text store):
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py --checkpoint=runs/aloha [--step=N]
    # The released ALOHA policy, converted with `python -m cosmos_jax.convert dit --layout=aloha ...` (its
    # statistics and text store are read from the checkpoint's assets):
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py --checkpoint=out/aloha \\
        --config.model.vae=out/vae
    # Best-of-N planning with the planning model (main planning command: N=8, ensembles 3 x 5, steps 10/5/5):
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py:planning --checkpoint=out/aloha \\
        --config.model.vae=out/vae --config.planning.checkpoint=out/aloha_planning
    # Instructions missing from the text store encoded on first use with a converted T5 (convert t5 ...):
    python -m cosmos_jax.serve http --config=configs/serve/aloha.py --checkpoint=out/aloha \\
        --config.model.vae=out/vae --config.model.t5=out/t5

Every setting is a config field (configs/serve/aloha.py lists them, with the former flag names).
"""

import logging
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from cosmos_jax import compilation_cache
from cosmos_jax import host_memory
from cosmos_jax.convert import checkpoint_flags
from cosmos_jax.serve import command

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Serving config file, e.g. configs/serve/aloha.py:tiny; override fields with --config.x=y.',
    lock_config=True)
_CHECKPOINT_FLAGS = checkpoint_flags.define('model')
flags.adopt_module_key_flags(checkpoint_flags)  # listed by --help


def main(argv):
  modes = sorted(command.MODES)
  if len(argv) != 2 or argv[1] not in command.MODES:
    raise app.UsageError(f'give the mode, one of {modes}, before the flags; got {argv[1:]}')
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/serve/aloha.py:tiny')
  logging.getLogger().setLevel(logging.INFO)
  host_memory.retain_freed_memory()
  compilation_cache.enable()
  config = _CONFIG.value
  _CHECKPOINT_FLAGS.apply(config)
  try:
    command.serve(argv[1], config)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  app.run(main)
