"""The tiny variant of every training config trains on its bundled sample (LIBERO and RoboCasa here; ALOHA in
test_train.py): one optimiser step with a finite loss and a checkpoint."""

import math
import os

import pytest

from configs import libero, robocasa
from cosmos_jax.train import trainer


@pytest.mark.parametrize('config_module', [libero, robocasa], ids=['libero', 'robocasa'])
def test_tiny_variant_trains_one_step(config_module, tmp_path):
  c = config_module.get_config('tiny')
  c.total_steps = 1
  c.checkpoint.every_steps = 1
  c.checkpoint.async_save = False
  c.log.image_every_steps = 0
  result = trainer.train(c, str(tmp_path))
  assert list(result.losses) == [1] and math.isfinite(result.losses[1])
  assert '1' in os.listdir(tmp_path / 'checkpoints')
