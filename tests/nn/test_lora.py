"""LoRA adapters on the DiT: layer selection, zero-init equals the base, merged equals unmerged, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.nn import dit
from cosmos_jax.nn import lora

CFG = dit.DiTConfig.preset('tiny')


@functools.lru_cache(maxsize=None)
def base_params():
  """Tiny DiT params with every leaf perturbed (the official init zeroes the output layer and adaLN up
  projections, which would hide the adapters' effect)."""
  params = dit.init_params(CFG, jax.random.key(0))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape).astype(p.dtype), params)


def inputs(batch=2, t=2, h=4, w=4):
  keys = jax.random.split(jax.random.key(1), 3)
  return dict(x=jax.random.normal(keys[0], (batch, t, h, w, CFG.in_channels)),
              timesteps=jax.random.uniform(keys[1], (batch, t)),
              crossattn_emb=jax.random.normal(keys[2], (batch, 3, CFG.crossattn_emb_channels)),
              condition_mask=jnp.zeros((batch, t, h, w, 1)))


@jax.jit
def forward(params, args):
  return dit.forward(params, CFG, **args)


def random_adapters(cfg, seed=2, scale=0.1):
  """Adapters with B non-zero (as after training)."""
  adapters = lora.init_adapters(jax.random.key(seed), base_params(), cfg)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: a + scale * rng.standard_normal(a.shape).astype(np.float32), adapters)


def test_default_targets_are_the_predict2_robotics_set():
  names = lora.target_names(base_params(), lora.LoRAConfig())
  assert sorted(names) == sorted([f'blocks.{attn}.{p}' for attn in ('cross_attn', 'self_attn')
                                  for p in ('k_proj', 'output_proj', 'q_proj', 'v_proj')]
                                 + ['blocks.mlp.layer1', 'blocks.mlp.layer2'])
  adapters = lora.init_adapters(jax.random.key(0), base_params(), lora.LoRAConfig(rank=3))
  a = adapters['blocks']['mlp']['layer1']['lora_a']
  b = adapters['blocks']['mlp']['layer1']['lora_b']
  assert a.shape == (CFG.num_blocks, 64, 3) and b.shape == (CFG.num_blocks, 3, 256)
  assert float(jnp.abs(a).max()) <= 1 / np.sqrt(64) and float(jnp.abs(a).min()) > 0
  np.testing.assert_array_equal(b, 0)
  # self-attention q/k/v/out and cross-attention q/out are 64 -> 64, cross-attention k/v 32 (text) -> 64.
  per_block = 6 * 3 * (64 + 64) + 2 * 3 * (32 + 64) + 3 * (64 + 256) + 3 * (256 + 64)
  assert lora.count(adapters) == CFG.num_blocks * per_block


def test_zero_initialised_adapters_equal_the_base_exactly():
  params = base_params()
  args = inputs()
  adapters = lora.init_adapters(jax.random.key(3), params, lora.LoRAConfig())
  base_out = np.asarray(forward(params, args))
  lora_out = np.asarray(forward(lora.unmerged(params, adapters, lora.LoRAConfig()), args))
  assert np.abs(base_out).max() > 0.1  # the check below is not vacuous
  np.testing.assert_array_equal(lora_out, base_out)


@pytest.mark.parametrize('cfg', [lora.LoRAConfig(), lora.LoRAConfig(targets=('self_attn.q_proj', 'mlp.layer2'),
                                                                     rank=4, alpha=16)])
def test_merged_and_unmerged_forward_agree(cfg):
  params = base_params()
  args = inputs()
  adapters = random_adapters(cfg)
  with jax.default_matmul_precision('highest'):
    base_out = np.asarray(forward(params, args))
    separate = np.asarray(forward(lora.unmerged(params, adapters, cfg), args))
    merged = np.asarray(forward(lora.merge(params, adapters, cfg), args))
  assert np.abs(separate - base_out).max() > 1e-2  # the adapters change the output
  err = np.abs(merged - separate).max()
  rel = err / np.abs(separate).max()
  assert err < 1e-4, f'merged vs unmerged: max abs {err:.3g}, rel {rel:.3g}'


def test_merge_is_w_plus_a_b_alpha_over_r():
  cfg = lora.LoRAConfig(rank=4, alpha=8)
  params = base_params()
  adapters = random_adapters(cfg)
  merged = lora.merge(params, adapters, cfg)
  w = params['blocks']['self_attn']['v_proj']['kernel']
  a = np.asarray(adapters['blocks']['self_attn']['v_proj']['lora_a'], np.float64)
  b = np.asarray(adapters['blocks']['self_attn']['v_proj']['lora_b'], np.float64)
  expected = w + np.einsum('lir,lro->lio', a, b) * 2.0
  np.testing.assert_allclose(merged['blocks']['self_attn']['v_proj']['kernel'], expected, rtol=1e-6, atol=1e-6)
  # Layers without adapters are untouched.
  np.testing.assert_array_equal(merged['x_embedder']['kernel'], params['x_embedder']['kernel'])
  np.testing.assert_array_equal(merged['blocks']['adaln_modulation_mlp']['up']['kernel'],
                                params['blocks']['adaln_modulation_mlp']['up']['kernel'])


def test_bad_configs_and_adapters_are_refused():
  with pytest.raises(ValueError, match=r"\['mlp.layer3'\] match no linear layer"):
    lora.target_modules(base_params(), lora.LoRAConfig(targets=('q_proj', 'mlp.layer3')))
  with pytest.raises(ValueError, match='rank must be a positive integer'):
    lora.LoRAConfig(rank=0)
  with pytest.raises(ValueError, match='dropout'):
    lora.LoRAConfig(dropout=0.1)
  adapters = lora.init_adapters(jax.random.key(0), base_params(), lora.LoRAConfig(rank=4))
  with pytest.raises(ValueError, match=r'mis-shaped .*expected \(2, 64, 8\)'):
    lora.merge(base_params(), adapters, lora.LoRAConfig(rank=8))
  with pytest.raises(ValueError, match='missing'):
    lora.unmerged(base_params(), adapters, lora.LoRAConfig(rank=4, targets=('q_proj', 'mlp.layer1', 'x_embedder')))
  assert lora.LoRAConfig.from_dict(lora.LoRAConfig(rank=5).to_dict()) == lora.LoRAConfig(rank=5)
