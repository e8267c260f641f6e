"""Closed-loop evaluation of an ALOHA policy in the gym-aloha simulator (transfer cube, insertion):

    python -m cosmos_jax.eval.aloha_sim --config=configs/eval/aloha.py:tiny --config.out=/tmp/eval
    python -m cosmos_jax.eval.aloha_sim --config=configs/eval/aloha.py --config.out=DIR \\
        --checkpoint=WORKDIR_OR_CHECKPOINT [--step=N] [--config.policy.vae=VAE --config.episodes=50 --config.x=y ...]

The loop is `episode.run_episode` (the official ALOHA client's), the policy comes from `policies.make_policy`, the
outputs (MP4, value plot, rollout HDF5, summary.json) from `evaluation.evaluate`. Headless rendering needs
MUJOCO_GL=egl (`data.simulator` sets it when unset) and Debian's libegl1 libegl-mesa0 libgl1-mesa-dri.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from cosmos_jax import compilation_cache
from cosmos_jax.convert import checkpoint_flags
from cosmos_jax.eval import evaluation
from cosmos_jax.eval import policies

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Evaluation config file, e.g. configs/eval/aloha.py:tiny; override fields with --config.x=y.',
    lock_config=True)
_CHECKPOINT_FLAGS = checkpoint_flags.define('policy')
flags.adopt_module_key_flags(checkpoint_flags)  # listed by --help


def run(config) -> dict:
  policy, name = policies.make_policy(config)
  summary = evaluation.evaluate(policy, config, policy_name=name)
  print(f'success rate {summary["success_rate"]:.3f}, mean highest reward {summary["mean_highest_reward"]:.2f} '
        f'over {summary["episodes"]} episodes; summary in {os.path.join(config.out, evaluation.SUMMARY_FILENAME)}')
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; settings go in --config.x=y')
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/eval/aloha.py:tiny')
  compilation_cache.enable()
  config = _CONFIG.value
  _CHECKPOINT_FLAGS.apply(config)
  try:
    run(config)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  app.run(main)
