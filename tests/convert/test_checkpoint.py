"""The checkpoint layout and its reader: orbax round trip in stored dtypes, assets, atomic writes, resolving a
checkpoint directory or a training workdir to one step, EMA choice, and errors that name the problem."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from cosmos_jax.convert import checkpoint
from cosmos_jax.data import bundled
from cosmos_jax.nn import dit


def sample_params():
  rng = np.random.default_rng(0)
  return {
      'blocks': {'kernel': rng.standard_normal((2, 3, 4)).astype(ml_dtypes.bfloat16),
                 'scale': rng.standard_normal((2, 4)).astype(np.float32)},
      'transposed': rng.standard_normal((5, 3)).astype(np.float32).T,
      'device': jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
  }


def assert_trees_equal(got, want):
  flat, expected = jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves_with_path(want)
  assert [p for p, _ in flat] == [p for p, _ in expected]
  for (_, a), (_, b) in zip(flat, expected):
    assert isinstance(a, np.ndarray) and a.dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(a, np.asarray(b))


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
  assert sorted(p.name for p in dest.iterdir()) == ['assets', 'params']
  assert sorted(p.name for p in (dest / 'assets').iterdir()) == ['config.json', 'dataset_statistics.json',
                                                                 'text_store']
  assert (dest / 'assets' / 'text_store' / 'index.json').read_text() == '[]'
  restored, restored_config = checkpoint.load_params(dest)
  assert restored_config == config
  assert_trees_equal(restored, params)


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
    checkpoint.save_params(tmp_path / 'c', {'w': np.zeros(2)}, {}, {'config.json': tmp_path})
  with pytest.raises(Exception):  # orbax cannot serialise the leaf: fails mid-save, after the temp dir exists
    checkpoint.save_params(tmp_path / 'd', {'w': np.zeros(2), 'x': object()}, {})
  assert list(tmp_path.iterdir()) == []


def test_load_errors_name_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    checkpoint.load_params(tmp_path / 'absent')
  with pytest.raises(checkpoint.CheckpointError, match='neither a checkpoint .* nor a training workdir'):
    checkpoint.load_params(tmp_path)
  (tmp_path / 'assets').mkdir()
  (tmp_path / 'assets' / 'config.json').write_text('{}')
  with pytest.raises(FileNotFoundError, match='has no params/ item'):
    checkpoint.load_params(tmp_path)
  (tmp_path / 'params').mkdir()
  (tmp_path / 'assets' / 'config.json').write_text('{nope')
  with pytest.raises(ValueError, match='config.json: not valid JSON'):
    checkpoint.open_checkpoint(tmp_path)
  (tmp_path / 'assets' / 'config.json').write_text('{"format": "something else"}')
  with pytest.raises(checkpoint.CheckpointError, match="format 'something else'"):
    checkpoint.open_checkpoint(tmp_path)


def _tiny_dit_config():
  return dit.DiTConfig.preset('tiny')


def _write_step(root, step, params, *, ema=None, layout='aloha', policy_assets=True):
  """A checkpoint step as the trainer writes it (params, optional ema_params, assets)."""
  description = checkpoint.describe('dit', _tiny_dit_config(), layout=layout, step=step, ema=ema is not None,
                                    train_config={'seed': 0})
  files = {}
  if policy_assets:
    files = {'dataset_statistics.json': bundled.sample_dir('aloha') / 'dataset_statistics.json',
             'text_store': bundled.text_store_dir('aloha')}
  dest = checkpoint.save_params(root / str(step), params, description, files)
  if ema is not None:
    shutil.copytree(checkpoint.save_params(root / f'ema{step}', ema, {}) / 'params', dest / 'ema_params')
  return dest


def test_open_checkpoint_resolves_workdir_step_and_ema(tmp_path):
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints').mkdir(parents=True)
  raw = {'w': np.arange(3, dtype=np.float32)}
  ema = {'w': np.full(3, 7, np.float32)}
  _write_step(workdir / 'checkpoints', 10, {'w': np.zeros(3, np.float32)})
  _write_step(workdir / 'checkpoints', 20, raw, ema=ema)
  (workdir / 'checkpoints' / '30.orbax-checkpoint-tmp-123').mkdir()  # an unfinished save is not a step

  assert checkpoint.checkpoint_steps(workdir) == [10, 20]
  latest = checkpoint.open_checkpoint(workdir)
  assert latest.step == 20 and latest.directory.name == '20' and latest.has_ema and latest.layout == 'aloha'
  assert checkpoint.open_checkpoint(workdir / 'checkpoints').directory == latest.directory
  assert checkpoint.open_checkpoint(latest.directory).step == 20  # the step directory itself
  # EMA parameters by default when the run kept them; raw ones on request.
  assert_trees_equal(latest.load_params(), ema)
  assert_trees_equal(latest.load_params(use_ema=False), raw)
  assert checkpoint.load_params(workdir, step=20, use_ema=False)[0]['w'].tolist() == [0, 1, 2]

  older = checkpoint.open_checkpoint(workdir, step=10)
  assert not older.has_ema and older.load_params()['w'].tolist() == [0, 0, 0]
  with pytest.raises(checkpoint.CheckpointError, match='no EMA parameters'):
    older.load_params(use_ema=True)
  with pytest.raises(FileNotFoundError, match=r'no checkpoint of step 15; saved steps: \[10, 20\]'):
    checkpoint.open_checkpoint(workdir, step=15)
  with pytest.raises(FileNotFoundError, match='--step 15 applies to a training workdir'):
    checkpoint.open_checkpoint(latest.directory, step=15)
  assert older.statistics()['proprio_min'].shape == (14,)
  assert older.text_store().tasks == ('transfer cube',)
  assert older.model_config() == _tiny_dit_config()


def test_require_refuses_the_wrong_layout_for_the_command(tmp_path):
  params = {'w': np.zeros(3, np.float32)}
  base = _write_step(tmp_path, 1, params, layout=None, policy_assets=False)
  with pytest.raises(checkpoint.CheckpointError, match='--checkpoint: .* is a base model, not a policy'):
    checkpoint.open_checkpoint(base).require('dit', what='--checkpoint', policy=True)
  checkpoint.open_checkpoint(base).require('dit', what='--checkpoint')  # a base model is fine where no policy is
  with pytest.raises(checkpoint.CheckpointError, match="--vae: .* holds a 'dit' model, expected a 'vae' model"):
    checkpoint.open_checkpoint(base).require('vae', what='--vae')

  no_text = _write_step(tmp_path, 2, params)
  shutil.rmtree(no_text / 'assets' / 'text_store')
  with pytest.raises(FileNotFoundError, match="lacks the asset 'text_store'"):
    checkpoint.open_checkpoint(no_text).require('dit', what='--checkpoint', policy=True)

  old = tmp_path / 'old'
  (old / 'params').mkdir(parents=True)
  (old / 'config.json').write_text(json.dumps({'format': 'cosmos_jax.converted/1'}))
  with pytest.raises(checkpoint.CheckpointError, match='old converted layout'):
    checkpoint.open_checkpoint(old)


def test_model_configs_round_trip_through_json():
  from cosmos_jax.nn import vae
  for model, cfg in (('dit', _tiny_dit_config()), ('vae', vae.VAEConfig(base_dim=8, dtype=jnp.bfloat16))):
    text = json.dumps(checkpoint.model_config_to_dict(model, cfg))
    assert checkpoint.model_config_from_dict(model, json.loads(text)) == cfg
