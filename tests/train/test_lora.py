"""LoRA training steps on the tiny config: the loss falls while the base stays bit-identical, and the optimiser state
exists for the adapters only."""

import dataclasses
import math

import jax
import numpy as np
import optax
import pytest

from configs import aloha
from cosmos_jax.nn import lora as lora_lib
from cosmos_jax.policy import diffusion
from cosmos_jax.train import data as train_data
from cosmos_jax.train import sharding as sharding_lib
from cosmos_jax.train import state as state_lib
from cosmos_jax.train import trainer


@pytest.fixture(scope='module')
def lora_setup():
  config = aloha.get_config('tiny,lora')
  config.batch_size = 2
  config.optim.lr = 1e-3
  config.optim.schedule.warm_up_steps = [0, 0]  # the full learning rate from the first step
  cfg = trainer.step_config(config)
  mesh = sharding_lib.make_mesh(1, 1, jax.devices()[:1])
  data = train_data.make_training_data(config, cfg.layout, process_index=0, process_count=1)
  batch = data.next_global_batch(mesh)
  base = jax.device_get(trainer.initial_dit_params(aloha.get_config('tiny'), cfg.dit))  # a stand-in base
  vae_params = trainer.load_vae_params(config, cfg.vae)
  return config, cfg, mesh, batch, base, vae_params


def _leaf_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_optimizer_state_holds_only_adapter_leaves(lora_setup):
  config, cfg, _, _, base, _ = lora_setup
  params = trainer.initial_lora_params(config, cfg, base)
  state = state_lib.init_state(params, trainer.make_optimizer(config), config.seed)
  adapters = params['adapters']
  n_adapter_leaves = len(jax.tree.leaves(adapters))
  assert n_adapter_leaves == 2 * 10  # A and B of 10 stacked layers (q, k, v, out of both attentions; 2 MLP)
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
  scalars = [x for x in jax.tree.leaves(state.opt_state) if x.ndim == 0]
  # AdamW's mu and nu, one per adapter leaf with its shape; nothing of the base; only step counts besides.
  assert len(moments) == 2 * n_adapter_leaves
  assert sorted(m.shape for m in moments) == sorted(2 * [a.shape for a in jax.tree.leaves(adapters)])
  assert _leaf_bytes(moments) == 2 * _leaf_bytes(adapters) == 2 * 4 * lora_lib.count(adapters)
  assert len(scalars) <= 2 and _leaf_bytes(scalars) <= 8
  assert _leaf_bytes(state.opt_state) == 2 * _leaf_bytes(adapters) + _leaf_bytes(scalars)
  # A full fine-tune of the same model keeps two moments of every base parameter.
  full = state_lib.init_state(base, trainer.make_optimizer(aloha.get_config('tiny')), config.seed)
  assert sum(x.size for x in jax.tree.leaves(full.opt_state) if x.ndim > 0) == 2 * sum(x.size for x in jax.tree.leaves(base))


def test_tiny_lora_run_lowers_the_loss_and_keeps_the_base_bit_identical(lora_setup):
  config, cfg, mesh, batch, base, vae_params = lora_setup
  tx = trainer.make_optimizer(config)
  state = state_lib.init_state(trainer.initial_lora_params(config, cfg, base), tx, config.seed)
  initial_adapters = jax.device_get(state.params['adapters'])
  step, _ = state_lib.jit_train_step(cfg, tx, mesh, jax.eval_shape(lambda s: s, state),
                                     jax.eval_shape(lambda p: p, vae_params), jax.eval_shape(lambda b: b, batch))

  # A fixed noise draw to measure the loss before and after (each step draws its own).
  sigma, epsilon = diffusion.draw_sigma_and_noise(jax.random.key(7), state_lib.latent_shape(cfg, batch['video'].shape),
                                                  cfg.diffusion)
  cfg_eval = dataclasses.replace(cfg, mesh=None)
  loss_of = jax.jit(lambda adapters: state_lib.loss_and_metrics(adapters, base, vae_params, batch, sigma, epsilon,
                                                                cfg_eval)[0])
  before = float(loss_of(state.params['adapters']))
  # Zero-initialised B: the LoRA model's loss is the base model's, exactly.
  base_loss = float(jax.jit(lambda p: state_lib.loss_and_metrics(p, None, vae_params, batch, sigma, epsilon,
                                                                 dataclasses.replace(cfg_eval, lora=None))[0])(base))
  assert before == base_loss

  for _ in range(12):
    state, metrics = step(state, vae_params, batch)
  state = jax.device_get(state)
  after = float(loss_of(state.params['adapters']))
  assert after < 0.9 * before, f'loss before {before:.4f}, after 12 LoRA steps {after:.4f}'
  assert int(state.step) == 12 and math.isfinite(float(metrics['loss']))

  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(state.params['base']), jax.tree.leaves(base)):
    assert got.dtype == want.dtype and np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
        f'base {jax.tree_util.keystr(path)} changed'
  moved = [float(np.abs(a - a0).max()) for a, a0 in zip(jax.tree.leaves(state.params['adapters']),
                                                        jax.tree.leaves(initial_adapters))]
  assert min(moved) > 0, 'every adapter leaf (A and B) trains'
  counts = [int(c) for _, c in optax.tree.get_all_with_path(state.opt_state, 'count')]
  assert counts and set(counts) == {12}
