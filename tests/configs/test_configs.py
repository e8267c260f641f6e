"""The configs in configs/: every file and variant builds, the variant argument is parsed one way, and a
bad argument names the file and the known variants."""

import importlib

import numpy as np
import pytest

from configs import common

CONFIGS = ('aloha', 'aloha_planning', 'libero', 'robocasa')


@pytest.mark.parametrize('name', CONFIGS)
def test_full_config_builds(name):
  c = importlib.import_module(f'configs.{name}').get_config()
  assert c.model.dit_preset == '2B'
  assert c.layout == name.split('_')[0]
  assert c.data.dataset_dir == ''  # a real run names its data


@pytest.mark.parametrize('name', CONFIGS)
def test_tiny_variant_uses_the_bundled_sample(name):
  c = importlib.import_module(f'configs.{name}').get_config('tiny')
  assert c.model.dit_preset == 'tiny'
  assert c.data.dataset_dir.endswith(f'sample_{c.layout}')


@pytest.mark.parametrize('name', CONFIGS)
def test_lora_variant_adapts_a_frozen_base(name):
  c = importlib.import_module(f'configs.{name}').get_config('lora')
  assert c.lora.enabled and not c.init.from_scratch and c.lora.base_dtype == 'bfloat16'
  assert (tuple(c.lora.targets), c.lora.rank, c.lora.alpha, c.lora.dropout) == (
      ('q_proj', 'k_proj', 'v_proj', 'output_proj', 'mlp.layer1', 'mlp.layer2'), 24, 24.0, 0.0)
  tiny = importlib.import_module(f'configs.{name}').get_config('tiny,lora')
  assert tiny.lora.enabled and tiny.model.dit_preset == 'tiny' and not tiny.init.from_scratch
  assert not importlib.import_module(f'configs.{name}').get_config('tiny').lora.enabled


def test_parse_arg():
  assert common.parse_arg(None, name='x', tiny=False).to_dict() == {'tiny': False}
  assert common.parse_arg('tiny', name='x', tiny=False).tiny is True
  parsed = common.parse_arg('tiny, steps=3,label=abc,lr=1e-3', name='x', tiny=False, steps=1, label='', lr=0.1)
  assert (parsed.tiny, parsed.steps, parsed.label, parsed.lr) == (True, 3, 'abc', 1e-3)


def test_parse_arg_errors():
  with pytest.raises(ValueError, match=r"configs/aloha.py: unknown variant argument 'huge'.*\['lora', 'small', 'tiny'\]"):
    importlib.import_module('configs.aloha').get_config('huge')
  with pytest.raises(ValueError, match="'steps' needs a value"):
    common.parse_arg('steps', name='x', steps=1)
  with pytest.raises(ValueError, match="steps='many' is not a int"):
    common.parse_arg('steps=many', name='x', steps=1)


def test_small_aloha_variant_learns_from_scratch_on_the_bundled_sample():
  c = importlib.import_module('configs.aloha').get_config('small')
  tiny = importlib.import_module('configs.aloha').get_config('tiny')
  assert c.init.from_scratch and c.data.dataset_dir == tiny.data.dataset_dir and c.data.image_size == 64
  assert c.model.dit_overrides.model_channels > tiny.model.dit_overrides.get('model_channels', 64)
  assert c.log.image_every_steps == 0
  from cosmos_jax.train import optim  # pylint: disable=g-import-not-at-top
  learning_rate = optim.learning_rate_schedule(c.optim)
  rates = [float(learning_rate(step)) for step in (100, 12_000, 17_000, 22_000, 30_000)]
  np.testing.assert_allclose(rates, [5e-4, 5e-4, 2.75e-4, 5e-5, 5e-5], rtol=1e-5,
                             err_msg='small: full rate to 12k, linear decay to a tenth at 22k, then a tenth')
  from cosmos_jax.policy import layout as layout_lib  # pylint: disable=g-import-not-at-top
  from cosmos_jax.train import data as train_data  # pylint: disable=g-import-not-at-top
  sample_config = train_data.sample_config(c, layout_lib.get_layout('aloha'))
  assert (sample_config.episode_start_steps, sample_config.episode_start_repeats) == (10, 30)
  assert c.diffusion.action_loss_multiplier == 20 and tiny.data.episode_start_repeats == 1
