"""Preconditioning, conditioning, sigma sampling and the training loss; golden parity on policy_loss_* cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.nn import vae
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import masks
from cosmos_jax.policy import video as video_lib
from tests import parity
from tests.policy import golden_models

ALOHA = layout_lib.get_layout('aloha')


def toy_net(params, x, timesteps, context, condition_mask):
  """A stand-in denoiser: depends on every input so that wrong wiring shows."""
  return jnp.tanh(x * params['w'] + timesteps[:, :, None, None, None] + context.mean() + condition_mask)


TOY_PARAMS = {'w': jnp.float32(0.7)}


def toy_batch(b, key=0):
  ks = jax.random.split(jax.random.key(key), 4)
  u = lambda k, s: jax.random.uniform(k, s, minval=-1, maxval=1)
  return {'actions': u(ks[0], (b, 50, 14)), 'proprio': u(ks[1], (b, 14)), 'future_proprio': u(ks[2], (b, 14)),
          'value_function_return': u(ks[3], (b,)), 'rollout_data_mask': jnp.array([0, 1, 1][:b]),
          'world_model_sample_mask': jnp.array([0, 1, 0][:b]), 'value_function_sample_mask': jnp.array([0, 0, 1][:b])}


def test_scaling():
  c_skip, c_out, c_in, c_noise = diffusion.rectified_flow_scaling(jnp.float32(4.0))
  np.testing.assert_allclose([c_skip, c_out, c_in, c_noise], [0.2, -0.8, 0.2, 0.8], rtol=1e-6)
  np.testing.assert_allclose(diffusion.loss_weight(jnp.float32(4.0)), 25 / 16, rtol=1e-6)


def test_denoise_conditioning_slots():
  key = jax.random.key(1)
  xt, gt = jax.random.normal(key, (2, 11, 2, 2, 16)), jax.random.normal(jax.random.key(2), (2, 11, 2, 2, 16))
  mask = masks.inference_mask(ALOHA, 'world_model', 2)
  seen = {}

  def spy(params, x, timesteps, context, condition_mask):
    seen.update(x=x, timesteps=timesteps, condition_mask=condition_mask)
    return toy_net(params, x, timesteps, context, condition_mask)

  sigma = jnp.array([3.0, 50.0])
  x0 = diffusion.denoise(spy, TOY_PARAMS, jnp.zeros((2, 1, 4)), xt, sigma, gt, mask)
  given = mask[0] > 0
  np.testing.assert_array_equal(np.asarray(x0)[:, given], np.asarray(gt)[:, given])
  np.testing.assert_array_equal(np.asarray(seen['x'])[:, given], np.asarray(gt)[:, given])
  t = np.asarray(sigma / (1 + sigma))
  np.testing.assert_allclose(np.asarray(seen['x'])[:, ~given], (1 - t)[:, None, None, None, None] *
                             np.asarray(xt)[:, ~given], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(seen['timesteps'])[:, given], 0.0)
  np.testing.assert_allclose(np.asarray(seen['timesteps'])[:, ~given], np.broadcast_to(t[:, None], (2, 5)),
                             rtol=1e-6)
  assert seen['condition_mask'].shape == (2, 11, 2, 2, 1)


def test_weighted_x0_loss_is_velocity_loss():
  """lambda(sigma) (x0 - x0_pred)^2 = (F - (eps - x0))^2 on generated slots (@18a2acc
  cosmos_policy/models/policy_text2world_model.py:CosmosPolicyDiffusionModel.compute_loss_with_epsilon_and_sigma)."""
  b = 3
  latent = jax.random.normal(jax.random.key(3), (b, 11, 8, 8, 16))
  sigma, eps = diffusion.draw_sigma_and_noise(jax.random.key(4), latent.shape)
  _, aux = diffusion.training_loss(toy_net, TOY_PARAMS, jnp.zeros((b, 1, 4)), latent, toy_batch(b), sigma, eps,
                                   ALOHA, with_intermediates=True)
  velocity_err = (aux['net_out'] - (eps - aux['x0'])) ** 2
  generated = np.asarray(aux['mask']) == 0
  np.testing.assert_allclose(np.asarray(aux['edm_loss_per_element'])[generated], np.asarray(velocity_err)[generated],
                             rtol=2e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(aux['edm_loss_per_element'])[~generated], 0.0)


def test_training_sigma_distribution():
  n, state_t = 40000, 11
  sigma = np.asarray(diffusion.sample_training_sigma(jax.random.key(5), n, state_t)) / np.sqrt(state_t)
  in_uniform = (sigma >= 1) & (sigma <= 85)
  # Mixture CDF at a few points: 0.7 * Phi((ln s - ln 4)/1.2) + 0.3 * U(1, 85).
  from math import erf, log, sqrt
  for s in (2.0, 4.0, 13.0, 40.0):
    expected = 0.7 * 0.5 * (1 + erf((log(s) - log(4)) / (1.2 * sqrt(2)))) + 0.3 * (s - 1) / 84
    assert abs((sigma <= s).mean() - expected) < 0.01, (s, (sigma <= s).mean(), expected)
  assert in_uniform.mean() > 0.3


def test_loss_masking_ablation_flag():
  """`mask_loss_for_action_future_state_prediction` (the no-auxiliary-targets ablation) keeps only the action slot
  for demo samples, the future state for world-model samples and the value for value samples."""
  cfg = diffusion.DiffusionConfig(mask_loss_for_action_future_state_prediction=True)
  b = 3
  m = np.asarray(diffusion.loss_mask(ALOHA, jnp.array([0, 1, 1]), jnp.array([0, 1, 0]), jnp.array([0, 0, 1]), cfg))
  assert [list(np.flatnonzero(r)) for r in m] == [[5], [6, 7, 8, 9], [10]]
  latent = jax.random.normal(jax.random.key(6), (b, 11, 8, 8, 16))
  sigma, eps = diffusion.draw_sigma_and_noise(jax.random.key(7), latent.shape)
  args = (toy_net, TOY_PARAMS, jnp.zeros((b, 1, 4)), latent, toy_batch(b), sigma, eps, ALOHA)
  full, aux = diffusion.training_loss(*args, with_intermediates=True)
  ablated, _ = diffusion.training_loss(*args, cfg)
  expected = (np.asarray(aux['edm_loss_per_element']) * m[:, :, None, None, None]).mean() * 10
  np.testing.assert_allclose(ablated, expected, rtol=1e-6)
  assert float(ablated) < float(full)
  planning = diffusion.DiffusionConfig(mask_current_state_action_for_value_prediction=True)
  m = np.asarray(diffusion.loss_mask(ALOHA, jnp.array([0, 1, 1]), jnp.array([0, 1, 0]), jnp.array([0, 0, 1]),
                                     planning))
  assert m[:2].min() == 1 and list(np.flatnonzero(m[2])) == [10]
  with pytest.raises(ValueError, match='mutually exclusive'):
    diffusion.DiffusionConfig(mask_loss_for_action_future_state_prediction=True,
                              mask_value_prediction_loss_for_policy_prediction=True)


def test_bad_training_batch():
  b = 2
  latent = jnp.zeros((b, 11, 8, 8, 16))
  batch = toy_batch(b)
  batch['proprio'] = jnp.zeros((b, 9))
  with pytest.raises(ValueError, match='proprio_dim=14'):
    diffusion.training_loss(toy_net, TOY_PARAMS, jnp.zeros((b, 1, 4)), latent, batch, jnp.ones(b), latent, ALOHA)
  batch = toy_batch(b)
  del batch['value_function_return']
  with pytest.raises(ValueError, match='value_function_return'):
    diffusion.training_loss(toy_net, TOY_PARAMS, jnp.zeros((b, 1, 4)), latent, batch, jnp.ones(b), latent, ALOHA)
  with pytest.raises(ValueError, match='9 slots but the latent has T=11'):
    diffusion.training_loss(toy_net, TOY_PARAMS, jnp.zeros((b, 1, 4)), latent, toy_batch(b), jnp.ones(b), latent,
                            layout_lib.get_layout('libero'))


# Golden parity ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def encoded_latent(folder):
  io = np.load(folder / 'io.npz')
  vae_cfg, vae_params = golden_models.small_vae()
  video = video_lib.pixels_to_unit(jnp.asarray(np.moveaxis(io['in__video'], 1, -1)))
  with jax.default_matmul_precision('highest'):
    return np.asarray(vae.encode(vae_params, vae_cfg, video))


@pytest.mark.parametrize('folder', parity.golden_cases('policy_loss_'))
def test_loss_matches_golden(folder):
  config = parity.load_config(folder)
  io = dict(np.load(folder / 'io.npz'))
  layout = layout_lib.get_layout(config['batch']['layout'])
  dit_cfg, dit_params = golden_models.tiny_dit()
  net = diffusion.DiTNet(dit_cfg)
  latent = encoded_latent(folder)
  batch = {k: io[f'in__{k}'] for k in diffusion.BATCH_KEYS}
  to_last = golden_models.to_last
  for variant, spec in config['variants'].items():
    resolved = spec['model_config_resolved']
    cfg = diffusion.DiffusionConfig(**{k: resolved[k] for k in (
        'mask_current_state_action_for_value_prediction', 'mask_future_state_for_qvalue_prediction',
        'mask_loss_for_action_future_state_prediction', 'mask_value_prediction_loss_for_policy_prediction',
        'action_loss_multiplier', 'sigma_conditional', 'loss_scale')})
    assert resolved['sde']['p_mean'] == pytest.approx(cfg.p_mean) and resolved['sde']['p_std'] == cfg.p_std
    assert (resolved['sde']['uniform_lower'], resolved['sde']['uniform_upper']) == (cfg.uniform_lower,
                                                                                    cfg.uniform_upper)
    sigma = io[f'{variant}__sigma_B_1'][:, 0]
    np.testing.assert_allclose(sigma, io[f'{variant}__sde_sample_t_sigma'] * np.sqrt(layout.state_t), rtol=1e-6)
    fn = jax.jit(functools.partial(diffusion.training_loss, net, layout=layout, cfg=cfg, with_intermediates=True))
    with jax.default_matmul_precision('highest'):
      loss, aux = fn(dit_params, io['in__t5_text_embeddings'], latent, batch, sigma,
                     to_last(io[f'{variant}__epsilon']))
    eps_pred = (aux['xt'] - aux['x0_pred']) / sigma[:, None, None, None, None]
    # The official injects into x0 in place, so the recorded 'before injection' latent aliases the injected x0
    # (identical arrays); the true pre-injection latent is the conditioning backup `orig_gt_frames`.
    np.testing.assert_array_equal(io[f'{variant}__vae_latent_x0_before_injection'],
                                  io[f'{variant}__x0_after_injection'])
    pairs = {
        'vae_latent_x0_before_injection': aux['x0'],
        'condition_orig_gt_frames_before_action_injection': latent,
        'x0_after_injection': aux['x0'],
        'condition_gt_frames': aux['gt_frames'],
        'xt': aux['xt'],
        'net_in__x_B_C_T_H_W': aux['net_in'],
        'net_out': aux['net_out'],
        'x0_pred': aux['x0_pred'],
        'eps_pred': eps_pred,
        'pred_mse_per_element': (aux['x0'] - aux['x0_pred']) ** 2,
        'edm_loss_per_element': aux['edm_loss_per_element'],
        'kendall_loss_per_element': aux['loss_per_element'],
    }
    for name, ours in pairs.items():
      parity.assert_close(ours, to_last(io[f'{variant}__{name}']), name=f'{variant} {name}', rel_l2=1e-5)
    parity.assert_close(masks.expand(aux['mask'], latent.shape), to_last(io[f'{variant}__condition_mask_B_1_T_H_W']),
                        name=f'{variant} mask', rel_l2=0.0, max_abs=0.0)
    parity.assert_close(masks.expand(aux['mask'], latent.shape),
                        to_last(io[f'{variant}__net_in__condition_video_input_mask_B_C_T_H_W']),
                        name=f'{variant} net mask', rel_l2=0.0, max_abs=0.0)
    parity.assert_close(aux['timesteps'], io[f'{variant}__net_in__timesteps_B_T'], name=f'{variant} timesteps',
                        rel_l2=1e-6, max_abs=1e-6)
    # The net's text input is the batch's embedding; the padding mask is all zeros (our DiT's None).
    np.testing.assert_array_equal(io[f'{variant}__net_in__crossattn_emb'], io['in__t5_text_embeddings'])
    assert not io[f'{variant}__net_in__padding_mask'].any()
    parity.assert_close(aux['weights'], io[f'{variant}__weights_per_sigma_B_1'][:, 0], name='weights', rel_l2=1e-6)
    parity.assert_close(loss, io[f'{variant}__loss'], name=f'{variant} loss', rel_l2=1e-5)
    for key in io:
      if key.startswith(f'{variant}__diag__'):
        stem = key[len(f'{variant}__diag__'):]
        parity.assert_close(aux[stem], io[key], name=f'{variant} {stem}', rel_l2=1e-5)
