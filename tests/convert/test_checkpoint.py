"""The params checkpoint: orbax round trip in stored dtypes, config and assets, atomic writes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from cosmos_jax.convert import checkpoint


def sample_params():
  rng = np.random.default_rng(0)
  return {
      'blocks': {'kernel': rng.standard_normal((2, 3, 4)).astype(ml_dtypes.bfloat16),
                 'scale': rng.standard_normal((2, 4)).astype(np.float32)},
      'transposed': rng.standard_normal((5, 3)).astype(np.float32).T,
      'device': jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
  }


def test_save_load_round_trip_keeps_dtypes_config_and_assets(tmp_path):
  params = sample_params()
  asset_file = tmp_path / 'stats.json'
  asset_file.write_text('{"a": 1}')
  asset_dir = tmp_path / 'store'
  asset_dir.mkdir()
  (asset_dir / 'index.json').write_text('[]')
  config = {'model': 'test', 'config': {'width': 3}}
  dest = checkpoint.save_params(tmp_path / 'ckpt', params, config,
                                {'dataset_statistics.json': asset_file, 'text_store': asset_dir})
  assert sorted(p.name for p in dest.iterdir()) == ['config.json', 'dataset_statistics.json', 'params', 'text_store']
  assert (dest / 'text_store' / 'index.json').read_text() == '[]'
  restored, restored_config = checkpoint.load_params(dest)
  assert restored_config == config
  flat = jax.tree_util.tree_leaves_with_path(restored)
  expected = jax.tree_util.tree_leaves_with_path(params)
  assert [p for p, _ in flat] == [p for p, _ in expected]
  for (_, got), (_, want) in zip(flat, expected):
    assert isinstance(got, np.ndarray) and got.dtype == np.asarray(want).dtype
    np.testing.assert_array_equal(got, np.asarray(want))


def test_existing_destination_needs_overwrite(tmp_path):
  checkpoint.save_params(tmp_path / 'ckpt', {'w': np.zeros(2, np.float32)}, {'v': 1})
  with pytest.raises(FileExistsError, match='already exists'):
    checkpoint.save_params(tmp_path / 'ckpt', {'w': np.ones(2, np.float32)}, {'v': 2})
  checkpoint.save_params(tmp_path / 'ckpt', {'w': np.ones(2, np.float32)}, {'v': 2}, overwrite=True)
  params, config = checkpoint.load_params(tmp_path / 'ckpt')
  assert config == {'v': 2} and params['w'].tolist() == [1.0, 1.0]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt']


def test_failed_save_leaves_nothing(tmp_path):
  with pytest.raises(TypeError):  # not JSON: refused before anything is written
    checkpoint.save_params(tmp_path / 'a', {'w': np.zeros(2)}, {'bad': object()})
  with pytest.raises(FileNotFoundError, match="asset 'stats.json': source .* does not exist"):
    checkpoint.save_params(tmp_path / 'b', {'w': np.zeros(2)}, {}, {'stats.json': tmp_path / 'absent'})
  with pytest.raises(ValueError, match='must be a plain file name'):
    checkpoint.save_params(tmp_path / 'c', {'w': np.zeros(2)}, {}, {'params': tmp_path})
  with pytest.raises(Exception):  # orbax cannot serialise the leaf: fails mid-save, after the temp dir exists
    checkpoint.save_params(tmp_path / 'd', {'w': np.zeros(2), 'x': object()}, {})
  assert list(tmp_path.iterdir()) == []


def test_load_errors_name_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json is missing'):
    checkpoint.load_params(tmp_path)
  (tmp_path / 'config.json').write_text('{}')
  with pytest.raises(FileNotFoundError, match='params/ is missing'):
    checkpoint.load_params(tmp_path)
  (tmp_path / 'config.json').write_text('{nope')
  with pytest.raises(ValueError, match='config.json: not valid JSON'):
    checkpoint.load_params(tmp_path)
