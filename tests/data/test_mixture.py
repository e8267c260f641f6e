"""The training mixture (cosmos_jax/data/mixture.py): the epoch structure gives the sample-type proportions asked
for, uniform draws over an epoch land in the sections within binomial sampling error, every step of a section is
visited evenly, the world-model coin has its probability, and all of it is deterministic for a seed."""

import chex
import numpy as np
import pytest

from cosmos_jax.data import mixture

ST = mixture.SampleType


@pytest.mark.parametrize('p_d,p_s', [(0.5, 0.5), (0.1, 0.5), (0.7, 0.3), (0.5, 0.9)])
@pytest.mark.parametrize('demos,success,failure', [(3000, 1200, 4500), (500, 9000, 700), (8000, 400, 400)])
def test_epoch_sections_have_the_requested_proportions(p_d, p_s, demos, success, failure):
  e = mixture.EpochStructure.balance(demos, success, failure, p_d, p_s)
  # Integer truncation in the official arithmetic: a few items off at most.
  slack = 3 / min(e.length, e.success_count + e.failure_count)
  assert abs(e.demo_count / e.length - p_d) < slack, e
  assert abs(e.success_count / (e.success_count + e.failure_count) - p_s) < slack, e
  # Upsampling only: no section is shorter than its data (every step is seen each epoch).
  assert e.demo_count >= demos or e.success_count + e.failure_count >= (success + failure) * 0.99, e


def test_epoch_edge_cases():
  assert mixture.EpochStructure.balance(100, 0, 0, 0.5, 0.5) == mixture.EpochStructure(100, 0, 0)  # demos only
  assert mixture.EpochStructure.balance(100, 50, 0, 0.5, 0.5).failure_count == 0  # no failures to draw
  assert mixture.EpochStructure.balance(100, 0, 50, 0.5, 0.5).success_count == 0
  assert mixture.EpochStructure.balance(0, 30, 60, 0.5, 0.5).demo_count == 0
  assert mixture.EpochStructure.balance(100, 30, 60, 1.0, 0.5) == mixture.EpochStructure(100, 0, 0)


@pytest.mark.parametrize('p_d,p_s', [(0.5, 0.5), (0.1, 0.5), (0.7, 0.3)])
def test_uniform_draws_are_within_sampling_error(p_d, p_s):
  demos, success, failure = 1500, 700, 2600
  e = mixture.EpochStructure.balance(demos, success, failure, p_d, p_s)
  n = 20_000
  rng = np.random.default_rng(0)
  kinds = np.array([e.locate(int(i), demos, success, failure)[0] for i in rng.integers(0, e.length, n)])
  expected = {ST.DEMO: e.demo_count / e.length, ST.SUCCESS_ROLLOUT: e.success_count / e.length,
              ST.FAILURE_ROLLOUT: e.failure_count / e.length}
  for kind, p in expected.items():
    sigma = np.sqrt(p * (1 - p) / n)
    got = np.mean(kinds == kind)
    assert abs(got - p) < 4 * sigma + 1e-12, f'{kind.name}: {got:.4f} vs {p:.4f} (4 sigma = {4 * sigma:.4f})'
  # ...and the proportions asked for, up to the epoch's integer rounding.
  assert abs(expected[ST.DEMO] - p_d) < 0.01
  assert abs(expected[ST.SUCCESS_ROLLOUT] - (1 - p_d) * p_s) < 0.01


def test_locate_visits_every_step_evenly():
  demos, success, failure = 7, 5, 3
  e = mixture.EpochStructure.balance(demos, success, failure, 0.5, 0.5)
  counts = {kind: np.zeros(size, int) for kind, size in zip(ST, (demos, success, failure))}
  for index in range(e.length):
    kind, step = e.locate(index, demos, success, failure)
    counts[kind][step] += 1
  for kind, c in counts.items():
    assert c.max() - c.min() <= 1, (kind.name, c)  # modulo upsampling: floor or ceil visits per step
  with pytest.raises(IndexError, match='out of range'):
    e.locate(e.length, demos, success, failure)


def test_world_model_coin_probability_and_determinism():
  for p in (0.5, 0.2):
    rng = np.random.default_rng(1)
    coins = np.array([mixture.world_model_coin(rng, p) for _ in range(20_000)])
    assert abs(coins.mean() - p) < 4 * np.sqrt(p * (1 - p) / coins.size)
  def draws(seed):
    rng = np.random.default_rng(seed)
    return [mixture.world_model_coin(rng) for _ in range(50)]

  assert draws(7) == draws(7) != draws(8)
  assert 0 < sum(draws(7)) < 50


def test_step_index_and_targets():
  table = mixture.step_index([3, 1, 2])
  chex.assert_shape(table, (6, 2))
  np.testing.assert_array_equal(table, [[0, 0], [0, 1], [0, 2], [1, 0], [2, 0], [2, 1]])
  assert mixture.future_step(3, 50, 40) == 39 and mixture.future_step(3, 5, 40) == 8
  actions = np.arange(12.0).reshape(6, 2)
  chunk = mixture.action_chunk(actions, 4, 4)
  chex.assert_shape(chunk, (4, 2))
  np.testing.assert_array_equal(chunk, [[8, 9], [10, 11], [10, 11], [10, 11]])  # padded with the last action
  success = mixture.value_returns(4, 1.0, 0.5)
  chex.assert_type(success, np.float32)
  np.testing.assert_allclose(success, [2 * 0.125 - 1, 2 * 0.25 - 1, 2 * 0.5 - 1, 1.0])
  np.testing.assert_array_equal(mixture.value_returns(4, 0.0, 0.5), -1.0)
  with pytest.raises(ValueError, match='at least one step'):
    mixture.value_returns(0, 1.0, 0.99)
