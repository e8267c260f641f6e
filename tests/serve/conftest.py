"""One tiny runner for every serve test that needs the model (building and compiling it is the expensive part),
and the ALOHA request protocol alone (on the bundled sample's assets) for those that only need validation."""

import numpy as np
import pytest

from cosmos_jax.data import bundled
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.serve import runner as runner_lib
from cosmos_jax.serve.protocols import aloha

IMAGE_SIZE = 64  # the smallest convenient size whose latent slot (16 * 8 * 8) holds the 700 ALOHA action values
TASK = 'transfer cube'  # the bundled sample's only task


@pytest.fixture(scope='session')
def tiny_runner():
  runner = runner_lib.PolicyRunner.tiny(seed=0, image_size=IMAGE_SIZE)
  runner.warmup()
  return runner


@pytest.fixture(scope='session')
def aloha_protocol():
  """The protocol the tiny runner uses, without building a model."""
  sample = bundled.sample_dir('aloha')
  return aloha.AlohaProtocol(image_size=IMAGE_SIZE,
                             statistics=stats_lib.load_statistics(sample / stats_lib.STATISTICS_FILENAME),
                             tasks=text_lib.TextStore.load(bundled.text_store_dir('aloha')).tasks)


def make_observation(protocol, seed: int = 0) -> dict:
  """A valid request: random images, a proprio inside the training range, the known task."""
  rng = np.random.default_rng(seed)
  size = protocol.image_size
  observation = {field: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for field in protocol.image_fields}
  lo, hi = protocol.statistics['proprio_min'], protocol.statistics['proprio_max']
  observation['proprio'] = (lo + rng.uniform(0.2, 0.8, lo.shape) * (hi - lo)).astype(np.float32)
  observation['task_description'] = TASK
  return observation
