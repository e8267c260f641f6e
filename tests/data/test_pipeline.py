"""grain pipeline over the fixture ALOHA dataset: batch layout, determinism, checkpointable state, workers."""

import numpy as np
import pytest

from cosmos_jax.data import aloha, pipeline, sample as sample_lib, text
from tests import parity

FIXTURE = parity.golden_dir() / 'aloha_episode_fixture'


@pytest.fixture(scope='module')
def dataset():
  return aloha.load_dataset(str(FIXTURE), sample_lib.SampleConfig(image_size=56, augment=True))


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_batch_layout_and_mix(dataset):
  batches = _take(iter(pipeline.make_loader(dataset, batch_size=8, seed=1)), 6)
  b = batches[0]
  assert b['video'].shape == (8, 11, 56, 56, 3) and b['video'].dtype == np.uint8
  assert b['actions'].shape == (8, 50, 14) and b['actions'].dtype == np.float32
  assert b['proprio'].shape == b['future_proprio'].shape == (8, 14)
  assert b['value_function_return'].shape == (8,) and b['value_function_return'].dtype == np.float32
  assert b['action_latent_idx'].tolist() == [5] * 8 and b['value_latent_idx'].tolist() == [10] * 8
  assert not b['video'][:, [0, 1, 5, 6, 10]].any()  # blank / proprio / action / future proprio / value slots
  rollout = np.concatenate([x['rollout_data_mask'] for x in batches])
  world = np.concatenate([x['world_model_sample_mask'] for x in batches])
  value = np.concatenate([x['value_function_sample_mask'] for x in batches])
  assert np.array_equal(world + value, rollout)  # every rollout item is exactly one of the two
  assert 0 < rollout.sum() < rollout.size and world.sum() > 0 and value.sum() > 0


def test_same_seed_same_batches_and_state_restore(dataset):
  first = iter(pipeline.make_loader(dataset, batch_size=4, seed=7))
  _take(first, 2)
  state = first.get_state()
  expected = _take(first, 2)
  resumed = iter(pipeline.make_loader(dataset, batch_size=4, seed=7))
  resumed.set_state(state)
  for want, got in zip(expected, _take(resumed, 2)):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  other = next(iter(pipeline.make_loader(dataset, batch_size=4, seed=8)))
  assert not np.array_equal(other['index'], _take(iter(pipeline.make_loader(dataset, batch_size=4, seed=7)), 1)[0][
      'index'])


def _by_index(batches):
  out = {}
  for batch in batches:
    for row, index in enumerate(batch['index']):
      out[int(index)] = {k: v[row] for k, v in batch.items()}
  return out


def test_worker_processes_match_in_process(dataset):
  # With workers, grain batches within each worker (worker w takes records w, w+n, ...), so batch composition
  # differs, but each record (and its coin and augmentation) depends only on (seed, record).
  in_process = _by_index(_take(iter(pipeline.make_loader(dataset, batch_size=4, seed=3)), 2))
  workers = _by_index(_take(iter(pipeline.make_loader(dataset, batch_size=4, seed=3, worker_count=2)), 2))
  assert sorted(in_process) == sorted(workers)
  for index, want in in_process.items():
    for key in want:
      np.testing.assert_array_equal(workers[index][key], want[key], err_msg=f'record {index}: {key}')


def test_text_embeddings_attached(dataset):
  store = text.stand_in_store(dataset.tasks)
  batch = next(iter(pipeline.make_loader(dataset, batch_size=2, seed=0, text_store=store)))
  assert batch['t5_text_embeddings'].shape == (2, 512, 1024)
  for row, index in zip(batch['t5_text_embeddings'], batch['text_index']):
    np.testing.assert_array_equal(row, store.lookup(dataset.tasks[index]))
  with pytest.raises(KeyError, match='known tasks'):
    pipeline.make_loader(dataset, batch_size=2, text_store=text.stand_in_store(['transfer cube']))
