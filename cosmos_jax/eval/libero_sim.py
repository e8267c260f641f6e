"""Closed-loop evaluation of a LIBERO policy with the official protocol (cosmos_jax.eval.libero_sim_eval):

    python -m cosmos_jax.eval.libero_sim --config=configs/eval/libero.py:tiny --config.out=/tmp/libero_eval
    python -m cosmos_jax.eval.libero_sim --config=configs/eval/libero.py --config.out=DIR \\
        --checkpoint=WORKDIR_OR_CHECKPOINT [--step=N] [--config.policy.vae=VAE --config.suites=libero_spatial ...]
    python -m cosmos_jax.eval.libero_sim --config=configs/eval/libero.py --config.out=DIR --config.server=ws://HOST:8000

The simulator runs in the LIBERO environment ($COSMOS_JAX_LIBERO_PYTHON, see libero_sim_env);
`libero_sim_eval.run` is this command as a function.

The absl flags are defined when this module is imported, so only the command imports it.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from cosmos_jax.convert import checkpoint_flags
from cosmos_jax.eval import command
from cosmos_jax.eval import libero_sim_eval

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Evaluation config file, e.g. configs/eval/libero.py:tiny; override fields with --config.x=y.',
    lock_config=True)
_CHECKPOINT_FLAGS = checkpoint_flags.define('policy')
flags.adopt_module_key_flags(checkpoint_flags)  # listed by --help


def main(argv):
  return command.main(argv, config_flag=_CONFIG, checkpoint_flags=_CHECKPOINT_FLAGS, run=libero_sim_eval.run,
                      example='configs/eval/libero.py:tiny')


if __name__ == '__main__':
  app.run(main)
