"""`python -m cosmos_jax.convert t5`: Hugging Face folders in every weight layout (safetensors, pytorch_model.bin,
sharded, a full encoder-decoder checkpoint, only the tied embedding key), errors, and export back to HF names."""

import json

import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from cosmos_jax.convert import checkpoint
from cosmos_jax.convert import __main__ as convert_main
from cosmos_jax.convert import library
from cosmos_jax.convert import rules as rules_lib
from cosmos_jax.convert import t5_rules
from tests.convert import t5_folders


@pytest.fixture(scope='module')
def spiece():
  return t5_folders.train_spiece()


@pytest.fixture(scope='module')
def reference(tmp_path_factory, spiece):
  """A save_pretrained folder (safetensors), its converted params, and the model's state_dict as numpy."""
  root = tmp_path_factory.mktemp('reference')
  model = t5_folders.write_folder(root / 'hf', spiece, 'gated-gelu')
  library.convert_t5(root / 'hf', root / 'out')
  params, _ = checkpoint.load_params(root / 'out')
  return root, params, {k: v.numpy() for k, v in model.state_dict().items()}


def _assert_same_params(a, b):
  flat_a = dict(traverse_util.flatten_dict(a, sep='/'))
  flat_b = dict(traverse_util.flatten_dict(b, sep='/'))
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def _folder_with(path, reference_root, tensors=None, files=None):
  path.mkdir()
  for name in ('config.json', 'spiece.model'):
    (path / name).write_bytes((reference_root / 'hf' / name).read_bytes())
  if tensors is not None:
    save_file(tensors, str(path / 'model.safetensors'))
  for name, content in (files or {}).items():
    (path / name).write_bytes(content) if isinstance(content, bytes) else save_file(content, str(path / name))
  return path


def test_converted_checkpoint_records_the_model_and_tokenizer(reference):
  root, params, state_dict = reference
  params_loaded, cfg, config = library.load_converted(root / 'out')
  assert config['model'] == 't5' and cfg.is_gated and cfg.d_ff == 48
  assert config['assets'] == {'spiece.model': 'spiece.model'}
  assert (root / 'out' / 'assets' / 'spiece.model').read_bytes() == (root / 'hf' / 'spiece.model').read_bytes()
  np.testing.assert_array_equal(params_loaded['token_embedding'], state_dict['shared.weight'])
  np.testing.assert_array_equal(params['blocks']['mlp']['wi_1']['kernel'][1],
                                state_dict['encoder.block.1.layer.1.DenseReluDense.wi_1.weight'].T)


def test_pytorch_model_bin_and_sharded_safetensors_convert_identically(tmp_path, reference):
  root, params, state_dict = reference
  bin_dir = _folder_with(tmp_path / 'bin', root)
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, bin_dir / 'pytorch_model.bin')
  library.convert_t5(bin_dir, tmp_path / 'from_bin')
  _assert_same_params(checkpoint.load_params(tmp_path / 'from_bin')[0], params)

  names = sorted(state_dict)
  shards = {'model-00001-of-00002.safetensors': {k: state_dict[k] for k in names[::2]},
            'model-00002-of-00002.safetensors': {k: state_dict[k] for k in names[1::2]}}
  index = {'metadata': {}, 'weight_map': {k: f for f, part in shards.items() for k in part}}
  sharded = _folder_with(tmp_path / 'sharded', root,
                         files={**shards, 'model.safetensors.index.json': json.dumps(index).encode()})
  assert convert_main.main(['t5', '--hf_dir', str(sharded), '--out', str(tmp_path / 'from_shards'), '--dtype', 'bfloat16']) == 0
  from_shards, config = checkpoint.load_params(tmp_path / 'from_shards')
  assert config['config']['param_dtype'] == 'bfloat16'
  np.testing.assert_array_equal(from_shards['final_norm']['scale'].astype(np.float32),
                                params['final_norm']['scale'].astype(np.float32).astype('bfloat16').astype(np.float32))


def test_full_encoder_decoder_checkpoint_drops_the_decoder(tmp_path, spiece):
  torch.manual_seed(3)
  model = transformers.T5ForConditionalGeneration(t5_folders.hf_config('relu')).eval()
  model.save_pretrained(tmp_path / 'hf')
  (tmp_path / 'hf' / 'spiece.model').write_bytes(spiece)
  config = library.convert_t5(tmp_path / 'hf', tmp_path / 'out')
  assert any(k.startswith('decoder.') for k in config['source']['dropped_keys'])
  params, _ = checkpoint.load_params(tmp_path / 'out')
  np.testing.assert_array_equal(params['blocks']['attention']['out']['kernel'][0],
                                model.encoder.block[0].layer[0].SelfAttention.o.weight.detach().numpy().T)


def test_only_the_tied_embedding_key_is_enough(tmp_path, reference):
  root, params, state_dict = reference
  tensors = {('encoder.embed_tokens.weight' if k == 'shared.weight' else k): v for k, v in state_dict.items()}
  folder = _folder_with(tmp_path / 'tied', root, tensors)
  library.convert_t5(folder, tmp_path / 'out')
  _assert_same_params(checkpoint.load_params(tmp_path / 'out')[0], params)


def test_errors_name_the_problem(tmp_path, reference, capsys):
  root, _, state_dict = reference
  with pytest.raises(FileNotFoundError, match='config.json is missing'):
    library.convert_t5(tmp_path, tmp_path / 'out')
  no_weights = _folder_with(tmp_path / 'no_weights', root)
  with pytest.raises(FileNotFoundError, match='holds no T5 weights'):
    library.convert_t5(no_weights, tmp_path / 'out')
  partial = _folder_with(tmp_path / 'partial', root,
                         {k: v for k, v in state_dict.items() if 'block.1.layer.0.SelfAttention.k' not in k})
  with pytest.raises(rules_lib.WeightLoadingError, match=r'encoder\.block\.1\.layer\.0\.SelfAttention\.k\.weight'):
    library.convert_t5(partial, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()
  no_spiece = _folder_with(tmp_path / 'no_spiece', root, state_dict)
  (no_spiece / 'spiece.model').unlink()
  assert convert_main.main(['t5', '--hf_dir', str(no_spiece), '--out', str(tmp_path / 'out')]) == 2
  assert '--spiece' in capsys.readouterr().err
  library.convert_t5(no_spiece, tmp_path / 'out', spiece=root / 'hf' / 'spiece.model')
  bad_config = _folder_with(tmp_path / 'bad_config', root, state_dict)
  (bad_config / 'config.json').write_text('{"model_type": "t5", "feed_forward_proj": "gated-nope"}')
  with pytest.raises(ValueError, match='feed_forward_proj'):
    library.convert_t5(bad_config, tmp_path / 'out2')


def test_export_gives_back_the_transformers_state_dict(tmp_path, reference):
  root, _, state_dict = reference
  assert convert_main.main(['export', '--checkpoint', str(root / 'out'), '--out',
                            str(tmp_path / 'encoder.safetensors')]) == 0
  exported = load_file(str(tmp_path / 'encoder.safetensors'))
  expected = {k: v for k, v in state_dict.items() if k != t5_rules.TIED_EMBEDDING_KEY}
  assert exported.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
