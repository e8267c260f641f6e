"""One tiny runner for every serve test (building and compiling it is the expensive part)."""

import numpy as np
import pytest

from cosmos_jax.serve import runner as runner_lib

IMAGE_SIZE = 64  # the smallest convenient size whose latent slot (16 * 8 * 8) holds the 700 ALOHA action values
TASK = 'transfer cube'  # the bundled sample's only task


@pytest.fixture(scope='session')
def tiny_runner():
  runner = runner_lib.PolicyRunner.tiny(seed=0, image_size=IMAGE_SIZE)
  runner.warmup()
  return runner


def make_observation(runner, seed: int = 0) -> dict:
  """A valid request: random images, a proprio inside the training range, the known task."""
  rng = np.random.default_rng(seed)
  size = runner.image_size
  observation = {field: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                 for field in runner_lib.ALOHA_IMAGE_FIELDS}
  lo, hi = runner.statistics['proprio_min'], runner.statistics['proprio_max']
  observation['proprio'] = (lo + rng.uniform(0.2, 0.8, lo.shape) * (hi - lo)).astype(np.float32)
  observation['task_description'] = TASK
  return observation
