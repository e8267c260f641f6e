"""The jitted train step: gradient accumulation is one optimiser step over micro-batches."""

import dataclasses

import jax
import numpy as np
import optax
import pytest

from configs import aloha
from cosmos_jax.train import data as train_data
from cosmos_jax.train import optim
from cosmos_jax.train import sharding as sharding_lib
from cosmos_jax.train import state as state_lib
from cosmos_jax.train import trainer


def _max_errors(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  err = np.abs(a - b)
  return f'max abs {err.max():.3g}, max rel {(err / np.maximum(np.abs(b), 1e-30)).max():.3g}'


@pytest.fixture(scope='module')
def tiny_setup():
  config = aloha.get_config('tiny')
  config.batch_size = 2
  config.optim.ema_decay = 0.5
  # No warm-up: the first step's learning rate is the full 1e-4, so the parameters move visibly.
  config.optim.schedule.warm_up_steps = [0, 0]
  cfg = trainer.step_config(config)
  mesh = sharding_lib.make_mesh(1, 1, jax.devices()[:1])
  data = train_data.make_training_data(config, cfg.layout, process_index=0, process_count=1)
  batch = data.next_global_batch(mesh)
  dit_params, vae_params = trainer.initial_params(config, cfg.dit, cfg.vae)
  # Host copies: each step donates the device buffers of its state.
  return config, cfg, mesh, batch, jax.device_get(dit_params), vae_params


def _one_step(setup, grad_accum_steps):
  config, cfg, mesh, batch, dit_params, vae_params = setup
  cfg = dataclasses.replace(cfg, grad_accum_steps=grad_accum_steps)
  tx = optim.make_optimizer(config.optim)
  state = state_lib.init_state(dit_params, tx, config.seed, ema=True)
  step, _ = state_lib.jit_train_step(cfg, tx, mesh, jax.eval_shape(lambda s: s, state),
                                     jax.eval_shape(lambda p: p, vae_params), jax.eval_shape(lambda b: b, batch))
  return jax.device_get(step(state, vae_params, batch))


def test_two_micro_batches_of_one_equal_one_step_of_two(tiny_setup):
  full_state, full_metrics = _one_step(tiny_setup, 1)
  accum_state, accum_metrics = _one_step(tiny_setup, 2)
  dit_params = tiny_setup[4]

  # One optimiser step: the step count, the schedule's count and the EMA advanced once, not per micro-batch.
  assert int(full_state.step) == int(accum_state.step) == 1
  full_counts = [int(c) for _, c in optax.tree.get_all_with_path(full_state.opt_state, 'count')]
  accum_counts = [int(c) for _, c in optax.tree.get_all_with_path(accum_state.opt_state, 'count')]
  assert full_counts == accum_counts and set(full_counts) == {1}, (full_counts, accum_counts)

  # Loss and pre-clipping gradient norm of the whole batch (a sum instead of a mean of micro-batches would double it).
  for name in ('loss', 'grad_norm'):
    np.testing.assert_allclose(accum_metrics[name], full_metrics[name], rtol=1e-5,
                               err_msg=f'{name}: {_max_errors(accum_metrics[name], full_metrics[name])}')
  moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(full_state.params), jax.tree.leaves(dit_params)))
  assert moved > 5e-5, f'the step barely moved the parameters ({moved}); the comparison would be vacuous'
  # The micro-batches sum the gradient in another order, so gradients agree to float32 rounding. AdamW's first step
  # is lr * g / (|g| + eps) per element: where |g| is near eps that rounding shows (seen: 5e-8 on a CPU without
  # FMA), but no element can differ by more than the learning rate. The steps as a whole agree to relative L2 1e-3
  # (seen: 1e-5; a wrong accumulation changes them by order one).
  lr = float(optim.learning_rate_schedule(tiny_setup[0].optim)(0))
  for tree in ('params', 'ema_params'):
    step_of = lambda state: np.concatenate([  # pylint: disable=cell-var-from-loop
        (np.asarray(p, np.float64) - np.asarray(p0, np.float64)).ravel()
        for p, p0 in zip(jax.tree.leaves(getattr(state, tree)), jax.tree.leaves(dit_params))])
    accum_step, full_step = step_of(accum_state), step_of(full_state)
    relative = np.linalg.norm(accum_step - full_step) / np.linalg.norm(full_step)
    assert relative <= 1e-3, f'{tree}: the steps differ by relative L2 {relative:.3g}'
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(getattr(accum_state, tree)),
                            jax.tree.leaves(getattr(full_state, tree))):
      assert np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() <= lr, (
          f'{tree}{jax.tree_util.keystr(path)}: {_max_errors(a, b)} (limit: the learning rate {lr:g})')


def test_micro_batches_keep_each_devices_rows():
  x = np.arange(8)
  micro = np.asarray(state_lib.split_micro_batches(x, 2))
  # 2 devices hold rows 0-3 and 4-7: each micro-batch takes 2 rows from each device.
  np.testing.assert_array_equal(micro, [[0, 2, 4, 6], [1, 3, 5, 7]])
  with pytest.raises(ValueError, match='grad_accum_steps=3'):
    state_lib.split_micro_batches(x, 3)
