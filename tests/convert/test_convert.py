"""`python -m cosmos_jax.convert`: golden round trips (official file -> orbax -> forward = golden -> export = the
original bytes), prefix and dtype choices, policy assets, and every bad-input error.

Golden arrays are channels-first (B, C, T, H, W) and are moved to our channels-last layout here, at the boundary.
"""

from __future__ import annotations

import json
import os
import pathlib

import chex
import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from cosmos_jax.convert import checkpoint
from cosmos_jax.convert import __main__ as convert_main
from cosmos_jax.convert import library
from cosmos_jax.convert import rules
from cosmos_jax.convert import torch_io
from cosmos_jax.convert import vae_rules
from cosmos_jax.nn import dit
from cosmos_jax.nn import vae
from tests import parity

DIT_BUFFERS = ('accum_', 'pos_embedder.')


def channels_last(x):
  return np.moveaxis(x, 1, -1)


def torch_tensor(array: np.ndarray) -> torch.Tensor:
  return torch_io.numpy_to_torch(np.asarray(array)).clone()


def write_pt(path: pathlib.Path, state: dict) -> pathlib.Path:
  torch.save({k: v if isinstance(v, torch.Tensor) else torch_tensor(v) for k, v in state.items()}, path)
  return path


def dit_golden(folder):
  """Official-layout golden state_dict: every entry, and the parameters only (buffers are not exported)."""
  state = load_file(str(folder / 'state_dict.safetensors'))
  return state, {k: v for k, v in state.items() if not k.startswith(DIT_BUFFERS)}


def released_layout(state: dict, prefix: str = 'net.', dtype=None) -> dict:
  """As a released .pt: prefixed, with TE `_extra_state` byte tensors next to the RMSNorms."""
  out = {}
  for key, value in state.items():
    tensor = torch_tensor(value)
    out[prefix + key] = tensor if dtype is None or key.startswith(DIT_BUFFERS) else tensor.to(dtype)
    if key.endswith(('q_norm.weight', 'k_norm.weight')) or key == 't_embedding_norm.weight':
      out[prefix + key[:-len('weight')] + '_extra_state'] = torch.zeros(0, dtype=torch.uint8)
  return out


def read_any(path: pathlib.Path) -> dict[str, np.ndarray]:
  """An exported file, read with the reference libraries (not our reader)."""
  if path.suffix == '.safetensors':
    return load_file(str(path))
  loaded = torch.load(path, weights_only=True)
  return {k: torch_io.torch_to_numpy(v) for k, v in loaded.items()}


def assert_same_bytes(actual: dict, expected: dict, prefix: str = ''):
  assert sorted(actual) == sorted(prefix + k for k in expected)
  for key, value in expected.items():
    got = actual[prefix + key]
    assert got.dtype == value.dtype and got.shape == value.shape, (key, got.dtype, got.shape, value.dtype, value.shape)
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(value).tobytes(), key


def dit_forward_matches_golden(folder, params, cfg):
  io = np.load(folder / 'io.npz')
  inputs = dict(x=channels_last(io['x_B_C_T_H_W']), timesteps=io['timesteps_B_T'], crossattn_emb=io['crossattn_emb'],
                condition_mask=channels_last(io['condition_video_input_mask_B_C_T_H_W']),
                padding_mask=io['padding_mask'][:, 0])
  with jax.default_matmul_precision('highest'):
    out = jax.jit(lambda p, a: dit.forward(p, cfg, **a))(params, inputs)
  parity.assert_close(out, channels_last(io['output_B_C_T_H_W']), name=f'{folder.name}: converted DiT output',
                      rel_l2=1e-5, max_abs=1e-4)


def leftovers(directory: pathlib.Path) -> list[str]:
  return sorted(p.name for p in directory.iterdir() if p.name.startswith('.'))


# ---------------------------------------------------------------------------------------------------------------
# Golden round trips.


@pytest.mark.parametrize('source_format', ['safetensors', 'released_pt'])
@pytest.mark.parametrize('folder', parity.golden_cases('dit_'))
def test_convert_dit_golden_round_trip(folder, source_format, tmp_path):
  state, params_only = dit_golden(folder)
  if source_format == 'safetensors':
    source = folder / 'state_dict.safetensors'
  else:
    source = write_pt(tmp_path / 'released.pt', released_layout(state))
  dest = tmp_path / 'converted'
  result = convert_main.run(['dit', str(source), str(dest), '--config', str(folder / 'config.json')])
  assert result['source']['prefix'] == ('' if source_format == 'safetensors' else 'net.')
  assert result['source']['param_dtype'] == 'float32'

  params, cfg, config = library.load_converted(dest)
  assert config['model'] == 'dit'
  assert cfg == dit.DiTConfig.from_official(parity.load_config(folder)['constructor_kwargs'])
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  dit_forward_matches_golden(folder, params, cfg)

  for suffix in ('.safetensors', '.pt'):
    out = tmp_path / f'exported{suffix}'
    convert_main.run(['export', '--checkpoint', str(dest), '--out', str(out)])
    assert_same_bytes(read_any(out), params_only, prefix='net.')
  convert_main.run(['export', '--checkpoint', str(dest), '--out', str(tmp_path / 'plain.safetensors'),
                    '--prefix', ''])
  assert_same_bytes(read_any(tmp_path / 'plain.safetensors'), params_only)


def vae_cases(folder) -> list[str]:
  with np.load(folder / 'io.npz') as io:
    return sorted({k.split('__')[0] for k in io.files if k.endswith('__z_norm')})


@pytest.mark.parametrize('folder', parity.golden_cases('vae_'))
def test_convert_vae_golden_round_trip(folder, tmp_path):
  original = load_file(str(folder / 'state_dict.safetensors'))
  assert {v.dtype for v in original.values()} == {np.dtype(np.float16)}  # see the golden config.json
  dest = tmp_path / 'vae'
  # float16 is not a dtype the model holds: keeping it is refused, the exact upcast is explicit.
  with pytest.raises(ValueError, match='stored as float16.*--dtype float32'):
    convert_main.run(['vae', str(folder / 'state_dict.safetensors'), str(dest), '--config', str(folder / 'config.json')])
  assert not dest.exists()
  convert_main.run(['vae', str(folder / 'state_dict.safetensors'), str(dest), '--config', str(folder / 'config.json'),
           '--dtype', 'float32'])

  params, cfg, _ = library.load_converted(dest)
  assert cfg == vae.VAEConfig.from_official(parity.load_config(folder)['constructor_args'])
  # The converted tree is exactly what the model's own loader builds (which tests/nn/test_vae.py checks on every
  # case), and the smallest case runs end to end from the converted checkpoint (each case costs a compile).
  chex.assert_trees_all_equal(params, vae_rules.load_official(cfg, original))
  io = np.load(folder / 'io.npz')
  case = min(vae_cases(folder), key=lambda c: io[f'{c}__video'].size)
  with jax.default_matmul_precision('highest'):
    z = vae.encode(params, cfg, channels_last(io[f'{case}__video']))
    parity.assert_close(z, channels_last(io[f'{case}__z_norm']), name=f'{folder.name}:{case} converted z_norm')
    recon = vae.decode(params, cfg, channels_last(io[f'{case}__z_norm']))
    parity.assert_close(recon, channels_last(io[f'{case}__recon']), name=f'{folder.name}:{case} converted recon')

  for suffix in ('.safetensors', '.pt'):
    out = tmp_path / f'vae{suffix}'
    convert_main.run(['export', '--checkpoint', str(dest), '--out', str(out), '--dtype', 'float16'])
    assert_same_bytes(read_any(out), original)  # no prefix: the tokenizer file has none
  convert_main.run(['export', '--checkpoint', str(dest), '--out', str(tmp_path / 'vae32.safetensors')])
  exported32 = read_any(tmp_path / 'vae32.safetensors')
  for key, value in original.items():
    np.testing.assert_array_equal(exported32[key], value.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Prefixes and dtypes.


@pytest.fixture(scope='module')
def tiny():
  folder = parity.golden_cases('dit_tiny')[0].values[0]
  state, params_only = dit_golden(folder)
  return folder, state, params_only


def convert_dit(folder, source, dest, *extra):
  return convert_main.run(['dit', str(source), str(dest), '--config', str(folder / 'config.json'), *extra])


def test_convert_bf16_checkpoint_keeps_bf16_and_exports_same_bytes(tiny, tmp_path):
  folder, state, params_only = tiny
  source = write_pt(tmp_path / 'bf16.pt', released_layout(state, dtype=torch.bfloat16))
  result = convert_dit(folder, source, tmp_path / 'out')
  assert result['source']['stored_dtypes'] == ['bfloat16'] and result['config']['param_dtype'] == 'bfloat16'
  params, _ = checkpoint.load_params(tmp_path / 'out')
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(ml_dtypes.bfloat16)}
  convert_main.run(['export', '--checkpoint', str(tmp_path / 'out'), '--out', str(tmp_path / 'back.pt')])
  expected = {k: v.astype(ml_dtypes.bfloat16) for k, v in params_only.items()}
  assert_same_bytes(read_any(tmp_path / 'back.pt'), expected, prefix='net.')

  # --dtype float32 upcasts exactly.
  convert_dit(folder, source, tmp_path / 'out32', '--dtype', 'float32')
  params32, config32 = checkpoint.load_params(tmp_path / 'out32')
  assert config32['config']['param_dtype'] == 'float32'
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(np.float32)), params32, params)


def test_convert_chooses_net_then_ema(tiny, tmp_path):
  folder, state, _ = tiny
  ema_state = {k: v * 2 for k, v in state.items()}
  both = {**released_layout(state), **released_layout(ema_state, prefix='net_ema.')}
  source = write_pt(tmp_path / 'both.pt', both)
  assert convert_dit(folder, source, tmp_path / 'a')['source']['prefix'] == 'net.'
  assert convert_dit(folder, source, tmp_path / 'b', '--ema')['source']['prefix'] == 'net_ema.'
  params_a, _ = checkpoint.load_params(tmp_path / 'a')
  params_b, _ = checkpoint.load_params(tmp_path / 'b')
  np.testing.assert_array_equal(params_b['x_embedder']['kernel'], 2 * params_a['x_embedder']['kernel'])

  only_ema = write_pt(tmp_path / 'ema.pt', released_layout(ema_state, prefix='net_ema.'))
  assert convert_dit(folder, only_ema, tmp_path / 'c')['source']['prefix'] == 'net_ema.'
  only_net = write_pt(tmp_path / 'net.pt', released_layout(state))
  with pytest.raises(ValueError, match='no .net_ema.. keys'):
    convert_dit(folder, only_net, tmp_path / 'd', '--ema')
  assert not (tmp_path / 'd').exists()


def test_convert_refuses_mixed_dtypes(tiny, tmp_path):
  folder, state, _ = tiny
  mixed = released_layout(state)
  mixed['net.t_embedding_norm.weight'] = mixed['net.t_embedding_norm.weight'].to(torch.bfloat16)
  source = write_pt(tmp_path / 'mixed.pt', mixed)
  with pytest.raises(ValueError, match=r"mixed dtypes \{'float32': 46, 'bfloat16': 1\}; pass --dtype"):
    convert_dit(folder, source, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()
  convert_dit(folder, source, tmp_path / 'out', '--dtype', 'float32')  # an explicit choice is accepted


# ---------------------------------------------------------------------------------------------------------------
# Policy assets.


def test_convert_policy_copies_statistics_and_text_store(tiny, tmp_path):
  from cosmos_jax.data import stats as stats_lib
  from cosmos_jax.data import text as text_lib
  folder, _, _ = tiny
  statistics = pathlib.Path(parity.golden_dir()) / 'aloha_episode_fixture' / 'dataset_statistics.json'
  store_dir = tmp_path / 'text'
  text_lib.stand_in_store(['fold the towel', 'put the cup away']).save(store_dir)
  dest = tmp_path / 'policy'
  result = convert_dit(folder, folder / 'state_dict.safetensors', dest, '--statistics', str(statistics),
                       '--text_store', str(store_dir), '--layout', 'aloha')
  assert result['assets'] == {'dataset_statistics.json': 'dataset_statistics.json', 'text_store': 'text_store'}
  assert (dest / 'assets' / 'dataset_statistics.json').read_bytes() == statistics.read_bytes()
  stats_lib.load_statistics(dest / 'assets' / 'dataset_statistics.json')
  store = text_lib.TextStore.load(dest / 'assets' / 'text_store')
  assert store.tasks == ('fold the towel', 'put the cup away')
  assert json.loads((dest / 'assets' / 'config.json').read_text())['assets'] == result['assets']
  assert result['layout'] == 'aloha'


def test_convert_policy_refuses_bad_assets_before_writing(tiny, tmp_path):
  folder, _, _ = tiny
  source = folder / 'state_dict.safetensors'
  bad_stats = tmp_path / 'stats.json'
  bad_stats.write_text('{"actions_min": [0]}')
  with pytest.raises(ValueError, match='missing statistics'):
    convert_dit(folder, source, tmp_path / 'a', '--statistics', str(bad_stats))
  pickle_store = tmp_path / 't5_embeddings.pkl'
  pickle_store.write_bytes(b'not read')
  with pytest.raises(ValueError, match='official pickle: import it once'):
    convert_dit(folder, source, tmp_path / 'b', '--text_store', str(pickle_store))
  with pytest.raises(FileNotFoundError, match='statistics file'):
    convert_dit(folder, source, tmp_path / 'c', '--statistics', str(tmp_path / 'absent.json'))
  assert sorted(p.name for p in tmp_path.iterdir()) == ['stats.json', 't5_embeddings.pkl']


# ---------------------------------------------------------------------------------------------------------------
# Bad files: clear errors, nothing at the destination.


def corrupt_files(tmp_path: pathlib.Path, tiny_state: dict) -> dict[str, tuple[pathlib.Path, str]]:
  good_pt = write_pt(tmp_path / 'good.pt', released_layout(tiny_state))
  good_st = tmp_path / 'good.safetensors'
  torch_io.save_safetensors(tiny_state, good_st)
  cases = {}
  data = good_pt.read_bytes()
  (tmp_path / 'truncated.pt').write_bytes(data[:len(data) // 2])
  cases['truncated_pt'] = (tmp_path / 'truncated.pt', 'not a readable PyTorch checkpoint .truncated or corrupt')
  (tmp_path / 'garbage.pt').write_bytes(b'this is not a checkpoint\n' * 40)
  cases['garbage_pt'] = (tmp_path / 'garbage.pt', 'not a readable PyTorch checkpoint .truncated or corrupt')
  (tmp_path / 'empty.pt').write_bytes(b'')
  cases['empty_pt'] = (tmp_path / 'empty.pt', 'not a readable PyTorch checkpoint')
  data = good_st.read_bytes()
  (tmp_path / 'truncated.safetensors').write_bytes(data[:len(data) // 2])
  cases['truncated_safetensors'] = (tmp_path / 'truncated.safetensors',
                                    'not a valid safetensors file .truncated or corrupt.*ends at byte')
  (tmp_path / 'garbage.safetensors').write_bytes(b'\xff' * 64)
  cases['garbage_safetensors'] = (tmp_path / 'garbage.safetensors', 'header length .* exceeds')
  return cases


@pytest.mark.parametrize('case', ['truncated_pt', 'garbage_pt', 'empty_pt', 'truncated_safetensors',
                                  'garbage_safetensors'])
def test_convert_bad_file_is_a_clear_error_and_writes_nothing(tiny, tmp_path, case):
  folder, state, _ = tiny
  source, message = corrupt_files(tmp_path, state)[case]
  dest = tmp_path / 'out'
  with pytest.raises(ValueError, match=message) as info:
    convert_dit(folder, source, dest)
  assert str(source) in str(info.value)
  assert not dest.exists() and leftovers(tmp_path) == []


class _Payload:
  """Unpickling this would run a shell command; weights_only must refuse it."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def test_convert_refuses_pickled_code(tiny, tmp_path):
  folder, state, _ = tiny
  marker = tmp_path / 'executed'
  evil = released_layout(state)
  evil['net.payload'] = _Payload(str(marker))
  source = tmp_path / 'evil.pt'
  torch.save(evil, source)
  with pytest.raises(ValueError, match=r'refused to load: the pickle holds objects other than tensors.*posix.system'):
    convert_dit(folder, source, tmp_path / 'out')
  assert not marker.exists() and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('extra, message', [
    ({'net.step': 5}, r"1 entries are not tensors: 'net.step': int"),
    ({'optimizer': {'lr': torch.ones(1)}}, r"'optimizer': dict \(a nested dict: pass the inner state_dict\)"),
])
def test_convert_refuses_non_tensor_entries(tiny, tmp_path, extra, message):
  folder, state, _ = tiny
  source = tmp_path / 'objects.pt'
  torch.save({**released_layout(state), **extra}, source)  # allowed by weights_only, refused by us
  with pytest.raises(ValueError, match=message):
    convert_dit(folder, source, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()


def test_convert_reports_every_bad_key_at_once(tiny, tmp_path):
  folder, state, _ = tiny
  bad = released_layout(state)
  del bad['net.blocks.1.mlp.layer1.weight']
  bad['net.blocks.0.self_attn.q_proj.weight'] = torch.zeros(3, 3)
  bad['net.final_layer.linear.weight'] = torch.zeros(64, 5)
  bad['net.blocks.0.extra_thing.weight'] = torch.zeros(3)
  source = write_pt(tmp_path / 'bad.pt', bad)
  with pytest.raises(rules.WeightLoadingError) as info:
    convert_dit(folder, source, tmp_path / 'out')
  err = info.value
  assert err.missing == ['blocks.1.mlp.layer1.weight']
  assert err.unexpected == ['blocks.0.extra_thing.weight']
  assert err.misshaped == ['blocks.0.self_attn.q_proj.weight: got (3, 3), expected (64, 64)',
                           'final_layer.linear.weight: got (64, 5), expected (64, 64)']
  assert str(source) in str(err) and '1 missing keys' in str(err) and '2 mis-shaped keys' in str(err)
  assert not (tmp_path / 'out').exists() and leftovers(tmp_path) == []


def test_convert_wrong_model_config_lists_the_shapes(tiny, tmp_path):
  """A checkpoint of another size (here: the tiny one against the 2B preset) fails validation, not allocation."""
  folder, _, _ = tiny
  with pytest.raises(rules.WeightLoadingError, match=r'x_embedder.proj.1.weight: got \(64, 72\), expected \(2048, 72\)'):
    convert_main.run(['dit', str(folder / 'state_dict.safetensors'), str(tmp_path / 'out'), '--preset', '2B'])
  with pytest.raises(ValueError, match='either --preset .* or --config'):
    convert_dit(folder, folder / 'state_dict.safetensors', tmp_path / 'out', '--preset', 'tiny')
  assert not (tmp_path / 'out').exists()


def test_convert_destination_and_source_errors(tiny, tmp_path):
  folder, _, _ = tiny
  source = folder / 'state_dict.safetensors'
  with pytest.raises(FileNotFoundError, match='checkpoint file not found'):
    convert_dit(folder, tmp_path / 'absent.pt', tmp_path / 'out')
  (tmp_path / 'weights.bin').write_bytes(b'x')
  with pytest.raises(ValueError, match="unknown checkpoint suffix '.bin'"):
    convert_dit(folder, tmp_path / 'weights.bin', tmp_path / 'out')
  convert_dit(folder, source, tmp_path / 'out')
  with pytest.raises(FileExistsError, match='already exists'):
    convert_dit(folder, source, tmp_path / 'out')
  convert_dit(folder, source, tmp_path / 'out', '--overwrite', '--dtype', 'bfloat16')
  _, config = checkpoint.load_params(tmp_path / 'out')
  assert config['config']['param_dtype'] == 'bfloat16'
  assert leftovers(tmp_path) == []


def test_export_refuses_what_is_not_a_converted_model(tmp_path):
  checkpoint.save_params(tmp_path / 'other', {'w': np.zeros(3, np.float32)}, {'format': 'something else'})
  with pytest.raises(ValueError, match='not a converted-model config'):
    convert_main.run(['export', '--checkpoint', str(tmp_path / 'other'), '--out', str(tmp_path / 'x.pt')])
  with pytest.raises(FileNotFoundError, match='does not exist'):
    convert_main.run(['export', '--checkpoint', str(tmp_path / 'nothing'), '--out', str(tmp_path / 'x.pt')])
  assert not (tmp_path / 'x.pt').exists()


def test_export_checks_params_against_the_config(tiny, tmp_path):
  folder, _, _ = tiny
  convert_dit(folder, folder / 'state_dict.safetensors', tmp_path / 'out')
  params, config = checkpoint.load_params(tmp_path / 'out')
  params['x_embedder']['kernel'] = params['x_embedder']['kernel'][:5]
  checkpoint.save_params(tmp_path / 'edited', params, config)
  with pytest.raises(rules.WeightLoadingError, match=r'x_embedder/kernel: got \(5, 64\), expected \(72, 64\)'):
    convert_main.run(['export', '--checkpoint', str(tmp_path / 'edited'), '--out',
                      str(tmp_path / 'x.safetensors')])
  assert not (tmp_path / 'x.safetensors').exists()


def test_main_prints_the_error_and_returns_2(tmp_path, capsys):
  assert convert_main.main(['dit', str(tmp_path / 'absent.pt'), str(tmp_path / 'out')]) == 2
  assert 'error: checkpoint file not found' in capsys.readouterr().err


def test_module_entry_point_exit_code(tmp_path):
  import subprocess
  import sys
  proc = subprocess.run([sys.executable, '-m', 'cosmos_jax.convert', 'vae', str(tmp_path / 'tokenizer.pth'),
                         str(tmp_path / 'out')], capture_output=True, text=True, check=False,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 2 and 'error: checkpoint file not found' in proc.stderr, proc.stderr
