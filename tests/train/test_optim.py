"""The optimiser recipe: the official learning-rate check values, NaN handling, clipping, AdamW constants."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cosmos_jax.train import optim


def aloha_optim_config():
  return ml_collections.ConfigDict(dict(
      lr=1e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1, clip_norm=1.0, grad_accum_steps=1,
      schedule=dict(warm_up_steps=[2000, 0], cycle_lengths=[20000, 100000000000000], f_start=[1e-6, 0.06],
                    f_max=[1.0, 0.06], f_min=[0.3, 0.06])))


# The ALOHA main run (@18a2acc cosmos_policy/config/experiment/cosmos_policy_experiment_configs.py:
# cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_..., scheduler
# cosmos_policy/_src/imaginaire/functional/lr_scheduler.py:LambdaLinearScheduler) at these steps.
@pytest.mark.parametrize('step, lr', [(0, 1e-10), (1000, 5.0e-5), (2000, 1e-4), (11000, 6.5e-5), (20000, 3.0e-5),
                                      (20001, 6.0e-6), (50000, 6.0e-6), (10**7, 6.0e-6)])
def test_aloha_schedule_matches_official_check_values(step, lr):
  schedule = optim.learning_rate_schedule(aloha_optim_config())
  np.testing.assert_allclose(float(jax.jit(schedule)(step)), lr, rtol=1e-5)


def test_schedule_is_the_official_formula_everywhere():
  """Against a direct transcription of the piecewise rule, over the cycle boundary and inside the warm-up."""
  cfg = aloha_optim_config()
  schedule = jax.jit(jax.vmap(optim.learning_rate_schedule(cfg)))
  steps = np.array([0, 1, 1999, 2000, 2001, 19999, 20000, 20001, 20002, 33333])

  def reference(n):
    if n <= 20000:
      return 1e-6 + (1 - 1e-6) * n / 2000 if n < 2000 else 0.3 + 0.7 * (20000 - n) / 18000
    return 0.06

  np.testing.assert_allclose(np.asarray(schedule(steps)), [1e-4 * reference(n) for n in steps], rtol=1e-5)


def test_schedule_rejects_inconsistent_lists():
  cfg = aloha_optim_config()
  cfg.schedule.f_min = [0.3]
  with pytest.raises(ValueError, match='one entry per cycle'):
    optim.learning_rate_schedule(cfg)


def test_non_finite_gradients_are_zeroed_before_clipping():
  cfg = aloha_optim_config()
  tx = optim.make_optimizer(cfg)
  params = {'w': jnp.ones(4)}
  state = tx.init(params)
  grads = {'w': jnp.array([jnp.nan, jnp.inf, -jnp.inf, 3.0])}
  updates, _ = jax.jit(tx.update)(grads, state, params)
  assert np.all(np.isfinite(np.asarray(updates['w'])))
  # Entries that were non-finite only see weight decay: -lr·wd·p at step 0 (lr = 1e-10).
  np.testing.assert_allclose(np.asarray(updates['w'][:3]), -1e-10 * 0.1, rtol=1e-5)


def test_matches_plain_adamw_with_clipping():
  cfg = aloha_optim_config()
  tx = optim.make_optimizer(cfg)
  reference = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(lambda n: 1e-4 * (1e-6 + (1 - 1e-6) * n / 2000), b1=0.9, b2=0.99, eps=1e-8,
                                      weight_decay=0.1))
  params = {'w': jnp.linspace(-1, 1, 6)}
  s1, s2 = tx.init(params), reference.init(params)
  p1 = p2 = params
  for i in range(3):
    g = {'w': jnp.sin(jnp.arange(6.0) + i) * 5}
    u1, s1 = tx.update(g, s1, p1)
    u2, s2 = reference.update(g, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  np.testing.assert_allclose(np.asarray(p1['w']), np.asarray(p2['w']), rtol=1e-6)
