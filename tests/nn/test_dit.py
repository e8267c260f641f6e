"""The DiT against the official `MinimalV1LVGDiT`: golden parity, the 2B parameter manifest, bf16, and errors."""

import dataclasses
import functools
import json
import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from cosmos_jax.convert import dit_rules
from cosmos_jax.convert import rules
from cosmos_jax.nn import dit
from tests import parity

MANIFEST = pathlib.Path(__file__).resolve().parents[2] / 'third_party' / 'cosmos_predict2_2b_dit_manifest.json'

# Our sown activation -> the official hook it must equal (our layout: channels-last; the RoPE table without the
# singleton axes; blocks stacked along axis 0).
ACTIVATIONS = {
    'act_x_embedder': 'act_x_embedder_B_T_H_W_D',
    'act_rope_angles': 'act_rope_emb_L_1_1_D',
    'act_t_emb': 'act_t_embedder_emb_B_T_D',
    'act_adaln_lora': 'act_t_embedder_adaln_lora_B_T_3D',
    'act_t_emb_norm': 'act_t_embedding_norm_B_T_D',
    'act_final_layer': 'act_final_layer_B_T_H_W_O',
}


def to_channels_last(x):
  return np.moveaxis(x, 1, -1)


@functools.lru_cache(maxsize=None)
def load_case(folder: pathlib.Path):
  cfg = dit.DiTConfig.from_official(parity.load_config(folder)['constructor_kwargs'])
  params = dit_rules.load_official(cfg, load_file(str(folder / 'state_dict.safetensors')), where=str(folder))
  io = dict(np.load(folder / 'io.npz'))
  inputs = dict(
      x=to_channels_last(io['x_B_C_T_H_W']),
      timesteps=io['timesteps_B_T'],
      crossattn_emb=io['crossattn_emb'],
      condition_mask=to_channels_last(io['condition_video_input_mask_B_C_T_H_W']),
      padding_mask=io['padding_mask'][:, 0],
  )
  return cfg, params, inputs, io


def run(cfg, params, inputs, timesteps=None):
  args = dict(inputs)
  if timesteps is not None:
    args['timesteps'] = timesteps
  fn = jax.jit(lambda p, a: dit.forward_with_intermediates(p, cfg, **a))
  with jax.default_matmul_precision('highest'):
    return fn(params, args)


@pytest.mark.parametrize('folder', parity.golden_cases('dit_'))
def test_dit_forward_matches_official(folder):
  cfg, params, inputs, io = load_case(folder)
  out, acts = run(cfg, params, inputs)
  # Intermediates first, so a failure says where the divergence starts.
  for ours, theirs in ACTIVATIONS.items():
    expected = io[theirs]
    if theirs == 'act_rope_emb_L_1_1_D':
      expected = expected[:, 0, 0]
    parity.assert_close(acts[ours], expected, name=f'{folder.name}:{theirs}', rel_l2=1e-5, max_abs=1e-4)
  for i in range(cfg.num_blocks):
    parity.assert_close(acts['act_block_out'][i], io[f'act_block{i}_out_B_T_H_W_D'],
                        name=f'{folder.name}:act_block{i}_out', rel_l2=1e-5, max_abs=1e-4)
  parity.assert_close(out, to_channels_last(io['output_B_C_T_H_W']), name=f'{folder.name}:output_B_C_T_H_W',
                      rel_l2=1e-5, max_abs=1e-4)


@pytest.mark.parametrize('folder', parity.golden_cases('dit_'))
def test_trimmed_text_context_equals_zero_padded_context(folder):
  """text_context_tokens: the golden context given as is, and zero-padded by 40 tokens to a DiT without the
  setting, give one output; so does the golden config with text_context_tokens = its own context length."""
  cfg, params, inputs, io = load_case(folder)
  n = inputs['crossattn_emb'].shape[1]
  padded = dict(inputs, crossattn_emb=np.concatenate(
      [inputs['crossattn_emb'], np.zeros((inputs['crossattn_emb'].shape[0], 40, inputs['crossattn_emb'].shape[2]),
                                         inputs['crossattn_emb'].dtype)], axis=1))
  ours = run(dataclasses.replace(cfg, text_context_tokens=n + 40), params, inputs)[0]
  parity.assert_close(ours, run(cfg, params, padded)[0], name=f'{folder.name}: trimmed vs zero-padded',
                      rel_l2=1e-6, max_abs=1e-5)
  same = run(dataclasses.replace(cfg, text_context_tokens=n), params, inputs)[0]
  parity.assert_close(same, to_channels_last(io['output_B_C_T_H_W']), name=f'{folder.name}:output_B_C_T_H_W',
                      rel_l2=1e-5, max_abs=1e-4)
  with pytest.raises(ValueError, match='longer than text_context_tokens'):
    run(dataclasses.replace(cfg, text_context_tokens=n - 1), params, inputs)


@pytest.mark.parametrize('folder', parity.golden_cases('dit_'))
def test_dit_timesteps_per_sample_broadcast_over_frames(folder):
  """Timesteps [B] mean one t for all frames: equal to the same value repeated as [B,T]."""
  cfg, params, inputs, _ = load_case(folder)
  batch, frames = inputs['x'].shape[:2]  # from the case: golden cases differ in batch size and frame count
  t_b = np.linspace(0.25, 0.8, batch, dtype=np.float32)
  t_bt = np.repeat(t_b[:, None], frames, axis=1)
  out_b, _ = run(cfg, params, inputs, timesteps=t_b)
  out_bt, _ = run(cfg, params, inputs, timesteps=t_bt)
  parity.assert_close(out_b, out_bt, name=f'{folder.name}:timesteps[B] vs [B,T]', rel_l2=1e-6, max_abs=1e-5)
  out_orig, _ = run(cfg, params, inputs)
  assert not np.allclose(out_b, out_orig), 'timesteps must change the output'


@pytest.mark.parametrize('folder', parity.golden_cases('dit_'))
def test_dit_bf16_close_to_fp32(folder):
  cfg, params, inputs, io = load_case(folder)
  cfg16 = dit.DiTConfig.from_official(parity.load_config(folder)['constructor_kwargs'], dtype='bfloat16',
                                      param_dtype='bfloat16')
  params16 = jax.tree.map(lambda p: jnp.asarray(p, jnp.bfloat16), params)
  out16 = jax.jit(lambda p, a: dit.forward(p, cfg16, **a))(params16, inputs)
  assert out16.dtype == jnp.float32
  parity.assert_close(out16, to_channels_last(io['output_B_C_T_H_W']), name=f'{folder.name}:bf16 vs official fp32',
                      rel_l2=2e-2)


def test_2b_preset_matches_official_manifest():
  manifest = json.loads(MANIFEST.read_text())
  expected = {e['name']: tuple(e['shape']) for e in manifest['entries'] if e['kind'] == 'parameter'}
  cfg = dit.DiTConfig.preset('2B')
  abstract = dit.abstract_params(cfg)
  ours = rules.official_shapes(dit_rules.RULES, abstract)
  assert sorted(set(expected) - set(ours)) == [], 'official parameters our 2B preset lacks'
  assert sorted(set(ours) - set(expected)) == [], 'parameters our 2B preset has that the official one does not'
  wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
  assert not wrong, f'mis-shaped (ours, official): {wrong}'
  count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract))
  assert count == manifest['num_parameters'] == 1_956_413_440
  assert (cfg.model_channels, cfg.num_blocks, cfg.num_heads, cfg.adaln_lora_dim, cfg.patch_in_channels,
          cfg.crossattn_emb_channels) == (2048, 28, 16, 256, 18, 1024)
  assert dit.rope_split(cfg.head_dim) == (44, 42, 42)


def test_2b_forward_shape_without_allocation():
  cfg = dit.DiTConfig.preset('2B', dtype='bfloat16')
  b, t, h, w = 1, 11, 28, 28
  out = jax.eval_shape(
      lambda p: dit.forward(p, cfg, jnp.zeros((b, t, h, w, 16)), jnp.zeros((b, t)), jnp.zeros((b, 512, 1024)),
                            jnp.zeros((b, t, h, w, 1))), dit.abstract_params(cfg))
  assert out.shape == (b, t, h, w, 16) and out.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------------------------
# Weights: prefixes, ignored entries, and one error listing every problem.


@pytest.fixture(scope='module')
def tiny():
  folder = parity.golden_cases('dit_tiny')[0].values[0]
  return folder, load_file(str(folder / 'state_dict.safetensors'))


def test_load_accepts_net_and_ema_prefixes_and_drops_extra_state(tiny):
  folder, sd = tiny
  cfg, params, _, _ = load_case(folder)
  prefixed = {f'net.{k}': v for k, v in sd.items()}
  prefixed['net.blocks.0.self_attn.q_norm._extra_state'] = np.zeros(8, np.uint8)
  ema = {f'net_ema.{k}': v * 2 for k, v in sd.items()}
  both = {**prefixed, **ema}
  chex.assert_trees_all_equal(dit_rules.load_official(cfg, prefixed), params)
  chex.assert_trees_all_equal(dit_rules.load_official(cfg, both), params)  # `net.` unless EMA is asked for
  from_ema = dit_rules.load_official(cfg, both, use_ema=True)
  np.testing.assert_array_equal(from_ema['x_embedder']['kernel'], 2 * params['x_embedder']['kernel'])
  chex.assert_trees_all_equal(dit_rules.load_official(cfg, ema), from_ema)  # EMA is used when it is the only copy
  with pytest.raises(ValueError, match='net_ema'):
    dit_rules.load_official(cfg, prefixed, use_ema=True)


def test_load_reports_every_bad_key_at_once(tiny):
  folder, sd = tiny
  cfg, _, _, _ = load_case(folder)
  bad = dict(sd)
  del bad['blocks.1.mlp.layer1.weight']
  del bad['t_embedding_norm.weight']
  bad['blocks.0.self_attn.q_proj.weight'] = np.zeros((3, 3), np.float32)
  bad['blocks.0.extra_thing.weight'] = np.zeros(3, np.float32)
  with pytest.raises(rules.WeightLoadingError) as info:
    dit_rules.load_official(cfg, bad, where='bad.safetensors')
  err = info.value
  assert err.missing == ['t_embedding_norm.weight', 'blocks.1.mlp.layer1.weight']
  assert err.unexpected == ['blocks.0.extra_thing.weight']
  assert err.misshaped == ['blocks.0.self_attn.q_proj.weight: got (3, 3), expected (64, 64)']
  message = str(err)
  for text in ('bad.safetensors', '2 missing keys', '1 unexpected keys', '1 mis-shaped keys'):
    assert text in message


def test_export_round_trips_official_tensors(tiny):
  folder, sd = tiny
  cfg, params, _, _ = load_case(folder)
  exported = dit_rules.export_official(params, prefix='')
  params_only = {k: v for k, v in sd.items() if not k.startswith(('accum_', 'pos_embedder.'))}
  assert sorted(exported) == sorted(params_only)
  for k, v in params_only.items():
    assert exported[k].dtype == v.dtype and exported[k].tobytes() == v.tobytes(), k


# ---------------------------------------------------------------------------------------------------------------
# Config and input validation.


def test_from_official_refuses_unknown_and_unsupported_kwargs():
  with pytest.raises(ValueError, match='unknown.*bogus'):
    dit.DiTConfig.from_official({'bogus': 1})
  with pytest.raises(ValueError, match='rope_enable_fps_modulation=True'):
    dit.DiTConfig.from_official({'rope_enable_fps_modulation': True})
  with pytest.raises(ValueError, match='unknown DiT preset'):
    dit.DiTConfig.preset('7B')


@pytest.mark.parametrize('change, message', [
    (dict(x=(1, 3, 7, 8, 16)), 'not divisible by the spatial patch 2'),
    (dict(x=(1, 3, 8, 8, 17)), 'expects in_channels=16'),
    (dict(x=(1, 3, 242, 8, 16)), 'exceeds the RoPE limit 120×120'),
    (dict(x=(1, 129, 4, 4, 16)), 'exceeds the limit of 128'),
    (dict(timesteps=(1, 2)), r'timesteps must be \[B\]'),
    (dict(crossattn_emb=(1, 5, 31)), r'crossattn_emb must be \[B,N,32\]'),
    (dict(condition_mask=(1, 3, 8, 8)), r'condition_mask must be \[B,T,H,W,1\]'),
])
def test_bad_input_shapes_raise(change, message):
  cfg = dit.DiTConfig.preset('tiny')
  shapes = dict(x=(1, 3, 8, 8, 16), timesteps=(1, 3), crossattn_emb=(1, 5, 32), condition_mask=(1, 3, 8, 8, 1))
  shapes.update(change)
  if 'x' in change:  # keep the other inputs consistent with x so only the intended check fires
    b, t, h, w, _ = change['x']
    shapes.update(timesteps=(b, t), condition_mask=(b, t, h, w, 1))
  args = {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in shapes.items()}
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda p, a: dit.forward(p, cfg, **a), dit.abstract_params(cfg), args)


def test_padding_mask_uses_legacy_nearest():
  mask = np.arange(2 * 64 * 80, dtype=np.float32).reshape(2, 64, 80)
  np.testing.assert_array_equal(dit.resize_padding_mask(mask, 8, 10), mask[:, ::8, ::8])
  np.testing.assert_array_equal(dit.legacy_nearest_indices(5, 3), [0, 1, 3])  # floor(i·5/3), not half-pixel [1,2,4]
