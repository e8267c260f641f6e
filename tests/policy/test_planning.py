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
from tests.policy import planning_fixture as fx

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
  cfg = planning.PlanningConfig()  # N = 8, steps 10 / (1, 3, 5) / (1, 2, 3, 4, 5), majority_mean, V(s')
  batched, serial = run_batched_and_serial(cfg)
  assert_same_plan(batched, serial, 8, 15)
  # The values are spread enough that the choice is not a tie artefact.
  assert float(jnp.std(batched['scores'])) > 1e-4


@pytest.mark.slow
def test_search_depth_two_batched_equals_one_by_one():
  cfg = planning.PlanningConfig(num_candidates=4, action_steps=3, future_steps=(1, 3), value_steps=(1, 3),
                                search_depth=2, depth_aggregation='average', aggregation='average')
  batched, serial = run_batched_and_serial(cfg)
  assert_same_plan(batched, serial, 4, 4)
  assert batched['values_by_depth'].shape == (4, 1 + 2)  # depth 1, then one entry per depth-1 future sample


def test_dit_passes_per_candidate():
  assert planning.PlanningConfig().dit_passes_per_candidate() == 61
  assert planning.PlanningConfig(search_depth=3, future_steps=(5,), value_steps=(5,)).dit_passes_per_candidate() == 60


def test_runtime_dit_passes_match_count():
  """Count the rows the network actually processes in one batched planning query: 61 per candidate."""
  cfg = planning.PlanningConfig(num_candidates=2)
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
  cfg = planning.PlanningConfig(num_candidates=3)
  bank = planning.noise_bank(cfg, (1, 11, 2, 2, 16))
  assert bank.shape == (3, 5, 11, 2, 2, 16)
  # Candidate 1, offset 2 and candidate 2, offset 1 are the same seed (195 + 3).
  np.testing.assert_array_equal(bank[1, 2], bank[2, 1])
  from cosmos_jax.policy import sampler
  np.testing.assert_array_equal(bank[0, 0], sampler.parity_noise(195, (1, 11, 2, 2, 16))[0])


def test_bad_planning_inputs():
  with pytest.raises(ValueError, match='aggregation'):
    planning.PlanningConfig(aggregation='max')
  cfg = planning.PlanningConfig(num_candidates=2)
  context, latent, proprio = fx.observation()
  noise = planning.noise_bank(cfg, fx.LATENT_SHAPE)
  net = lambda p, x, t, c, m: x
  with pytest.raises(ValueError, match='batch 1'):
    planning.plan(net, 0.0, net, 0.0, context, jnp.concatenate([latent, latent]), proprio, noise, layout=fx.LAYOUT,
                  cfg=cfg)
  with pytest.raises(ValueError, match='noise must be'):
    planning.plan(net, 0.0, net, 0.0, context, latent, proprio, noise[:1], layout=fx.LAYOUT, cfg=cfg)
  with pytest.raises(ValueError, match='proprio_dim=14'):
    planning.plan(net, 0.0, net, 0.0, context, latent, proprio[:, :9], noise, layout=fx.LAYOUT, cfg=cfg)


SHARDED_SCRIPT = r'''
import json, sys
import jax, numpy as np
from jax.sharding import Mesh, PartitionSpec
from cosmos_jax.policy import planning
from tests.policy import planning_fixture as fx
assert len(jax.devices()) == 8, jax.devices()
cfg = planning.PlanningConfig(num_candidates=8, action_steps=3, future_steps=(1, 3), value_steps=(1, 2, 3))
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
