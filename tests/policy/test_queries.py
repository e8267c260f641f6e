"""The planning queries (world model, V(s'), Q(s,a)), their ensembles and every aggregation rule against the official
code (golden cases policy_queries_*, one best-of-N candidate of the official deploy flow).

Runs are read from each case's config.json, so a new case or run needs no code change. Every query starts from the
golden's own previous latent, so a failure points at the stage that diverges. Float32 with 'highest' matmul
precision; tolerances are the action sampler's (tests/policy/test_sampler.py).
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.data import decode
from cosmos_jax.data import transforms
from cosmos_jax.nn import vae
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import inference
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import planning
from cosmos_jax.policy import sampler
from cosmos_jax.policy import slots
from cosmos_jax.policy import video as video_lib
from tests import parity
from tests.policy import golden_models

CASES = parity.golden_cases('policy_queries_')
LATENT_REL_L2 = 1e-5
VALUE_REL_L2 = 1e-5
ENTRY_POINT_MODES = {'get_future_state_prediction': 'world_model', 'get_value_prediction': 'value',
                     'get_qvalue_prediction': 'q_value'}
MASK_FLAGS = {'value': 'cfg_mask_current_state_action_for_value_prediction',
              'q_value': 'cfg_mask_future_state_for_qvalue_prediction'}

last = golden_models.to_last


@functools.lru_cache(maxsize=None)
def case(folder):
  config = parity.load_config(folder)
  io = dict(np.load(folder / 'io.npz'))
  layout = layout_lib.get_layout(config['case_definition']['robot'])
  stats = {k: np.asarray(v, np.float64) for k, v in config['stats_json'].items()}
  dit_cfg, dit_params = golden_models.tiny_dit()
  return dict(config=config, io=io, layout=layout, stats=stats, net=diffusion.DiTNet(dit_cfg), params=dit_params,
              context=jnp.asarray(io['in__t5_embedding_bf16_as_fp32']),
              proprio=inference.normalized_proprio(io['in__obs__proprio'], stats, layout))


def single_runs():
  out = []
  for param in CASES:
    config = parity.load_config(param.values[0])
    out += [pytest.param(param.values[0], run, id=f'{param.id}-{run}') for run, spec in config['runs'].items()
            if 'num_steps_requested' in spec]
  return out


def run_spec(c, run):
  spec = c['config']['runs'][run]
  mode = ENTRY_POINT_MODES[spec['entry_point']]
  return spec, mode, bool(spec.get(MASK_FLAGS.get(mode), False))


@functools.lru_cache(maxsize=None)
def our_run(folder, run):
  c = case(folder)
  spec, mode, masked = run_spec(c, run)
  previous = last(c['io'][spec['previous_generated_latent']])
  noise = sampler.parity_noise(spec['seed'], previous.shape)
  with jax.default_matmul_precision('highest'):
    return inference.jit_conditioned_query(c['net'], c['params'], c['context'], previous, c['proprio'], noise,
                                           layout=c['layout'], mode=mode, num_steps=spec['num_steps_requested'],
                                           masked=masked, trace=True)


_future_images = jax.jit(inference.future_images, static_argnames=('vae_cfg', 'layout'))


def decode_futures(folder, sample):
  """Future images of a sample, restoring the action query's pre-injection latent (official undo_latent_injection)."""
  c = case(folder)
  vae_cfg, vae_params = golden_models.small_vae()
  with jax.default_matmul_precision('highest'):
    images = _future_images(vae_params, vae_cfg=vae_cfg, sample=jnp.asarray(sample),
                            orig_latent=jnp.asarray(last(c['io']['act__orig_clean_latent_frames'])),
                            layout=c['layout'])
  return {k: np.asarray(v[0]) for k, v in images.items()}


def assert_images_close(ours, expected, name):
  diff = np.abs(np.asarray(ours, np.int32) - np.asarray(expected, np.int32))
  # uint8 truncation of a float can flip by one where the float error crosses an integer.
  assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (
      f'{name}: max abs error {diff.max()}, fraction of differing pixels {(diff > 0).mean():.4f}')


def assert_values_close(ours, expected, name, rel_l2=VALUE_REL_L2):
  """Values with NaN in the same places (official lcb of one member); finite entries within tolerance."""
  ours, expected = np.asarray(ours, np.float64), np.asarray(expected, np.float64)
  assert ours.shape == expected.shape, f'{name}: shape {ours.shape} != expected {expected.shape}'
  np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected), err_msg=f'{name}: NaN pattern differs')
  finite = ~np.isnan(expected)
  parity.assert_close(ours[finite], expected[finite], name=name, rel_l2=rel_l2)


# Inputs -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('folder', CASES)
def test_query_inputs(folder):
  """Proprio normalisation, the shared initial noise and the action latent the queries start from."""
  c = case(folder)
  io, layout = c['io'], c['layout']
  parity.assert_close(c['proprio'][0], io['act__proprio_normalized_float64'], name='normalised proprio', rel_l2=0.0,
                      max_abs=0.0)
  parity.assert_close(slots.round_to_bf16(c['proprio']), io['act__data_batch__proprio_bf16_as_fp32'],
                      name='proprio as the batch holds it', rel_l2=0.0, max_abs=0.0)
  seed = c['config']['seed']['seed']
  parity.assert_close(sampler.parity_noise(seed, last(io['noise__seed196']).shape),
                      last(io['noise__seed196']) * np.float32(80), name='initial noise', rel_l2=0.0, max_abs=0.0)
  # The fixed chunk overwrites the action slot of the action sample (tiled cyclically, truncated).
  injected = slots.inject_actions(jnp.asarray(last(io['act__sample'])), layout,
                                  jnp.asarray(io['in__action_chunk_normalized']))
  parity.assert_close(injected, last(io['in__action_latent']), name='action latent', rel_l2=0.0, max_abs=0.0)


@pytest.mark.parametrize('folder', CASES)
def test_action_sample(folder):
  """The action query the candidate starts from (seed base + q), from the golden's preprocessed images."""
  c = case(folder)
  io, layout, config = c['io'], c['layout'], c['config']
  vae_cfg, vae_params = golden_models.small_vae()
  images = io['act__preprocessed_camera_images']  # in the layout's camera order
  fields = inference.observation_image_fields(layout)
  raw = np.stack([io[f'in__obs__{fields[camera]}'] for camera in layout.cameras])
  parity.assert_close(transforms.test_time_transform(decode.resize_square(raw, images.shape[1])), images,
                      name='preprocessed camera images', rel_l2=1e-2, max_abs=1)
  camera_images = {camera: jnp.asarray(images[i][None]) for i, camera in enumerate(layout.cameras)}
  video = video_lib.policy_pixel_sequence(inference.policy_video_items(layout, camera_images), *images.shape[1:3])
  with jax.default_matmul_precision('highest'):
    latent = vae.encode(vae_params, vae_cfg, video_lib.pixels_to_unit(video))
    query = config['action_query']
    out = inference.jit_action_query(c['net'], c['params'], c['context'], latent, c['proprio'],
                                     sampler.parity_noise(query['seed'], latent.shape), layout=layout,
                                     num_steps=query['num_denoising_steps_action'])
  proprio_slot = layout.index(layout_lib.CURRENT_PROPRIO)
  image_slots = [i for i in range(layout.state_t) if i != proprio_slot]
  parity.assert_close(np.asarray(latent)[:, image_slots], last(io['act__orig_clean_latent_frames'])[:, image_slots],
                      name='VAE latent', rel_l2=LATENT_REL_L2)
  parity.assert_close(out['sample'], last(io['act__sample']), name='action sample', rel_l2=LATENT_REL_L2)
  parity.assert_close(inference.unnormalized_actions(out['actions'], c['stats'])[0], io['act__actions_unnormalized'],
                      name='actions', rel_l2=LATENT_REL_L2)


# Single-sample runs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize('folder,run', single_runs())
def test_single_sample_run(folder, run):
  c = case(folder)
  io = c['io']
  spec, mode, _ = run_spec(c, run)
  out = our_run(folder, run)
  g = lambda name: io[f'{run}__{name}']
  num_steps = spec['num_steps_requested']

  # Conditioning: which slots are clean, and that they are the previous latent (proprio already injected there).
  mask = np.asarray(out['mask'])
  np.testing.assert_array_equal(mask, g('condition_mask_B_1_T_H_W')[:, 0, :, 0, 0], err_msg=f'{run} mask')
  assert np.flatnonzero(mask[0]).tolist() == spec['conditioned_latent_frames'], run
  clean = spec['conditioned_latent_frames']
  parity.assert_close(np.asarray(out['gt_frames'])[:, clean], last(io[spec['previous_generated_latent']])[:, clean],
                      name=f'{run} clean frames', rel_l2=LATENT_REL_L2)

  # Sampler schedule and every recorded denoiser call.
  np.testing.assert_allclose(sampler.schedule(num_steps), g('sigmas_L_get_rev_ts'), rtol=1e-15)
  calls = out['trajectory']['calls']
  assert calls['sigma'].shape[0] == spec['denoiser_calls'] == sampler.num_calls(num_steps), run
  np.testing.assert_allclose(np.asarray(calls['sigma']), spec['sigmas_per_call'], rtol=1e-7)
  for j in range(spec['denoiser_calls']):
    key = lambda name: f'{run}__call{j}__{name}'
    parity.assert_close(calls['sigma'][j], io[key('sigma')][0], name=f'{run} call{j} sigma', rel_l2=1e-7)
    parity.assert_close(calls['aux']['timesteps'][j], io[key('net_in__timesteps_B_T')],
                        name=f'{run} call{j} timesteps', rel_l2=1e-6)
    for name, ours in (('xt', calls['x_in'][j]), ('net_in__x_B_C_T_H_W', calls['aux']['net_in'][j]),
                       ('net_out', calls['aux']['net_out'][j]), ('x0_pred', calls['x0'][j])):
      if key(name) in io:
        parity.assert_close(ours, last(io[key(name)]), name=f'{run} call{j} {name}', rel_l2=LATENT_REL_L2)
  parity.assert_close(out['sample'], last(g('sample')), name=f'{run} sample', rel_l2=LATENT_REL_L2)

  # What the query returns.
  if mode == 'world_model':
    for name, image in decode_futures(folder, out['sample']).items():
      assert_images_close(image, g(f'future_image_prediction__{name}'), f'{run} {name}')
  else:
    parity.assert_close(out['value_raw'], g('value_raw_mean_readout'), name=f'{run} raw value', rel_l2=VALUE_REL_L2)
    parity.assert_close(out['value'][0], g('value_prediction_01_clamped'), name=f'{run} value', rel_l2=VALUE_REL_L2)
    assert float(out['value'][0]) == pytest.approx(spec['value_prediction'], rel=VALUE_REL_L2)


@pytest.mark.parametrize('folder', CASES)
def test_equal_samples(folder):
  """Samples the official code gives bit-identically (same conditioning, noise and schedule) are equal here too."""
  c = case(folder)
  runs = {run for run, spec in c['config']['runs'].items() if 'num_steps_requested' in spec}
  for a, b in c['config']['equal_samples']['pairs']:
    run_a, run_b = (name.split('__')[0] for name in (a, b))
    if run_a in runs and run_b in runs:
      parity.assert_close(our_run(folder, run_a)['sample'], our_run(folder, run_b)['sample'],
                          name=f'{run_a} vs {run_b}', rel_l2=0.0, max_abs=0.0)


# Ensembles ----------------------------------------------------------------------------------------------------


def ensemble_config(c, which: str) -> planning.PlanningConfig:
  """One candidate's ensembles as a PlanningConfig, from the case's ensemble definitions (two candidates, so that
  candidate q = 1 has the golden's seeds base + 1 + m)."""
  d, runs = c['config']['case_definition'], c['config']['runs']
  assert c['config']['seed']['query_idx'] == 1 and c['config']['seed']['base_seed'] == d['base_seed']
  common = dict(num_candidates=2, base_seed=d['base_seed'], predict_future=True,
                future_steps=planning.ensemble_steps(d['wm_ensemble']['steps'], d['wm_ensemble']['num']),
                future_aggregation=d['wm_ensemble']['aggregation'], value_ensemble=True)
  if which == 'value':
    return planning.PlanningConfig(
        **common, value_source='future_state', aggregation=d['value_ensemble']['aggregation'],
        value_steps=planning.ensemble_steps(d['value_ensemble']['steps'], d['value_ensemble']['num']),
        value_of_future_state=runs['vsp_ens']['cfg_mask_current_state_action_for_value_prediction'])
  return planning.PlanningConfig(
      **common, value_source='q_value', aggregation=d['qvalue_ensemble']['aggregation'],
      value_steps=planning.ensemble_steps(d['qvalue_ensemble']['steps'], d['qvalue_ensemble']['num']),
      q_value_mask_future_state=runs['q_ens']['cfg_mask_future_state_for_qvalue_prediction'])


@functools.lru_cache(maxsize=None)
def batched_ensembles(folder, which):
  """The planner's batched ensembles (members folded into the batch) for candidates q = 0, 1 from the golden's
  action latent; candidate 1 is the golden's."""
  c = case(folder)
  cfg = ensemble_config(c, which)
  action_latent = last(c['io']['in__action_latent'])
  bank = planning.noise_bank(cfg, action_latent.shape)
  tile = lambda x: jnp.broadcast_to(jnp.asarray(x), (2,) + x.shape[1:])
  with jax.default_matmul_precision('highest'):
    out = jax.jit(functools.partial(planning.score_action_samples, c['net'], layout=c['layout'], cfg=cfg))(
        c['params'], tile(c['context']), tile(action_latent), jnp.zeros(2), tile(c['proprio']), bank['noise'])
  return cfg, bank, jax.tree.map(np.asarray, out)


@pytest.mark.parametrize('folder', CASES)
def test_world_model_ensemble(folder):
  """Members (seed + i, linspace step counts) one by one and folded into the planner's batch, their images and
  the returned (averaged, rounded half to even) images."""
  c = case(folder)
  io, spec = c['io'], c['config']['runs']['wm_ens']
  cfg, bank, out = batched_ensembles(folder, 'value')
  assert list(cfg.future_steps) == list(io['wm_ens__num_steps']) == spec['member_num_steps']
  np.testing.assert_array_equal(bank['seeds'][1, :len(cfg.future_steps)], io['wm_ens__seeds'])
  action_latent = last(io['in__action_latent'])
  members = []
  for i, steps in enumerate(cfg.future_steps):
    g = lambda name: io[f'wm_ens__member{i}__{name}']
    with jax.default_matmul_precision('highest'):
      single = inference.jit_world_model_query(c['net'], c['params'], c['context'], action_latent, c['proprio'],
                                               sampler.parity_noise(int(io['wm_ens__seeds'][i]), action_latent.shape),
                                               layout=c['layout'], num_steps=steps)
    parity.assert_close(single, last(g('sample')), name=f'wm_ens member{i} sample', rel_l2=LATENT_REL_L2)
    parity.assert_close(out['futures'][i][1:2], last(g('sample')), name=f'wm_ens member{i} sample (batched)',
                        rel_l2=LATENT_REL_L2)
    images = decode_futures(folder, single)
    for name, image in images.items():
      assert_images_close(image, g(f'future_image_prediction__{name}'), f'wm_ens member{i} {name}')
    members.append({k: jnp.asarray(v) for k, v in images.items()})
  returned = inference.aggregate_future_images(members, spec['future_state_ensemble_aggregation_scheme'])
  for name, image in returned.items():
    assert_images_close(image, io[f'wm_ens__future_image_prediction_average__{name}'], f'wm_ens returned {name}')
  # 'last' returns the member with the most steps.
  for name, image in inference.aggregate_future_images(members, 'last').items():
    np.testing.assert_array_equal(image, members[-1][name])


@pytest.mark.parametrize('folder', CASES)
def test_value_ensemble(folder):
  """V(s') ensemble: V values per future-state member (seeds restart at the candidate's seed for each), one by one
  from the golden's future samples and batched from ours, and the aggregated value."""
  c = case(folder)
  io, spec = c['io'], c['config']['runs']['vsp_ens']
  cfg, bank, out = batched_ensembles(folder, 'value')
  v = len(cfg.value_steps)
  assert list(cfg.value_steps) * len(cfg.future_steps) == list(io['vsp_ens__num_steps']) == spec['num_steps']
  np.testing.assert_array_equal(np.tile(bank['seeds'][1, :v], len(cfg.future_steps)), io['vsp_ens__seeds'])
  single = []
  for k, (member, seed, steps) in enumerate(zip(io['vsp_ens__future_state_member'], io['vsp_ens__seeds'],
                                                 io['vsp_ens__num_steps'])):
    future = last(io[f'wm_ens__member{member}__sample'])
    with jax.default_matmul_precision('highest'):
      single.append(inference.jit_conditioned_query(
          c['net'], c['params'], c['context'], future, c['proprio'], sampler.parity_noise(int(seed), future.shape),
          layout=c['layout'], mode='value', num_steps=int(steps), masked=cfg.value_of_future_state))
  values = np.stack([np.asarray(r['value']) for r in single])
  raw = np.stack([np.asarray(r['value_raw']) for r in single])
  assert_values_close(raw, io['vsp_ens__value_raw_mean_readouts'], 'vsp_ens raw values')
  assert_values_close(values, io['vsp_ens__value_predictions_01_clamped'], 'vsp_ens values')
  assert_values_close(out['values'][1], io['vsp_ens__value_predictions_01_clamped'][:, 0], 'vsp_ens values (batched)')
  assert_values_close(inference.aggregate_values(values[:, 0], cfg.aggregation),
                      io[f'vsp_ens__value_prediction_{cfg.aggregation}'], f'vsp_ens {cfg.aggregation}')
  assert_values_close(out['score'][1], io[f'vsp_ens__value_prediction_{cfg.aggregation}'],
                      f'vsp_ens {cfg.aggregation} (batched)')
  assert float(out['score'][1]) == pytest.approx(spec['value_prediction'], rel=VALUE_REL_L2)


@pytest.mark.parametrize('folder', CASES)
def test_q_value_ensemble(folder):
  """Q(s, a) ensemble with the future state masked (seeds + i, linspace steps) and its lcb aggregate."""
  c = case(folder)
  io, spec = c['io'], c['config']['runs']['q_ens']
  cfg, bank, out = batched_ensembles(folder, 'q_value')
  assert list(cfg.value_steps) == list(io['q_ens__num_steps']) == spec['num_steps']
  np.testing.assert_array_equal(bank['seeds'][1, :len(cfg.value_steps)], io['q_ens__seeds'])
  action_latent = last(io['in__action_latent'])
  values, raw = [], []
  for seed, steps in zip(io['q_ens__seeds'], io['q_ens__num_steps']):
    with jax.default_matmul_precision('highest'):
      r = inference.jit_conditioned_query(c['net'], c['params'], c['context'], action_latent, c['proprio'],
                                          sampler.parity_noise(int(seed), action_latent.shape), layout=c['layout'],
                                          mode='q_value', num_steps=int(steps), masked=cfg.q_value_mask_future_state)
    values.append(np.asarray(r['value']))
    raw.append(np.asarray(r['value_raw']))
  assert_values_close(np.stack(raw), io['q_ens__value_raw_mean_readouts'], 'q_ens raw values')
  assert_values_close(np.stack(values), io['q_ens__value_predictions_01_clamped'], 'q_ens values')
  assert_values_close(out['values'][1], io['q_ens__value_predictions_01_clamped'][:, 0], 'q_ens values (batched)')
  assert_values_close(out['score'][1], io[f'q_ens__value_prediction_{cfg.aggregation}'],
                      f'q_ens {cfg.aggregation} (batched)')
  assert float(out['score'][1]) == pytest.approx(spec['value_prediction'], rel=VALUE_REL_L2)


# Aggregation on fixed inputs ----------------------------------------------------------------------------------


def aggregation_cases():
  out = []
  for param in CASES:
    config = parity.load_config(param.values[0])
    for name, spec in config['aggregation']['value_sets'].items():
      out += [pytest.param(param.values[0], name, scheme, id=f'{param.id}-{name}-{scheme}') for scheme in spec['outputs']]
  return out


@pytest.mark.parametrize('folder,value_set,scheme', aggregation_cases())
def test_value_aggregation(folder, value_set, scheme):
  """Every official scheme on edge cases: strict float32 threshold (0.05f is no success), success ratio exactly
  0.5, zero std, lcb < 0 and values > 1 (clamped), and NaN from the Bessel-corrected std of one member."""
  c = case(folder)
  io, spec = c['io'], c['config']['aggregation']['value_sets'][value_set]
  inputs = io[spec['inputs']]
  inputs = inputs[:, 0] if value_set in ('vsp_ens', 'q_ens') else inputs.T  # -> [B, K]
  inputs = inputs.reshape(-1, spec['K'])
  ours = np.asarray(inference.aggregate_values(jnp.asarray(inputs, jnp.float32), scheme))
  expected = io[f'agg_value__{value_set}__{scheme}']
  assert ours.dtype == expected.dtype == np.float32
  assert_values_close(ours, expected, f'{value_set} {scheme}', rel_l2=1e-6)
  assert_values_close(ours, np.asarray(spec['outputs'][scheme], np.float64), f'{value_set} {scheme} (config)',
                      rel_l2=1e-6)


def image_average_cases():
  return [pytest.param(p.values[0], m.group(1), id=f'{p.id}-{m.group(1)}') for p in CASES
          for m in map(re.compile(r'agg_image__(\w+)__members').match, sorted(np.load(p.values[0] / 'io.npz').files)) if m]


@pytest.mark.parametrize('folder,image_set', image_average_cases())
def test_image_average(folder, image_set):
  """Per-pixel means ending in .5 round half to even; thirds round to nearest."""
  io = case(folder)['io']
  members = io[f'agg_image__{image_set}__members']
  ours = inference.average_images([{'image': jnp.asarray(m)} for m in members])['image']
  np.testing.assert_array_equal(np.asarray(ours), io[f'agg_image__{image_set}__average'])


@pytest.mark.parametrize('folder', CASES)
@pytest.mark.parametrize('scheme', planning.DEPTH_AGGREGATIONS)
def test_depth_aggregation(folder, scheme):
  io = case(folder)['io']
  ours = planning.aggregate_depth(jnp.asarray(io['agg_depth__values_by_depth_Q_D'], jnp.float32), scheme)
  parity.assert_close(ours, io[f'agg_depth__{scheme}'], name=f'depth {scheme}', rel_l2=1e-6)


def best_of_n_cases():
  return [pytest.param(p.values[0], name, id=f'{p.id}-{name}') for p in CASES
          for name in parity.load_config(p.values[0])['aggregation']['best_of_n']['sets']]


@pytest.mark.parametrize('folder,value_set', best_of_n_cases())
def test_best_of_n_selection(folder, value_set):
  """The base seed's candidate is kept unless another is strictly better; among tied maxima the first wins."""
  c = case(folder)
  io, spec = c['io'], c['config']['aggregation']['best_of_n']['sets'][value_set]
  values = io[f'agg_best_of_n__{value_set}__values']
  chosen = int(planning.select(jnp.asarray(values, jnp.float32)))
  assert chosen == spec['selected_query_idx'], (value_set, values, chosen)
  assert spec['base_seed'] + chosen == int(io[f'agg_best_of_n__{value_set}__selected_seed'])
  assert values[chosen] == io[f'agg_best_of_n__{value_set}__selected_value']
