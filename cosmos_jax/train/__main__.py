"""`python -m cosmos_jax.train --config=configs/aloha.py[:variant] --workdir=DIR [--resume] [--config.x=y ...]`.

Fine-tunes Cosmos Policy on one host or many (TPU pod slice, multi-node GPU): the same command everywhere; on
multi-host platforms `jax.distributed.initialize()` is called first (see launch/). Without a dataset path the
tiny variant trains on the bundled ALOHA-simulator sample.
"""

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cosmos_jax import compilation_cache
from cosmos_jax import host_memory
from cosmos_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config file, e.g. configs/aloha.py:tiny.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard events and images go.')
_RESUME = flags.DEFINE_bool('resume', False, 'Continue from the latest checkpoint in --workdir.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() (multi-process); its coordinator, process count '
    'and id come from the environment (TPU, SLURM) or from the --coordinator/--num_processes/--process_id flags.')
_COORDINATOR = flags.DEFINE_string('coordinator', None, 'host:port of process 0 (multi-process without a cluster env).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (with --coordinator).')

flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax and grain log every operation at INFO
  host_memory.retain_freed_memory()
  compilation_cache.enable()
  if _DISTRIBUTED.value or _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  result = trainer.train(_CONFIG.value, _WORKDIR.value, resume=_RESUME.value)
  if jax.process_index() == 0:
    print(f'done: step {result.final_step}; checkpoints, TensorBoard events and images in {_WORKDIR.value}')


if __name__ == '__main__':
  app.run(main)
