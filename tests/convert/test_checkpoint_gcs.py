"""Paths may be gs:// URLs, tested against a real GCS API (the local emulator, see tests/gcs_emulator.py): a
checkpoint written to and read from a bucket (orbax params, assets, statistics, text store), the training logger's
metrics.jsonl, images and TensorBoard events in a bucket, and nothing written to the working directory."""

import json
import os

import numpy as np
import pytest

from cosmos_jax.convert import checkpoint
from cosmos_jax.data import bundled
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.nn import dit
from cosmos_jax.train import checkpoint as train_checkpoint
from cosmos_jax.train import metrics
from tests import gcs_emulator


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """gs://bucket served locally; the test runs in an empty working directory, checked to stay empty."""
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  with gcs_emulator.emulator() as env, gcs_emulator.in_this_process(env, monkeypatch):
    yield 'gs://' + gcs_emulator.BUCKET
  assert sorted(os.listdir(cwd)) == [], 'a gs:// path was written to the local working directory'


def test_workdir_urls_stay_urls():
  assert os.fspath(train_checkpoint.workdir_path('gs://b/run')) == 'gs://b/run'
  assert os.fspath(train_checkpoint.workdir_path('run')) == os.path.abspath('run')


def test_checkpoint_round_trip_in_a_bucket(bucket):
  params = {'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': {'x': np.ones(4, np.float32)}}
  config = checkpoint.describe('dit', dit.DiTConfig.preset('tiny'), layout='aloha', step=7)
  run = f'{bucket}/run/checkpoints/7'
  checkpoint.save_params(run, params, config,
                         {checkpoint.STATISTICS_ASSET: bundled.sample_dir('aloha') / checkpoint.STATISTICS_ASSET})
  store = text_lib.TextStore.load(bundled.text_store_dir('aloha'))
  checkpoint.write_assets(f'{run}/assets', config, text_store=store)  # the trainer's path for the text store

  opened = checkpoint.open_checkpoint(f'{bucket}/run')
  assert opened.step == 7 and os.fspath(opened.directory) == run
  restored = opened.load_params()
  for key in ('w',):
    np.testing.assert_array_equal(restored[key], params[key])
  np.testing.assert_array_equal(restored['b']['x'], params['b']['x'])
  assert opened.text_store().tasks == store.tasks
  expected = stats_lib.load_statistics(bundled.sample_dir('aloha'))
  for name, value in opened.statistics().items():
    np.testing.assert_array_equal(value, expected[name], err_msg=name)
  with pytest.raises(FileNotFoundError, match='no checkpoint of step 8'):
    checkpoint.open_checkpoint(f'{bucket}/run', step=8)

  stats_lib.save_statistics(expected, f'{bucket}/stats/{stats_lib.STATISTICS_FILENAME}')
  assert stats_lib.load_statistics(f'{bucket}/stats').keys() == expected.keys()


def test_logger_writes_metrics_images_and_events_to_a_bucket(bucket):
  workdir = f'{bucket}/logs'
  grid = np.zeros((4, 6, 3), np.uint8)
  for steps in ((1, 2), (3,)):  # a second logger (a resumed run) keeps the first one's lines and events
    logger = metrics.Logger(workdir, total_steps=3)
    for step in steps:
      logger.scalars(step, {'loss': float(step)}, step_time=0.1, lr=1e-4)
    logger.image(steps[-1], 'predictions/grid', grid)
    logger.close()
  from etils import epath  # pylint: disable=g-import-not-at-top
  lines = [json.loads(line) for line in (epath.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  assert [(row['step'], row['loss']) for row in lines] == [(1, 1.0), (2, 2.0), (3, 3.0)]
  assert {p.name for p in (epath.Path(workdir) / 'images').iterdir()} == {'predictions_grid_00000002.png',
                                                                            'predictions_grid_00000003.png'}
  events = list((epath.Path(workdir) / 'tensorboard').iterdir())
  assert len(events) == 2 and all(p.name.startswith('events.out.tfevents.') for p in events)
