"""The orbax checkpoint-manager wrapper (cosmos_jax/train/checkpoint.py) on a small train state: save and restore
every item exactly, keep the last N (plus every keep_period-th), latest step, the data iterator, the assets writer,
async saves, and the errors."""

import chex
import grain
import jax
import jax.numpy as jnp
import optax
import pytest

from cosmos_jax.convert import checkpoint as layout
from cosmos_jax.train import checkpoint as checkpoint_lib
from cosmos_jax.train import state as state_lib

TX = optax.adamw(1e-3)


def make_state(seed: int, *, ema: bool = False, steps: int = 2) -> state_lib.TrainState:
  """A train state with non-trivial optimiser moments (a few Adam steps on a random quadratic)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {'dense': {'kernel': jax.random.normal(k1, (4, 3)), 'bias': jnp.zeros(3)},
            'blocks': {'scale': jax.random.normal(k2, (2, 5))}}
  state = state_lib.init_state(params, TX, seed, ema=ema)
  for _ in range(steps):
    grads = jax.tree.map(lambda p: 2 * p + 0.1, state.params)
    updates, opt_state = TX.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state)
  return state


def abstract(state):
  return checkpoint_lib.abstract_with_shardings(state, jax.tree.map(lambda x: x.sharding, state))


def assert_states_equal(restored, expected):
  chex.assert_trees_all_equal_shapes_and_dtypes(restored.params, expected.params)
  chex.assert_trees_all_equal(restored.params, expected.params)
  chex.assert_trees_all_equal(restored.opt_state, expected.opt_state)
  chex.assert_trees_all_equal(restored.ema_params, expected.ema_params)
  assert int(restored.step) == int(expected.step)
  chex.assert_trees_all_equal(restored.rng, expected.rng)


def test_save_restore_latest_and_keep_last_n(tmp_path):
  manager = checkpoint_lib.CheckpointManager(tmp_path, max_to_keep=2, async_save=False)
  assert manager.latest_step() is None
  states = {step: make_state(step, steps=step) for step in range(1, 6)}
  for step, state in states.items():
    assert manager.save(step, state)
  assert manager.all_steps() == [4, 5] and manager.latest_step() == 5
  assert_states_equal(manager.restore(None, abstract(states[5])), states[5])
  assert_states_equal(manager.restore(4, abstract(states[4])), states[4])
  manager.close()
  # A new manager over the same directory (a resumed run) sees the same steps.
  reopened = checkpoint_lib.CheckpointManager(tmp_path, max_to_keep=2, async_save=False)
  assert reopened.latest_step() == 5
  assert_states_equal(reopened.restore(None, abstract(states[5])), states[5])
  reopened.close()


def test_keep_period_keeps_every_nth_beyond_the_last_n(tmp_path):
  manager = checkpoint_lib.CheckpointManager(tmp_path, max_to_keep=1, keep_period=2, async_save=False)
  state = make_state(0)
  for step in range(1, 6):
    manager.save(step, state)
  assert manager.all_steps() == [2, 4, 5]
  manager.close()


def test_save_interval(tmp_path):
  manager = checkpoint_lib.CheckpointManager(tmp_path, max_to_keep=10, save_interval_steps=3, async_save=False)
  state = make_state(0)
  saved = [step for step in range(1, 8) if manager.save(step, state)]
  assert saved == [1, 3, 6] == manager.all_steps()  # the first step, then multiples of the interval
  assert not manager.should_save(7) and manager.save(7, state, force=True)
  assert manager.latest_step() == 7
  manager.close()


def test_ema_params_and_the_item_layout(tmp_path):
  state = make_state(3, ema=True)
  state = state.replace(ema_params=jax.tree.map(lambda p: p * 0.5, state.params))
  manager = checkpoint_lib.CheckpointManager(tmp_path, async_save=False)
  manager.save(7, state)
  restored = manager.restore(7, abstract(state))
  assert_states_equal(restored, state)
  items = {p.name for p in (tmp_path / '7').iterdir()}
  assert {layout.PARAMS, layout.EMA_PARAMS, layout.TRAIN_STATE} <= items
  no_ema = make_state(3)
  manager.save(8, no_ema)
  assert manager.restore(8, abstract(no_ema)).ema_params is None
  manager.close()


def test_async_save_then_restore(tmp_path):
  manager = checkpoint_lib.CheckpointManager(tmp_path, async_save=True)
  state = make_state(5)
  manager.save(1, state)
  manager.wait_until_finished()
  assert manager.all_steps() == [1]
  assert_states_equal(manager.restore(1, abstract(state)), state)
  manager.close()


def test_data_iterator_and_assets(tmp_path):
  dataset = grain.MapDataset.range(100).to_iter_dataset()
  iterator = iter(dataset)
  assert [next(iterator) for _ in range(3)] == [0, 1, 2]
  written = []

  def assets(directory):
    (directory / 'note.txt').write_text('assets of step 3')
    written.append(directory)

  manager = checkpoint_lib.CheckpointManager(tmp_path, async_save=False)
  state = make_state(1)
  manager.save(3, state, data_iter=iterator, assets=assets)
  assert [next(iterator) for _ in range(2)] == [3, 4]  # the live iterator moves on

  fresh = iter(dataset)
  manager.restore(3, abstract(state), data_iter=fresh)
  assert next(fresh) == 3  # continues where the saved iterator was
  assert len(written) == 1 and (tmp_path / '3' / layout.ASSETS / 'note.txt').read_text() == 'assets of step 3'
  manager.close()


def test_restore_errors(tmp_path):
  manager = checkpoint_lib.CheckpointManager(tmp_path / 'empty', async_save=False)
  with pytest.raises(FileNotFoundError, match='no checkpoint to restore'):
    manager.restore(None, abstract(make_state(0)))
  manager.close()


def test_workdir_path_keeps_urls():
  assert str(checkpoint_lib.workdir_path('gs://bucket/run')) == 'gs://bucket/run'
  assert checkpoint_lib.workdir_path('relative/run').is_absolute()
