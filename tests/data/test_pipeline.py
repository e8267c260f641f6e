"""The grain pipeline over the fixture ALOHA dataset: batch layout, process-count invariance of global batches,
epochs as permutations, determinism, checkpointable state, worker processes, text embeddings."""

import numpy as np
import pytest

from cosmos_jax.data import datasets, pipeline, sample as sample_lib, text
from tests import parity

FIXTURE = parity.golden_dir() / 'aloha_episode_fixture'


@pytest.fixture(scope='module')
def dataset():
  return datasets.load_dataset('aloha', str(FIXTURE), sample_lib.SampleConfig(image_size=56, augment=True))


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _loader(dataset, global_batch_size, **kwargs):
  return pipeline.make_loader(dataset, global_batch_size, **{'process_index': 0, 'process_count': 1, **kwargs})


def _assert_batches_equal(got, want):
  assert len(got) == len(want)
  for k, (g, w) in enumerate(zip(got, want)):
    assert sorted(g) == sorted(w)
    for key in w:
      np.testing.assert_array_equal(g[key], w[key], err_msg=f'batch {k}: {key}')


def test_batch_layout_and_mix(dataset):
  batches = _take(_loader(dataset, 8, seed=1), 6)
  b = batches[0]
  assert b['video'].shape == (8, 11, 56, 56, 3) and b['video'].dtype == np.uint8
  assert b['actions'].shape == (8, 50, 14) and b['actions'].dtype == np.float32
  assert b['proprio'].shape == b['future_proprio'].shape == (8, 14)
  assert b['value_function_return'].shape == (8,) and b['value_function_return'].dtype == np.float32
  assert b['action_latent_idx'].tolist() == [5] * 8 and b['value_latent_idx'].tolist() == [10] * 8
  assert not b['video'][:, [0, 1, 5, 6, 10]].any()  # blank / proprio / action / future proprio / value slots
  assert np.concatenate([x['position'] for x in batches]).tolist() == list(range(48))
  rollout = np.concatenate([x['rollout_data_mask'] for x in batches])
  world = np.concatenate([x['world_model_sample_mask'] for x in batches])
  value = np.concatenate([x['value_function_sample_mask'] for x in batches])
  assert np.array_equal(world + value, rollout)  # every rollout item is exactly one of the two
  assert 0 < rollout.sum() < rollout.size and world.sum() > 0 and value.sum() > 0


@pytest.mark.parametrize('process_count', [2, 4])
def test_global_batches_do_not_depend_on_the_process_count(dataset, process_count):
  single = _take(_loader(dataset, 8, seed=5), 3)
  shards = [_take(_loader(dataset, 8, seed=5, process_index=p, process_count=process_count), 3)
            for p in range(process_count)]
  for k in range(3):
    assert all(s[k]['video'].shape[0] == 8 // process_count for s in shards)
    merged = {key: np.concatenate([s[k][key] for s in shards]) for key in single[k]}
    _assert_batches_equal([merged], [single[k]])


def test_every_epoch_is_a_fresh_permutation(dataset):
  n = len(dataset)
  loader = _loader(dataset, 4, seed=2, keys=('index', 'position'), num_batches=(2 * n + 3) // 4)
  batches = list(loader)
  indices = np.concatenate([b['index'] for b in batches])
  assert np.concatenate([b['position'] for b in batches]).tolist() == list(range(indices.size))
  first, second = indices[:n], indices[n:2 * n]
  assert sorted(first) == sorted(second) == list(range(n))
  assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(n))
  in_order = np.concatenate([b['index'] for b in _take(_loader(dataset, 4, shuffle=False, keys=('index',)), 2)])
  assert in_order.tolist() == list(range(8))


def test_same_seed_same_batches_and_state_restore(dataset):
  first = _loader(dataset, 4, seed=7)
  _take(first, 2)
  state = first.get_state()
  expected = _take(first, 2)
  resumed = _loader(dataset, 4, seed=7)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 2), expected)
  other = next(_loader(dataset, 4, seed=8))
  assert not np.array_equal(other['index'], next(_loader(dataset, 4, seed=7))['index'])


def test_worker_processes_give_the_same_batch_sequence(dataset):
  want = _take(_loader(dataset, 4, seed=3), 3)
  workers = _loader(dataset, 4, seed=3, worker_count=2)
  got = _take(workers, 2)
  state = workers.get_state()
  got += _take(workers, 1)
  _assert_batches_equal(got, want)
  workers.set_state(state)
  _assert_batches_equal(_take(workers, 1), want[2:])


def test_text_embeddings_attached_and_keys_selected(dataset):
  store = text.stand_in_store(dataset.tasks)
  batch = next(_loader(dataset, 2, seed=0, text_store=store, keys=('t5_text_embeddings', 'text_index')))
  assert sorted(batch) == ['t5_text_embeddings', 'text_index']
  assert batch['t5_text_embeddings'].shape == (2, 512, 1024)
  for row, index in zip(batch['t5_text_embeddings'], batch['text_index']):
    np.testing.assert_array_equal(row, store.lookup(dataset.tasks[index]))
  with pytest.raises(KeyError, match='known tasks'):
    _loader(dataset, 2, text_store=text.stand_in_store(['transfer cube']))
  with pytest.raises(KeyError, match=r"keys \['t5_text_embeddings'\] are not in the samples"):
    next(_loader(dataset, 2, keys=('video', 't5_text_embeddings')))


def test_bad_arguments(dataset):
  with pytest.raises(ValueError, match='global_batch_size 6 is not divisible by the 4 processes'):
    _loader(dataset, 6, process_index=1, process_count=4)
  with pytest.raises(ValueError, match=r'process_index 2 is outside \[0, 2\)'):
    _loader(dataset, 4, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='global_batch_size must be positive'):
    _loader(dataset, 0)
