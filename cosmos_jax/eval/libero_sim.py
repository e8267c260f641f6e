"""Closed-loop evaluation of a LIBERO policy with the official protocol (cosmos_jax.eval.libero_sim_eval):

    python -m cosmos_jax.eval.libero_sim --config=configs/eval/libero.py:tiny --config.out=/tmp/libero_eval
    python -m cosmos_jax.eval.libero_sim --config=configs/eval/libero.py --config.out=DIR \\
        --config.policy.dit_dir=DIT --config.policy.vae_dir=VAE [--config.suites=libero_spatial --config.x=y ...]
    python -m cosmos_jax.eval.libero_sim --config=configs/eval/libero.py --config.out=DIR --config.server=ws://HOST:8000

The simulator runs in the LIBERO environment ($COSMOS_JAX_LIBERO_PYTHON, see libero_sim_env). The absl flags are
defined only when this module runs as the program, so importing it (tests) defines none.
"""

from __future__ import annotations

import os

from absl import app

from cosmos_jax.eval import libero_sim_eval


def run(config) -> dict:
  policy, name = libero_sim_eval.make_policy(config)
  summary = libero_sim_eval.evaluate(policy, config, policy_name=name)
  rates = ', '.join(f'{suite} {s["success_rate"]:.3f}' for suite, s in summary['suites'].items())
  print(f'success rate {summary["success_rate"]:.3f} ({rates}); summary in '
        f'{os.path.join(config.out, libero_sim_eval.SUMMARY_FILENAME)}', flush=True)
  return summary


def main():
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flag = config_flags.DEFINE_config_file(
      'config', None, 'Evaluation config, e.g. configs/eval/libero.py:tiny; override fields with --config.x=y.',
      lock_config=True)

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments {argv[1:]}; settings go in --config.x=y')
    if config_flag.value is None:
      raise app.UsageError('--config is required, e.g. --config=configs/eval/libero.py:tiny')
    run(config_flag.value)

  app.run(_main)


if __name__ == '__main__':
  main()
