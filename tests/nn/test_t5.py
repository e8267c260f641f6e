"""The Flax T5 encoder against transformers' T5EncoderModel (torch, CPU, float32), its bf16 mode, the 11B shapes
against the third_party manifest, and the FSDP partition of the 11B encoder."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from transformers.models.t5 import modeling_t5

from cosmos_jax.convert import rules as rules_lib
from cosmos_jax.convert import t5_rules
from cosmos_jax.nn import t5
from cosmos_jax.train import sharding
from tests.convert import t5_folders

MANIFEST = pathlib.Path(__file__).resolve().parents[2] / 'third_party' / 't5_11b_encoder_manifest.json'


def _relative_l2(got, want):
  return float(np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want))


@pytest.mark.parametrize('num_buckets,max_distance', [(32, 128), (8, 20), (16, 64)])
def test_relative_position_buckets_match_transformers(num_buckets, max_distance):
  relative = torch.arange(512)[None, :] - torch.arange(512)[:, None]
  want = modeling_t5.T5Attention._relative_position_bucket(relative, True, num_buckets, max_distance).numpy()
  got = t5.relative_position_buckets(512, 512, num_buckets=num_buckets, max_distance=max_distance)
  np.testing.assert_array_equal(got, want)


def _random_model(feed_forward_proj):
  torch.manual_seed(1)
  model = transformers.T5EncoderModel(t5_folders.hf_config(feed_forward_proj)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if 'layer_norm' in name:
        param.uniform_(0.5, 1.5)
  cfg = t5.T5Config.from_hf(model.config.to_dict())
  state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
  params = rules_lib.load_state_dict(t5_rules.t5_rules(cfg), state_dict, t5.abstract_params(cfg),
                                     ignore=t5_rules.T5_IGNORED_KEYS)
  return model, cfg, params


def _inputs(vocab_size):
  rng = np.random.default_rng(0)
  ids = rng.integers(3, vocab_size, (3, 64))
  mask = np.ones_like(ids)
  mask[1, 40:] = 0
  mask[2, 7:] = 0
  return np.where(mask == 1, ids, 0), mask


@pytest.mark.parametrize('feed_forward_proj', ['relu', 'gated-gelu'])
def test_forward_matches_transformers(feed_forward_proj):
  model, cfg, params = _random_model(feed_forward_proj)
  assert cfg.is_gated == (feed_forward_proj == 'gated-gelu')
  ids, mask = _inputs(cfg.vocab_size)
  with torch.no_grad():
    want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  with jax.default_matmul_precision('highest'):
    hidden = np.asarray(t5.forward(params, cfg, jnp.asarray(ids), jnp.asarray(mask)))
    encoded = np.asarray(t5.encode(params, cfg, jnp.asarray(ids), jnp.asarray(mask)))
  valid = mask == 1
  error = _relative_l2(hidden[valid], want[valid])
  assert error <= 1e-5, f'relative L2 {error:.3e}, max abs {np.abs(hidden[valid] - want[valid]).max():.3e}'
  np.testing.assert_array_equal(encoded[valid], hidden[valid])
  assert np.all(encoded[~valid] == 0)


@pytest.mark.parametrize('feed_forward_proj', ['relu', 'gated-gelu'])
def test_bf16_within_2e_2_of_float32(feed_forward_proj):
  _, cfg, params = _random_model(feed_forward_proj)
  ids, mask = _inputs(cfg.vocab_size)
  with jax.default_matmul_precision('highest'):
    want = np.asarray(t5.encode(params, cfg, ids, mask))
  cfg16 = t5.T5Config(**{**cfg.to_dict(), 'dtype': 'bfloat16', 'param_dtype': 'bfloat16'})
  params16 = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
  got = t5.encode(params16, cfg16, ids, mask)
  assert got.dtype == jnp.bfloat16
  error = _relative_l2(np.asarray(got, np.float32), want)
  assert error <= 2e-2, f'bf16 vs float32 relative L2 {error:.3e}'


def test_11b_eval_shape_matches_the_manifest():
  manifest = json.loads(MANIFEST.read_text(encoding='utf-8'))
  cfg = t5.T5Config.from_hf(manifest['hf_config'])
  assert cfg == t5.PRESETS['t5-11b']
  abstract = t5.abstract_params(cfg)  # no allocation
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract))
  assert count == manifest['num_params'] == 4_864_791_552
  ours = rules_lib.official_shapes(t5_rules.t5_rules(cfg), abstract)
  theirs = {e['name']: tuple(e['shape']) for e in manifest['tensors'] if e['name'] != t5_rules.TIED_EMBEDDING_KEY}
  assert ours == theirs
  t5_rules.check_against_manifest(cfg, manifest)  # the converter's guard agrees
  assert t5.forward_flops(cfg, 1, 512) > 2 * 512 * (count - cfg.vocab_size * cfg.d_model)


def test_manifest_guard_catches_a_wrong_table():
  manifest = json.loads(MANIFEST.read_text(encoding='utf-8'))
  manifest['tensors'] = [e for e in manifest['tensors'] if e['name'] != 'encoder.final_layer_norm.weight']
  with pytest.raises(ValueError, match='final_layer_norm'):
    t5_rules.check_against_manifest(t5.PRESETS['t5-11b'], manifest)
  t5_rules.check_against_manifest(t5.PRESETS['tiny'], manifest)  # other architectures are not checked


def test_11b_partitions_over_an_fsdp_mesh():
  """The train/serve sharding helper applies T5_PARAM_RULES: every big tensor is split over `fsdp`, block tensors
  never along the scanned layer axis."""
  mesh = jax.sharding.AbstractMesh((2, 8), sharding.MESH_AXES)
  specs = sharding.param_specs(t5.abstract_params(t5.PRESETS['t5-11b']), mesh, t5.T5_PARAM_RULES)
  flat = {'/'.join(str(k.key) for k in path): spec
          for path, spec in jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, jax.P))}
  assert flat['blocks/mlp/wi/kernel'] == jax.P(None, None, 'fsdp')
  assert flat['blocks/mlp/wo/kernel'] == jax.P(None, 'fsdp', None)
  assert flat['blocks/attention/query/kernel'] == jax.P(None, None, 'fsdp')
  assert flat['token_embedding'] == jax.P('fsdp', None)
  assert all(spec == jax.P() or spec[0] is None for path, spec in flat.items() if path.startswith('blocks/'))


def test_config_errors():
  with pytest.raises(ValueError, match='feed_forward_proj'):
    t5.T5Config(feed_forward_proj='gated-swish-x')
  with pytest.raises(ValueError, match='inconsistent'):
    t5.T5Config.from_hf({'feed_forward_proj': 'relu', 'is_gated_act': True})
  with pytest.raises(ValueError, match='model_type'):
    t5.T5Config.from_hf({'model_type': 'bert'})
  with pytest.raises(ValueError, match='input_ids must be'):
    jax.eval_shape(lambda p: t5.forward(p, t5.PRESETS['tiny'], jnp.zeros((4,), jnp.int32), jnp.ones((4,), jnp.int32)),
                   t5.abstract_params(t5.PRESETS['tiny']))
