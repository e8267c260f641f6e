"""Closed-loop evaluation of an ALOHA policy in the gym-aloha simulator (transfer cube, insertion):

    python -m cosmos_jax.eval.aloha_sim --config=configs/eval/aloha.py:tiny --config.out=/tmp/eval
    python -m cosmos_jax.eval.aloha_sim --config=configs/eval/aloha.py --config.out=DIR \\
        --checkpoint=WORKDIR_OR_CHECKPOINT [--step=N] [--config.policy.vae=VAE --config.episodes=50 --config.x=y ...]

The loop is `episode.run_episode` (the official ALOHA client's), the policy comes from `policies.make_policy`, the
outputs (MP4, value plot, rollout HDF5, summary.json) from `evaluation.evaluate`; `evaluation.run` is this command
as a function. Headless rendering needs MUJOCO_GL=egl (`data.simulator` sets it when unset) and Debian's libegl1
libegl-mesa0 libgl1-mesa-dri.

The absl flags are defined when this module is imported, so only the command imports it.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from cosmos_jax.convert import checkpoint_flags
from cosmos_jax.eval import command
from cosmos_jax.eval import evaluation

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Evaluation config file, e.g. configs/eval/aloha.py:tiny; override fields with --config.x=y.',
    lock_config=True)
_CHECKPOINT_FLAGS = checkpoint_flags.define('policy')
flags.adopt_module_key_flags(checkpoint_flags)  # listed by --help


def main(argv):
  return command.main(argv, config_flag=_CONFIG, checkpoint_flags=_CHECKPOINT_FLAGS, run=evaluation.run,
                      example='configs/eval/aloha.py:tiny')


if __name__ == '__main__':
  app.run(main)
