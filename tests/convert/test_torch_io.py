"""Lazy .pt / .safetensors reading and writing, checked against the reference libraries (torch, safetensors)."""

from __future__ import annotations

import pathlib
import struct

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from cosmos_jax.convert import torch_io
from tests import parity


def sample_arrays() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
      'bf16': rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16),
      'f16': rng.standard_normal((4,)).astype(np.float16),
      'f32': rng.standard_normal((2, 3, 4)).astype(np.float32),
      'i64_scalar': np.asarray(7, np.int64),
      'u8_empty': np.zeros((0,), np.uint8),
      'transposed': rng.standard_normal((6, 2)).astype(np.float32).T,
  }


def assert_equal_exactly(actual: dict, expected: dict):
  assert sorted(actual) == sorted(expected)
  for key, value in expected.items():
    assert actual[key].dtype == value.dtype and actual[key].shape == value.shape, key
    assert np.ascontiguousarray(actual[key]).tobytes() == np.ascontiguousarray(value).tobytes(), key


def test_safetensors_reader_matches_the_library_on_golden_files():
  for param in parity.golden_cases('dit_') + parity.golden_cases('vae_'):
    path = param.values[0] / 'state_dict.safetensors'
    with torch_io.open_state_dict(path) as lazy:
      reference = load_file(str(path))
      assert {k: lazy.info(k).shape for k in lazy} == {k: v.shape for k, v in reference.items()}
      assert_equal_exactly(dict(lazy.items()), reference)


def test_safetensors_writer_is_readable_by_the_library(tmp_path):
  arrays = sample_arrays()
  torch_io.save_safetensors(arrays, tmp_path / 'ours.safetensors', metadata={'format': 'pt'})
  assert_equal_exactly(load_file(str(tmp_path / 'ours.safetensors')), arrays)
  save_file({k: v.copy(order='C') for k, v in arrays.items()}, str(tmp_path / 'lib.safetensors'))
  with torch_io.open_state_dict(tmp_path / 'lib.safetensors') as lazy:
    assert_equal_exactly(dict(lazy.items()), arrays)


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_torch_reader_round_trip(tmp_path, legacy):
  arrays = sample_arrays()
  path = tmp_path / 'weights.pt'
  tensors = {k: torch_io.numpy_to_torch(v) for k, v in arrays.items()}
  torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)
  with torch_io.open_state_dict(path) as lazy:
    assert lazy.memory_mapped == (not legacy)
    assert lazy.info('bf16').dtype == np.dtype(ml_dtypes.bfloat16) and lazy.info('f32').shape == (2, 3, 4)
    assert_equal_exactly(dict(lazy.items()), arrays)
    # Reading again after the pages were released gives the same bytes (they are re-read from the file).
    assert_equal_exactly(dict(lazy.items()), arrays)
  torch_io.save_state_dict(arrays, tmp_path / 'ours.pt')
  loaded = torch.load(tmp_path / 'ours.pt', weights_only=True)
  assert_equal_exactly({k: torch_io.torch_to_numpy(v) for k, v in loaded.items()}, arrays)


def test_torch_reader_views_sharing_one_storage(tmp_path):
  base = torch.arange(24, dtype=torch.float32)
  torch.save({'a': base[:12].view(3, 4), 'b': base[12:].view(4, 3).t(), 'c': base}, tmp_path / 'views.pt')
  with torch_io.open_state_dict(tmp_path / 'views.pt') as lazy:
    np.testing.assert_array_equal(lazy['a'], np.arange(12).reshape(3, 4))
    np.testing.assert_array_equal(lazy['b'], np.arange(12, 24).reshape(4, 3).T)
    np.testing.assert_array_equal(lazy['c'], np.arange(24))
    np.testing.assert_array_equal(lazy['a'], np.arange(12).reshape(3, 4))


def test_torch_reader_tolerates_non_tensor_te_extra_state(tmp_path):
  torch.save({'w': torch.ones(2), 'norm._extra_state': None, '_extra_state': b'fp8'}, tmp_path / 'te.pt')
  with torch_io.open_state_dict(tmp_path / 'te.pt') as lazy:
    assert list(lazy) == ['w']


def test_torch_reader_refuses_a_non_dict(tmp_path):
  torch.save([torch.ones(2)], tmp_path / 'list.pt')
  with pytest.raises(ValueError, match='expected a flat dict of name -> tensor .a state_dict., got a list'):
    torch_io.open_state_dict(tmp_path / 'list.pt')


def test_safetensors_header_errors(tmp_path):
  def write(name, header: bytes, data: bytes = b''):
    path = tmp_path / name
    path.write_bytes(struct.pack('<Q', len(header)) + header + data)
    return path

  with pytest.raises(ValueError, match='header is not JSON'):
    torch_io.open_state_dict(write('a.safetensors', b'{nope'))
  with pytest.raises(ValueError, match="'w': data_offsets \\[0, 4\\] hold 4 bytes, shape \\(2,\\) F32 needs 8"):
    torch_io.open_state_dict(write('b.safetensors', b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}',
                                   b'\0' * 4))
  with pytest.raises(ValueError, match="bad header entry for 'w'"):
    torch_io.open_state_dict(write('c.safetensors', b'{"w": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}'))
  (tmp_path / 'short.safetensors').write_bytes(b'\1\2')
  with pytest.raises(ValueError, match='fewer than the 8-byte header length'):
    torch_io.open_state_dict(tmp_path / 'short.safetensors')


def test_writers_are_atomic(tmp_path):
  with pytest.raises(ValueError, match="cannot write 'o' to safetensors: dtype object"):
    torch_io.save_safetensors({'w': np.ones(2, np.float32), 'o': np.asarray([object()])}, tmp_path / 'x.safetensors')
  with pytest.raises(ValueError, match="unknown output suffix '.npz'"):
    torch_io.save_state_dict({'w': np.ones(2)}, tmp_path / 'x.npz')
  with pytest.raises(FileNotFoundError, match='output directory does not exist'):
    torch_io.save_state_dict({'w': np.ones(2)}, tmp_path / 'missing' / 'x.pt')
  assert list(pathlib.Path(tmp_path).iterdir()) == []


def test_export_streams_tensor_by_tensor(tmp_path):
  """Exporting to safetensors holds one laid-out tensor at a time, not a second copy of the parameters."""
  import tracemalloc  # pylint: disable=g-import-not-at-top

  from cosmos_jax.convert import rules  # pylint: disable=g-import-not-at-top

  table = [rules.Rule('layers.{i}.weight', 'layers/kernel', 'linear')]
  params = {'layers': {'kernel': np.random.default_rng(0).normal(size=(16, 256, 512)).astype(np.float32)}}  # 8 MiB
  exported = rules.export_state_dict(table, params, prefix='net.')
  path = tmp_path / 'export.safetensors'
  tracemalloc.start()
  torch_io.save_safetensors(exported, path)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  one_tensor = 256 * 512 * 4
  assert peak < 3 * one_tensor, f'peak {peak / 2**20:.1f} MiB while writing 16 tensors of {one_tensor / 2**20:.1f} MiB'
  with torch_io.open_state_dict(path) as back:
    for i in range(16):
      np.testing.assert_array_equal(back[f'net.layers.{i}.weight'], params['layers']['kernel'][i].T)
