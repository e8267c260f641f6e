"""LoRA from a training run to a robot, on the tiny config: fine-tune a base run, train adapters on it (the checkpoint
holds the adapters and a hashed reference to the base), resume, refuse a different base, serve an official-protocol
/act request with the adapters merged and kept separate, and export a merged .pt that converts back to
base + A·B·alpha/r."""

import json
import shutil

import jax
import numpy as np
import pytest

from configs import aloha
from configs.serve import aloha as serve_config
from cosmos_jax.convert import __main__ as convert_main
from cosmos_jax.convert import checkpoint as checkpoint_lib
from cosmos_jax.convert import library as convert_lib
from cosmos_jax.nn import lora as lora_lib
from cosmos_jax.serve import command
from cosmos_jax.train import trainer
from tests import official_client

IMAGE_SIZE = 64  # the tiny config's training size


def _train(workdir, arg, total_steps, resume=False, **init):
  config = aloha.get_config(arg)
  config.total_steps = total_steps
  config.checkpoint.every_steps = total_steps
  config.checkpoint.async_save = False
  config.log.image_every_steps = 0
  config.optim.lr = 1e-3  # adapters that move visibly in two steps
  config.optim.schedule.warm_up_steps = [0, 0]
  config.init.update(init)
  return trainer.train(config, str(workdir), resume=resume)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('lora')
  _train(root / 'base', 'tiny', 1)
  _train(root / 'lora', 'tiny,lora', 2, dit_checkpoint=str(root / 'base'))
  return root


def _adapters_and_base(runs):
  lora = checkpoint_lib.open_checkpoint(runs / 'lora')
  adapters = checkpoint_lib.restore_tree(lora.directory / checkpoint_lib.PARAMS)
  base = checkpoint_lib.open_checkpoint(runs / 'base').load_params()
  return lora, adapters, base


def test_lora_checkpoint_holds_adapters_and_a_hashed_base_reference(runs):
  lora, adapters, base = _adapters_and_base(runs)
  assert lora.is_lora and lora.step == 2 and lora.has_train_state
  stored = checkpoint_lib.item_shapes(lora.directory / checkpoint_lib.PARAMS)
  assert stored and all(name.rsplit('/', 1)[1] in lora_lib.ADAPTER_LEAVES for name in stored), sorted(stored)[:4]
  reference = lora.config['lora']['base']
  assert reference == {'path': str(runs / 'base'), 'step': 1, 'use_ema': False,
                       'sha256': checkpoint_lib.params_sha256(base)}
  assert lora.lora_config() == lora_lib.LoRAConfig()
  b = adapters['blocks']['mlp']['layer2']['lora_b']
  assert np.abs(b).max() > 0, 'two steps moved the up projection off zero'

  merged = lora.load_params()
  expected = jax.device_get(lora_lib.merge(base, adapters, lora.lora_config()))
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(merged), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))
  separate = lora.load_params(merge_lora=False)
  np.testing.assert_array_equal(separate['blocks']['mlp']['layer2']['lora_b'], b * lora.lora_config().scale)
  np.testing.assert_array_equal(separate['blocks']['mlp']['layer2']['kernel'], base['blocks']['mlp']['layer2']['kernel'])


def test_a_different_base_is_refused(runs, tmp_path):
  lora, _, base = _adapters_and_base(runs)
  other = jax.tree.map(lambda x: x + np.float32(1e-3), base)
  checkpoint_lib.save_params(tmp_path / 'other', other, checkpoint_lib.describe('dit', lora.model_config()))
  with pytest.raises(checkpoint_lib.CheckpointError, match=r'has content sha256 [0-9a-f]{64}, but the adapters were '
                     rf'trained on a base with sha256 {lora.config["lora"]["base"]["sha256"]}'):
    lora.load_params(lora_base=tmp_path / 'other')


@pytest.mark.slow  # a third training run (~20 s)
def test_lora_run_resumes_on_its_base(runs, tmp_path):
  shutil.copytree(runs / 'lora', tmp_path / 'lora')
  result = _train(tmp_path / 'lora', 'tiny,lora', 3, resume=True, dit_checkpoint='')
  assert result.final_step == 3 and set(result.losses) == {3}
  resumed = checkpoint_lib.open_checkpoint(tmp_path / 'lora')
  assert resumed.step == 3 and resumed.config['lora']['base'] == checkpoint_lib.open_checkpoint(
      runs / 'lora').config['lora']['base']


def test_lora_checkpoint_serves_an_official_request_merged_or_separate(runs):
  answers = {}
  for merge in (True, False):
    config = serve_config.get_config()
    config.model.checkpoint = str(runs / 'lora')
    config.model.image_size = IMAGE_SIZE
    config.model.action_steps = 2
    config.model.merge_lora = merge
    runner = command.make_runner(config)
    assert f'LoRA rank 24 {"merged into" if merge else "beside"} {runs / "base"}' in runner.name
    answers[merge] = official_client.act_over_http(runner, config, IMAGE_SIZE)
  merged, separate = (np.asarray(answers[m]['actions']) for m in (True, False))
  assert merged.shape == (50, 14) and np.all(np.isfinite(merged))
  err = np.abs(merged - separate).max()
  assert err < 1e-3, f'merged vs separate adapters: actions differ by max abs {err:.3g}'


def test_merged_export_converts_back_to_base_plus_ba(runs, tmp_path):
  lora, adapters, base = _adapters_and_base(runs)
  exported = tmp_path / 'policy.pt'
  with pytest.raises(ValueError, match='is a LoRA checkpoint: pass --merge'):
    convert_main.run(['export', '--checkpoint', str(runs / 'lora'), '--out', str(exported)])
  with pytest.raises(ValueError, match='holds no adapters'):
    convert_main.run(['export', '--checkpoint', str(runs / 'base'), '--merge', '--out', str(exported)])
  convert_main.run(['export', '--checkpoint', str(runs / 'lora'), '--merge', '--out', str(exported)])
  architecture = tmp_path / 'architecture.json'
  architecture.write_text(json.dumps(lora.config['config']), encoding='utf-8')
  convert_main.run(['dit', str(exported), str(tmp_path / 'back'), '--config', str(architecture)])
  back, _, _ = convert_lib.load_converted(tmp_path / 'back')

  scale = lora.lora_config().scale
  flat_adapters = {k: v for k, v in jax.tree_util.tree_leaves_with_path(adapters)}
  adapted = 0
  for path, got in jax.tree_util.tree_leaves_with_path(back):
    want = np.asarray(_leaf(base, path), np.float64)
    module = path[:-1]
    a_key = (*module, jax.tree_util.DictKey('lora_a'))
    if a_key in flat_adapters:
      a = np.asarray(flat_adapters[a_key], np.float64)
      b = np.asarray(flat_adapters[(*module, jax.tree_util.DictKey('lora_b'))], np.float64)
      want = want + np.einsum('...ir,...ro->...io', a, b) * scale
      adapted += 1
    err = np.abs(got - want).max()
    assert err <= 1e-6 * max(1.0, np.abs(want).max()), f'{jax.tree_util.keystr(path)}: max abs {err:.3g}'
  assert adapted == 10


def _leaf(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree
