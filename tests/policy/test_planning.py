"""Best-of-N planning: the batched (and sharded) planner equals the candidates run one by one."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.policy import inference
from cosmos_jax.policy import planning
from cosmos_jax.policy import sampler as sampler_lib
from benchmarks import planning_fixture as fx

REPO = pathlib.Path(__file__).resolve().parents[2]


def run_batched_and_serial(cfg):
  policy_net, policy_params = fx.tiny_model(0)
  planning_net, planning_params = fx.tiny_model(1)
  context, latent, proprio = fx.observation()
  noise = planning.noise_bank(cfg, fx.LATENT_SHAPE)
  planner = planning.make_planner(policy_net, planning_net, fx.LAYOUT, cfg)
  with jax.default_matmul_precision('highest'):
    batched = planner(policy_params, planning_params, context, latent, proprio, noise)
    serial = planning.plan_serially(policy_net, policy_params, planning_net, planning_params, context, latent,
                                    proprio, noise, layout=fx.LAYOUT, cfg=cfg)
  return batched, serial


def assert_same_plan(batched, serial, n, kv):
  assert batched['values'].shape == (n, kv)
  np.testing.assert_allclose(batched['values'], serial['values'], rtol=0, atol=2e-6)
  np.testing.assert_allclose(batched['scores'], serial['scores'], rtol=0, atol=2e-6)
  np.testing.assert_allclose(batched['actions'], serial['actions'], rtol=0, atol=2e-5)
  np.testing.assert_allclose(batched['values_by_depth'], serial['values_by_depth'], rtol=0, atol=2e-6)
  assert int(batched['chosen']) == int(serial['chosen'])
  np.testing.assert_array_equal(batched['chosen_actions'], batched['actions'][int(batched['chosen'])])


@pytest.mark.slow
def test_batched_planner_equals_one_by_one():
  cfg = planning.PlanningConfig.main_command()  # N = 8, steps 10 / (1, 3, 5) / (1, 2, 3, 4, 5), majority_mean, V(s')
  batched, serial = run_batched_and_serial(cfg)
  assert_same_plan(batched, serial, 8, 15)
  # The values are spread enough that the choice is not a tie artefact.
  assert float(jnp.std(batched['scores'])) > 1e-4


@pytest.mark.slow
def test_search_depth_two_batched_equals_one_by_one():
  cfg = planning.PlanningConfig.main_command(num_candidates=4, action_steps=3, future_steps=(1, 3), value_steps=(1, 3),
                                             search_depth=2, depth_aggregation='average', aggregation='average')
  batched, serial = run_batched_and_serial(cfg)
  assert_same_plan(batched, serial, 4, 4)
  assert batched['values_by_depth'].shape == (4, 1 + 2)  # depth 1, then one entry per depth-1 future sample


def test_dit_passes_per_candidate():
  assert planning.PlanningConfig.main_command().dit_passes_per_candidate() == 61
  assert planning.PlanningConfig.depth3_command().dit_passes_per_candidate() == 60


def test_runtime_dit_passes_match_count():
  """Count the rows the network actually processes in one batched planning query: 61 per candidate."""
  cfg = planning.PlanningConfig.main_command(num_candidates=2)
  rows = []

  def counting_net(params, x, timesteps, context, condition_mask):
    jax.debug.callback(lambda b: rows.append(int(b)), x.shape[0])
    return jnp.tanh(x * params)

  context, latent, proprio = fx.observation()
  planner = planning.make_planner(counting_net, counting_net, fx.LAYOUT, cfg)
  out = planner(jnp.float32(0.5), jnp.float32(0.3), context, latent, proprio,
                planning.noise_bank(cfg, fx.LATENT_SHAPE))
  jax.block_until_ready(out)
  assert sum(rows) == cfg.num_candidates * cfg.dit_passes_per_candidate() == 2 * 61


def test_selection_rule():
  assert int(planning.select(jnp.array([0.5, 0.5, 0.4]))) == 0  # ties keep the base candidate
  assert int(planning.select(jnp.array([0.5, 0.7, 0.7]))) == 1  # first among the best
  assert int(planning.select(jnp.array([0.0, 0.0, 0.1]))) == 2


def test_aggregations():
  v = jnp.array([0.0, 0.02, 0.6, 0.8, 0.9])
  np.testing.assert_allclose(inference.aggregate_values(v, 'average'), 0.464, rtol=1e-6)
  np.testing.assert_allclose(inference.aggregate_values(v, 'success_vote'), 0.6, rtol=1e-6)
  np.testing.assert_allclose(inference.aggregate_values(v, 'majority_mean'), (0.6 + 0.8 + 0.9) / 3, rtol=1e-6)
  assert float(inference.aggregate_values(jnp.array([0.0, 0.01, 0.9]), 'majority_mean')) == 0.0
  np.testing.assert_allclose(inference.aggregate_values(v, 'lcb'), max(0.0, 0.464 - np.std(v, ddof=1)), rtol=1e-5)
  with pytest.raises(ValueError, match='unknown value aggregation'):
    inference.aggregate_values(v, 'median')


def test_noise_bank_seeds():
  cfg = planning.PlanningConfig.main_command(num_candidates=3)
  bank = planning.noise_bank(cfg, (1, 11, 2, 2, 16))['noise']
  assert bank.shape == (3, 5, 11, 2, 2, 16)
  # Candidate 1, offset 2 and candidate 2, offset 1 are the same seed (195 + 3).
  np.testing.assert_array_equal(bank[1, 2], bank[2, 1])
  from cosmos_jax.policy import sampler
  np.testing.assert_array_equal(bank[0, 0], sampler.parity_noise(195, (1, 11, 2, 2, 16))[0])


def test_bad_planning_inputs():
  with pytest.raises(ValueError, match='aggregation'):
    planning.PlanningConfig(aggregation='max')
  cfg = planning.PlanningConfig.main_command(num_candidates=2)
  context, latent, proprio = fx.observation()
  noise = planning.noise_bank(cfg, fx.LATENT_SHAPE)
  net = lambda p, x, t, c, m: x
  with pytest.raises(ValueError, match='batch 1'):
    planning.plan(net, 0.0, net, 0.0, context, jnp.concatenate([latent, latent]), proprio, noise, layout=fx.LAYOUT,
                  cfg=cfg)
  with pytest.raises(ValueError, match='noise must be'):
    planning.plan(net, 0.0, net, 0.0, context, latent, proprio, {'noise': noise['noise'][:1]}, layout=fx.LAYOUT,
                  cfg=cfg)
  with pytest.raises(ValueError, match='proprio_dim=14'):
    planning.plan(net, 0.0, net, 0.0, context, latent, proprio[:, :9], noise, layout=fx.LAYOUT, cfg=cfg)


SHARDED_SCRIPT = r'''
import json, sys
import jax, numpy as np
from jax.sharding import Mesh, PartitionSpec
from cosmos_jax.policy import planning
from benchmarks import planning_fixture as fx
assert len(jax.devices()) == 8, jax.devices()
cfg = planning.PlanningConfig.main_command(num_candidates=8, action_steps=3, future_steps=(1, 3), value_steps=(1, 2, 3))
policy_net, policy_params = fx.tiny_model(0)
planning_net, planning_params = fx.tiny_model(1)
context, latent, proprio = fx.observation()
noise = planning.noise_bank(cfg, fx.LATENT_SHAPE)
mesh = Mesh(np.array(jax.devices()), ('data',))
with jax.default_matmul_precision('highest'):
  single = planning.make_planner(policy_net, planning_net, fx.LAYOUT, cfg)(
      policy_params, planning_params, context, latent, proprio, noise)
  sharded = planning.make_planner(policy_net, planning_net, fx.LAYOUT, cfg, mesh=mesh)(
      policy_params, planning_params, context, latent, proprio, noise)
print(json.dumps({
    'scores_sharded_over_data': sharded['scores'].sharding.spec == PartitionSpec('data'),
    'actions_sharded_over_data': tuple(sharded['actions'].sharding.spec)[:1] == ('data',),
    'values_shards': len(sharded['values'].addressable_shards),
    'values_shard_shape': list(sharded['values'].addressable_shards[0].data.shape),
    'max_value_diff': float(np.abs(np.asarray(sharded['values']) - np.asarray(single['values'])).max()),
    'max_action_diff': float(np.abs(np.asarray(sharded['actions']) - np.asarray(single['actions'])).max()),
    'chosen': [int(single['chosen']), int(sharded['chosen'])],
}))
'''


@pytest.mark.slow
def test_sharded_candidates_on_eight_cpu_devices():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu',
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-c', SHARDED_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['scores_sharded_over_data'] and result['actions_sharded_over_data'], result
  assert result['values_shards'] == 8 and result['values_shard_shape'] == [1, 6], result
  assert result['max_value_diff'] <= 2e-6 and result['max_action_diff'] <= 2e-5, result
  assert result['chosen'][0] == result['chosen'][1], result


# Official options ---------------------------------------------------------------------------------------------


def test_defaults_are_the_official_deploy_defaults():
  cfg = planning.PlanningConfig()
  assert cfg == planning.PlanningConfig.from_deploy_config({})
  # One candidate scored by the policy's own parallel value; V(s') masking off (the official default).
  assert (cfg.num_candidates, cfg.value_source, cfg.predict_future, cfg.value_of_future_state) == (1, 'parallel',
                                                                                                    False, False)
  assert cfg.dit_passes_per_candidate() == 10


def test_official_commands():
  main = planning.PlanningConfig.main_command()
  assert (main.num_candidates, main.action_steps, main.future_steps, main.value_steps) == (8, 10, (1, 3, 5),
                                                                                           (1, 2, 3, 4, 5))
  assert main.value_of_future_state and main.value_ensemble and main.aggregation == 'majority_mean'
  assert main.dit_passes_per_candidate() == 61
  depth3 = planning.PlanningConfig.depth3_command()
  # Ensembles off: one sample at the full step count (an ensemble of one would be a single 1-step sample).
  assert (depth3.future_steps, depth3.value_steps, depth3.value_ensemble) == ((5,), (5,), False)
  assert depth3.search_depth == 3 and depth3.depth_aggregation == 'use_last_value'
  assert depth3.depth_entries == 3 and depth3.dit_passes_per_candidate() == 3 * (10 + 5 + 5)
  one = planning.PlanningConfig.from_deploy_config({**planning.DEPTH3_PLANNING_COMMAND,
                                                    'use_ensemble_future_state_predictions': True})
  assert one.future_steps == (1,)
  assert planning.member_steps(5, None) == (5,) and planning.member_steps(5, 1) == (1,)
  assert planning.ensemble_steps(3, 5) == (1, 1, 2, 2, 3) and planning.ensemble_steps(2, 3) == (1, 1, 2)


def test_q_value_options():
  cfg = planning.PlanningConfig.from_deploy_config({
      'num_queries_best_of_n': 4, 'ar_qvalue_prediction': True, 'num_denoising_steps_value': 2,
      'use_ensemble_value_predictions': True, 'num_value_predictions_in_ensemble': 3,
      'value_ensemble_aggregation_scheme': 'lcb', 'mask_future_state_for_qvalue_prediction': True})
  assert (cfg.value_source, cfg.value_steps, cfg.aggregation, cfg.q_value_mask_future_state) == ('q_value', (1, 1, 2),
                                                                                                 'lcb', True)
  assert not cfg.predict_future and cfg.dit_passes_per_candidate() == 10 + 3


@pytest.mark.parametrize('fields,match', [
    ({'num_queries': 8}, r"unknown planning options \['num_queries'\]"),
    ({'ar_future_prediction': True, 'ar_value_prediction': True, 'ar_qvalue_prediction': True},
     'ar_qvalue_prediction'),
    ({'ar_value_prediction': True}, 'needs predict_future'),
    ({'ar_future_prediction': True}, 'needs a value query'),
    ({'use_ensemble_value_predictions': True}, 'use_ensemble_value_predictions needs'),
    ({'use_ensemble_future_state_predictions': True}, 'use_ensemble_future_state_predictions needs'),
    ({'mask_current_state_action_for_value_prediction': True}, 'value_of_future_state'),
    ({'mask_future_state_for_qvalue_prediction': True, 'ar_future_prediction': True, 'ar_value_prediction': True},
     'q_value_mask_future_state'),
    ({'search_depth': 2, 'ar_qvalue_prediction': True}, 'search_depth > 1'),
    ({'ar_qvalue_prediction': True, 'use_ensemble_value_predictions': True,
      'value_ensemble_aggregation_scheme': 'gamma_weighted_average'}, 'aggregation'),
    ({'ar_future_prediction': True, 'ar_value_prediction': True,
      'future_state_ensemble_aggregation_scheme': 'median'}, 'future_aggregation'),
    ({'search_depth_value_aggregation_scheme': 'max'}, 'depth_aggregation'),
])
def test_refused_options(fields, match):
  with pytest.raises(ValueError, match=match):
    planning.PlanningConfig.from_deploy_config(fields)


def test_value_steps_need_an_ensemble():
  with pytest.raises(ValueError, match='value_ensemble is off'):
    planning.PlanningConfig.main_command(value_ensemble=False)


def test_selection_follows_python_max_with_nan():
  nan = float('nan')
  assert int(planning.select(jnp.array([0.3, nan, 0.5]))) == 2  # NaN is never better
  assert int(planning.select(jnp.array([nan, 0.9, 0.5]))) == 0  # nothing beats a NaN base in Python's max
  assert int(planning.select(jnp.array([0.3, nan]))) == 0


def test_variance_scale_matches_torch():
  torch = pytest.importorskip('torch')
  for seed in (0, 195, 196, 255, 2 ** 31 + 7):
    torch.manual_seed(seed)
    expected = (torch.rand(1).item() * 2.0 + 1.0, torch.rand(1).item() * 0.9 + 0.1)
    assert sampler_lib.variance_scale(seed) == expected


def test_randomized_seeds():
  cfg = planning.PlanningConfig.main_command(num_candidates=3, randomize_seed=True)
  assert cfg.noise_slots == cfg.queries_per_candidate() == 1 + 3 + 15
  seeds = planning.draw_seeds(cfg, np.random.default_rng(0))
  assert seeds.shape == (3, 19) and seeds.min() >= 0 and seeds.max() < 256
  assert len(np.unique(planning.draw_seeds(cfg))) > 19  # fresh draws, not base + q + m


# Batched planner == serial loop for every value source (a cheap stand-in network, so that every option runs in
# seconds; the tiny DiT versions above are marked slow).


def cheap_net(params, x, timesteps, context, condition_mask):
  per_sample = lambda v: v.reshape((-1,) + (1,) * (x.ndim - 1))
  return (jnp.tanh(x * params + 0.3 * timesteps[:, :, None, None, None] - 0.2 * condition_mask)
          + per_sample(context.mean(axis=(1, 2))))


SMALL = dict(num_candidates=3, action_steps=3)
OPTION_CASES = {
    'parallel value (policy scores itself)': planning.PlanningConfig(**SMALL),
    'V(s) future ensemble, value ensemble off (first value)': planning.PlanningConfig.main_command(
        **SMALL, future_steps=(1, 3), value_steps=(3,), value_ensemble=False, value_of_future_state=False),
    'Q(s,a) ensemble lcb, masked, with future images': planning.PlanningConfig.from_deploy_config(dict(
        num_queries_best_of_n=3, num_denoising_steps_action=3, ar_future_prediction=True, ar_qvalue_prediction=True,
        num_denoising_steps_value=3, use_ensemble_value_predictions=True, num_value_predictions_in_ensemble=2,
        value_ensemble_aggregation_scheme='lcb', mask_future_state_for_qvalue_prediction=True)),
    'Q(s,a) single': planning.PlanningConfig(**SMALL, value_source='q_value', value_steps=(3,)),
    'depth 2 average, last images': planning.PlanningConfig.main_command(
        **SMALL, future_steps=(1, 3), value_steps=(1, 2), search_depth=2, depth_aggregation='average',
        future_aggregation='last'),
    'depth 3 command': planning.PlanningConfig.depth3_command(**SMALL, future_steps=(3,), value_steps=(3,)),
    'randomized seeds with variance scale': planning.PlanningConfig.main_command(
        **SMALL, future_steps=(1, 3), value_steps=(1, 3), randomize_seed=True, use_variance_scale=True),
}


def counting(net, rows):
  def counted(params, x, timesteps, context, condition_mask):
    jax.debug.callback(lambda b: rows.append(int(b)), x.shape[0])
    return net(params, x, timesteps, context, condition_mask)
  return counted


@pytest.mark.parametrize('name', list(OPTION_CASES))
def test_every_option_batched_equals_serial(name):
  """Same choice, scores, values and actions; the DiT passes counted at run time match the config's count."""
  cfg = OPTION_CASES[name]
  context, latent, proprio = fx.observation()
  bank = planning.noise_bank(cfg, fx.LATENT_SHAPE, rng=np.random.default_rng(1))
  assert ('sigma_scale' in bank) == cfg.use_variance_scale
  policy_rows, planning_rows = [], []
  batched = planning.make_planner(counting(cheap_net, policy_rows), counting(cheap_net, planning_rows), fx.LAYOUT,
                                  cfg)(jnp.float32(0.5), jnp.float32(0.3), context, latent, proprio, bank)
  jax.block_until_ready(batched)
  serial = planning.plan_serially(cheap_net, jnp.float32(0.5), cheap_net, jnp.float32(0.3), context, latent, proprio,
                                  bank, layout=fx.LAYOUT, cfg=cfg)
  assert_same_plan(batched, serial, cfg.num_candidates, batched['values'].shape[1])
  assert batched['values_by_depth'].shape == (cfg.num_candidates, cfg.depth_entries)
  assert sum(policy_rows) == cfg.num_candidates * sampler_lib.num_calls(cfg.action_steps) * cfg.depth_entries
  assert sum(policy_rows) + sum(planning_rows) == cfg.num_candidates * cfg.dit_passes_per_candidate()
  if cfg.value_source == 'parallel':
    np.testing.assert_array_equal(batched['scores'], batched['action_values'])
  if cfg.predict_future:
    assert batched['future_samples_by_depth'].shape[:3] == (cfg.num_candidates, cfg.depth_entries,
                                                            cfg.num_future_samples)
  else:
    assert 'future_samples' not in batched


def test_candidate_mesh_on_one_device():
  assert len(jax.local_devices()) == 1 or pytest.skip('a one-device check')
  assert planning.candidate_mesh(8) is None and planning.candidate_mesh(8, 1) is None
  with pytest.raises(ValueError, match='devices must be in'):
    planning.candidate_mesh(8, 5)
