"""The --checkpoint/--step/--use_ema shorthands shared by serve and eval."""

import ml_collections
import pytest
from absl import flags
from ml_collections import config_dict

from cosmos_jax.convert import checkpoint_flags


def _config():
  c = ml_collections.ConfigDict()
  c.policy = ml_collections.ConfigDict()
  c.policy.checkpoint = 'from/config'
  c.policy.step = config_dict.placeholder(int)
  c.policy.use_ema = config_dict.placeholder(bool)
  c.lock()
  return c


@pytest.mark.parametrize('argv,expected', [
    ([], ('from/config', None, None)),
    (['--checkpoint=runs/a', '--step=30', '--nouse_ema'], ('runs/a', 30, False)),
    (['--use_ema'], ('from/config', None, True)),
])
def test_given_flags_override_their_fields(argv, expected):
  flag_values = flags.FlagValues()
  holders = checkpoint_flags.define('policy', flag_values)
  flag_values(['prog', *argv])
  config = _config()
  holders.apply(config)
  assert (config.policy.checkpoint, config.policy.step, config.policy.use_ema) == expected
  assert config.is_locked


def test_help_names_the_section():
  flag_values = flags.FlagValues()
  checkpoint_flags.define('model', flag_values)
  assert '--config.model.step' in flag_values['step'].help
  with pytest.raises(flags.DuplicateFlagError):
    checkpoint_flags.define('policy', flag_values)
