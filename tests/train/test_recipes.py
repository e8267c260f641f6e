"""Training recipes: each config's sample mix yields the sample-type proportions the official dataset logic implies.

The expected proportions are re-derived here from the official code (NVlabs/cosmos-policy 18a2acc,
datasets/dataset_common.py calculate_epoch_structure and the datasets' section building and world-model coin),
independently of cosmos_jax.data.mixture, and compared with 2,000 draws through `PolicyDataset.sample` on synthetic
episodes (demos, successful and failed rollouts) as a shuffled epoch yields them.
"""

import importlib
import logging

import numpy as np
import pytest

from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data.episodes import Episode
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.train import data as train_data

DRAWS = 2000
RECIPES = ('aloha', 'aloha_planning', 'libero', 'robocasa')
# Synthetic step counts: demos, successful rollouts, failed rollouts (3 episodes each).
DEMO_STEPS, SUCCESS_STEPS, FAILURE_STEPS = 300, 210, 480


def official_epoch(num_steps, success_steps, failure_steps, p_d, p_s):
  """(demo, success, failure) item counts of one epoch: the official calculate_epoch_structure."""
  if success_steps + failure_steps == 0:
    return num_steps, 0, 0
  if p_s == 0 or success_steps == 0:
    success, failure, p_s = 0, failure_steps, 0
  elif p_s == 1 or failure_steps == 0:
    success, failure, p_s = success_steps, 0, 1
  else:
    s_new = int(failure_steps * p_s / (1 - p_s))
    f_new = int(success_steps * (1 - p_s) / p_s)
    success, failure = (s_new, failure_steps) if success_steps < s_new else (success_steps, f_new)
  if p_d == 0 or num_steps == 0:
    return 0, success, failure
  if p_d == 1:
    return num_steps, 0, 0
  d_new = int((success + failure) * p_d / (1 - p_d))
  if num_steps < d_new:
    return d_new, success, failure
  r_new = int(num_steps * (1 - p_d) / p_d)
  return num_steps, int(r_new * p_s), int(r_new * (1 - p_s))


def official_proportions(data, demo_steps, success_steps, failure_steps):
  """Policy / world-model / value probabilities of a uniform draw from the official dataset built from `data`."""
  rollout_success = success_steps + (demo_steps if data.treat_demos_as_success_rollouts else 0)
  demos = demo_steps + (success_steps if data.treat_success_rollouts_as_demos else 0)
  d, s, f = official_epoch(demos, rollout_success, failure_steps, data.demonstration_sampling_prob,
                           data.success_rollout_sampling_prob)
  p_wm = data.p_world_model if data.return_value_function_returns else 1.0
  total = d + s + f
  return {'policy': d / total, 'world_model': (s + f) / total * p_wm, 'value': (s + f) / total * (1 - p_wm)}


def episodes(layout, prefix, steps, success, rng):
  out = []
  for i, n in enumerate(np.diff(np.linspace(0, steps, 4).astype(int))):
    frames = {camera: rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8) for camera in layout.cameras}
    out.append(Episode(path=f'{prefix}{i}', command='task', proprio=rng.standard_normal((n, layout.proprio_dim)),
                       actions=rng.standard_normal((n, layout.action_dim)), success=success,
                       terminal_reward=float(success), frames=frames))
  return out


def recipe(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  return config, layout_lib.get_layout(config.layout)


def build(config, layout, with_rollouts=True):
  rng = np.random.default_rng(0)
  demos = episodes(layout, 'demo', DEMO_STEPS, True, rng)
  rollouts = (episodes(layout, 'success', SUCCESS_STEPS, True, rng) + episodes(layout, 'failure', FAILURE_STEPS, False,
                                                                               rng)) if with_rollouts else []
  everything = demos + rollouts
  stats = {f'{k}_{s}': getattr(np, s)(np.concatenate([getattr(e, k) for e in everything]), axis=0)
           for k in ('proprio', 'actions') for s in ('min', 'max')}
  cfg = train_data.sample_config(config, layout)
  cfg = sample_lib.SampleConfig(**{**cfg.__dict__, 'augment': False, 'image_size': 8})
  return sample_lib.PolicyDataset(demos, stats, cfg, rollouts=rollouts)


def draw_sample_types(dataset, draws=DRAWS, seed=0):
  rng = np.random.default_rng(seed)
  counts = {'policy': 0, 'world_model': 0, 'value': 0}
  for index in rng.integers(0, len(dataset), draws):
    s = dataset.sample(int(index), rng)
    kind = ('value' if s['value_function_sample_mask'] else 'world_model' if s['world_model_sample_mask'] else
            'policy')
    assert bool(s['rollout_data_mask']) == (kind != 'policy')
    counts[kind] += 1
  return counts


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_sample_type_proportions(name):
  config, layout = recipe(name)
  with_rollouts = bool(config.data.official_rollouts)  # the official recipe's data (ALOHA's main run has none)
  dataset = build(config, layout, with_rollouts)
  expected = official_proportions(config.data, DEMO_STEPS, SUCCESS_STEPS if with_rollouts else 0,
                                  FAILURE_STEPS if with_rollouts else 0)
  for kind, p in train_data.sample_type_probabilities(dataset).items():
    assert p == pytest.approx(expected[kind], abs=1e-12), (kind, p, expected)
  counts = draw_sample_types(dataset)
  for kind, p in expected.items():
    sigma = np.sqrt(DRAWS * p * (1 - p))
    assert abs(counts[kind] - DRAWS * p) <= 4 * sigma + 1e-9, (name, kind, counts, expected)
  # What each recipe is known to give.
  want = {'aloha': (0.5, 0.25, 0.25), 'aloha_planning': (0.1, 0.45, 0.45), 'libero': (0.5, 0.25, 0.25),
          'robocasa': (0.5, 0.25, 0.25)}[name]
  np.testing.assert_allclose([expected[k] for k in ('policy', 'world_model', 'value')], want, atol=2e-3)


def test_planning_mix_differs_from_the_policy_mix():
  """The ALOHA planning model's data has no demo copies among the success rollouts (p_d = 0.1); the policy recipe
  counts the demos as success rollouts (p_d = 0.5)."""
  planning_config, layout = recipe('aloha_planning')
  policy_config, _ = recipe('aloha')
  planning = build(planning_config, layout)
  policy = build(policy_config, layout)
  assert len(planning.sections[1]) == 3 and len(policy.sections[1]) == 6  # success sections: rollouts (+ demos)
  assert train_data.sample_config(planning_config, layout).demonstration_sampling_prob == 0.1


def test_success_rollouts_as_demos():
  config, layout = recipe('libero')
  config.data.treat_success_rollouts_as_demos = True
  dataset = build(config, layout)
  assert len(dataset.sections[0]) == 6  # 3 demos + 3 successful rollouts
  expected = official_proportions(config.data, DEMO_STEPS, SUCCESS_STEPS, FAILURE_STEPS)
  assert train_data.sample_type_probabilities(dataset) == pytest.approx(expected)


def test_missing_rollouts_are_named():
  config, layout = recipe('libero')
  dataset = build(config, layout, with_rollouts=False)
  assert train_data.missing_sample_types(dataset) == [
      'world-model samples of successful episodes', 'value samples of successful episodes',
      'world-model samples of failed episodes', 'value samples of failed episodes']
  assert train_data.sample_type_probabilities(dataset) == {'policy': 1.0, 'world_model': 0.0, 'value': 0.0}
  aloha_config, aloha_layout = recipe('aloha')
  assert train_data.missing_sample_types(build(aloha_config, aloha_layout, with_rollouts=False)) == [
      'world-model samples of failed episodes', 'value samples of failed episodes']


@pytest.mark.parametrize('field,value,match', [
    ('use_proprio', False, 'data.use_proprio=False is not supported'),
    ('use_wrist_images', False, 'data.use_wrist_images=False'),
    ('return_value_function_returns', False, 'return_value_function_returns'),
    ('p_world_model', 1.5, r'p_world_model must be in \[0, 1\]'),
])
def test_unsupported_settings_are_refused(field, value, match):
  config, layout = recipe('aloha')
  config.data[field] = value
  with pytest.raises(ValueError, match=match):
    train_data.sample_config(config, layout)


def test_treat_demos_as_success_rollouts_is_aloha_only():
  config, layout = recipe('libero')
  config.data.treat_demos_as_success_rollouts = True
  with pytest.raises(ValueError, match='official ALOHA dataset only'):
    train_data.sample_config(config, layout)


def test_loss_settings_reach_the_diffusion_config():
  from cosmos_jax.policy import diffusion  # pylint: disable=g-import-not-at-top
  for name in RECIPES:
    config, _ = recipe(name)
    cfg = diffusion.DiffusionConfig(**config.diffusion.to_dict())
    assert cfg.action_loss_multiplier == 1 and not cfg.mask_future_state_for_qvalue_prediction
    assert config.data.episode_start_repeats == 1  # not official: off in every recipe
    assert cfg.mask_current_state_action_for_value_prediction == (name == 'aloha_planning')


def test_training_without_the_recipes_rollouts_warns(caplog):
  config = importlib.import_module('configs.aloha_planning').get_config('tiny')  # bundled demos, no rollouts
  layout = layout_lib.get_layout(config.layout)
  with caplog.at_level(logging.WARNING, logger=train_data.__name__):
    data = train_data.make_training_data(config, layout, process_index=0, process_count=1)
  assert train_data.sample_type_probabilities(data.dataset)['policy'] == 1.0
  (record,) = [r for r in caplog.records if 'rollouts_dir is empty' in r.getMessage()]
  message = record.getMessage()
  assert 'ALOHA 648 evaluation rollouts' in message
  assert 'world-model samples of successful episodes' in message and 'value samples of failed episodes' in message


def test_init_from_an_official_file_uses_its_ema_weights(tmp_path):
  """The official run initialises from the base checkpoint's EMA copy (load_ema_to_reg): given the official file,
  init.dit_checkpoint takes `net_ema.` by default and `net.` with init.ema_weights=False."""
  import jax  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from cosmos_jax.convert import dit_rules  # pylint: disable=g-import-not-at-top
  from cosmos_jax.nn import dit  # pylint: disable=g-import-not-at-top
  from cosmos_jax.train import trainer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module('configs.aloha').get_config('tiny')
  dit_cfg, vae_cfg = trainer.model_configs(config)
  regular = jax.tree.map(np.asarray, dit.init_params(dit_cfg, jax.random.key(0)))
  ema = jax.tree.map(lambda p: p + 1.0, regular)
  path = tmp_path / 'base.safetensors'
  save_file({**dit_rules.export_official(regular, prefix='net.'), **dit_rules.export_official(ema, prefix='net_ema.')},
            str(path))
  config.init.dit_checkpoint = str(path)
  assert config.init.ema_weights  # the default
  loaded, _ = trainer.initial_params(config, dit_cfg, vae_cfg)
  jax.tree.map(np.testing.assert_array_equal, loaded, ema)
  config.init.ema_weights = False
  loaded, _ = trainer.initial_params(config, dit_cfg, vae_cfg)
  jax.tree.map(np.testing.assert_array_equal, loaded, regular)
