"""Serving, evaluating and exporting from a training workdir: the one checkpoint reader picks the step, the EMA
parameters and the VAE the run trained with; a bad checkpoint is refused with an error naming the problem, and the
commands exit non-zero."""

import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from cosmos_jax.convert import __main__ as convert_main
from cosmos_jax.convert import checkpoint as checkpoint_lib
from cosmos_jax.convert import dit_rules
from cosmos_jax.convert import library as convert_lib
from cosmos_jax.convert import torch_io
from cosmos_jax.nn import vae
from cosmos_jax.serve import factory
from tests.convert import trained_layout

ROOT = pathlib.Path(__file__).resolve().parents[2]


def assert_trees_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A workdir with steps 2 (no EMA) and 4 (with an EMA), the tiny policy's weights."""
  tiny = factory.tiny(seed=0)
  raw = jax.device_get(tiny.dit_params)
  ema = jax.tree.map(lambda p: (0.5 * p).astype(p.dtype), raw)
  workdir = tmp_path_factory.mktemp('run')
  trained_layout.write_step(workdir, 2, jax.tree.map(np.zeros_like, raw), tiny.dit_cfg)
  trained_layout.write_step(workdir, 4, raw, tiny.dit_cfg, ema_params=ema)
  return workdir, raw, ema, tiny


def test_policy_from_a_workdir_takes_the_latest_step_its_ema_and_its_vae(run):
  workdir, raw, ema, tiny = run
  models = factory.from_checkpoints(workdir)
  assert_trees_equal(models.dit_params, ema)
  assert models.dit_cfg == tiny.dit_cfg and models.vae_cfg == tiny.vae_cfg
  assert_trees_equal(models.vae_params, tiny.vae_params)  # the VAE the run trained with, read from its record
  assert models.text_store.tasks == tiny.text_store.tasks
  assert_trees_equal(models.statistics, tiny.statistics)
  assert_trees_equal(factory.from_checkpoints(workdir, use_ema=False).dit_params, raw)
  assert_trees_equal(factory.from_checkpoints(workdir, step=2).dit_params, jax.tree.map(np.zeros_like, raw))


def test_bad_checkpoints_are_refused_naming_the_problem(run, tmp_path):
  workdir, raw, _, tiny = run
  with pytest.raises(FileNotFoundError, match=r'has no checkpoint of step 3; saved steps: \[2, 4\]'):
    factory.from_checkpoints(workdir, step=3)
  with pytest.raises(checkpoint_lib.CheckpointError, match='no EMA parameters'):
    factory.from_checkpoints(workdir, step=2, use_ema=True)
  with pytest.raises(checkpoint_lib.CheckpointError, match="is a 'aloha' policy; this command serves the 'libero'"):
    factory.from_checkpoints(workdir, layout='libero')
  with pytest.raises(checkpoint_lib.CheckpointError, match='neither a checkpoint .* nor a training workdir'):
    factory.from_checkpoints(tmp_path)

  vae_dir = tmp_path / 'vae'
  convert_lib.convert('vae', vae.TINY_VAE_PATH, vae_dir, tiny.vae_cfg, dtype='float32')
  with pytest.raises(checkpoint_lib.CheckpointError, match="holds a 'vae' model, expected a 'dit' model"):
    factory.from_checkpoints(vae_dir)
  base = trained_layout.write_step(tmp_path / 'base', 1, raw, tiny.dit_cfg, layout=None, policy_assets=False)
  with pytest.raises(checkpoint_lib.CheckpointError, match='is a base model, not a policy'):
    factory.from_checkpoints(base)
  no_text = tmp_path / 'no_text'
  shutil.copytree(workdir, no_text)
  shutil.rmtree(no_text / 'checkpoints' / '4' / 'assets' / 'text_store')
  with pytest.raises(FileNotFoundError, match="lacks the asset 'text_store'"):
    factory.from_checkpoints(no_text)
  moved_vae = trained_layout.write_step(tmp_path / 'moved', 1, raw, tiny.dit_cfg,
                                        vae_checkpoint=tmp_path / 'gone.safetensors')
  with pytest.raises(FileNotFoundError, match='gone.safetensors, does not exist here: give the VAE'):
    factory.from_checkpoints(moved_vae)
  # The VAE given explicitly (a converted one here) replaces the recorded one.
  assert_trees_equal(factory.from_checkpoints(moved_vae, vae_dir).vae_params, tiny.vae_params)


def test_export_of_a_workdir_is_the_official_layout_of_its_ema_parameters(run, tmp_path):
  workdir, raw, ema, tiny = run
  out = tmp_path / 'policy.safetensors'
  convert_main.run(['export', '--checkpoint', str(workdir), '--out', str(out)])
  with torch_io.open_state_dict(out) as state_dict:
    assert all(k.startswith('net.') for k in state_dict.keys())
    assert_trees_equal(dit_rules.load_official(tiny.dit_cfg, state_dict), ema)
  convert_main.run(['export', '--checkpoint', str(workdir), '--nouse_ema', '--out', str(out)])
  with torch_io.open_state_dict(out) as state_dict:
    assert_trees_equal(dit_rules.load_official(tiny.dit_cfg, state_dict), raw)


def _command(*args):
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def test_commands_exit_non_zero_with_the_reason(run, tmp_path, capsys):
  workdir = run[0]
  assert convert_main.main(['export', '--checkpoint', str(workdir), '--step', '3', '--out',
                            str(tmp_path / 'x.pt')]) == 2
  assert 'no checkpoint of step 3' in capsys.readouterr().err
  assert not (tmp_path / 'x.pt').exists()

  served = _command('cosmos_jax.serve', 'http', '--config=configs/serve/aloha.py', f'--checkpoint={workdir}',
                    '--step=3')
  assert served.returncode == 2 and 'no checkpoint of step 3; saved steps: [2, 4]' in served.stderr, served.stderr
  evaluated = _command('cosmos_jax.eval.aloha_sim', '--config=configs/eval/aloha.py', f'--config.out={tmp_path}',
                       f'--checkpoint={workdir}', '--step=2', '--use_ema')
  assert evaluated.returncode == 2 and 'has no EMA parameters' in evaluated.stderr, evaluated.stderr
