"""PolicyRunner: validation of every request field, the response against the policy functions composed by hand,
and best-of-N planning responses."""

import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.convert import dit_rules
from cosmos_jax.convert import library as convert_lib
from cosmos_jax.convert import torch_io
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import transforms
from cosmos_jax.nn import vae
from cosmos_jax.policy import inference
from cosmos_jax.policy import planning
from cosmos_jax.policy import sampler
from cosmos_jax.serve import runner as runner_lib
from tests.serve.conftest import IMAGE_SIZE, TASK, make_observation

S = IMAGE_SIZE


def _with(obs, **changes):
  out = dict(obs)
  for key, value in changes.items():
    if value is KeyError:
      del out[key]
    else:
      out[key] = value
  return out


def _far_proprio(runner):
  lo, hi = runner.statistics['proprio_min'], runner.statistics['proprio_max']
  proprio = 0.5 * (lo + hi)
  proprio[3] = hi[3] + 5 * (hi[3] - lo[3])
  return proprio


INVALID = [
    ('missing field', lambda r, o: _with(o, right_wrist_image=KeyError), r"missing field\(s\) \['right_wrist_image'\]"),
    ('missing task', lambda r, o: _with(o, task_description=KeyError), r"missing field\(s\) \['task_description'\]"),
    ('unknown field', lambda r, o: _with(o, wrist_image=o['primary_image']), r"unknown field\(s\) \['wrist_image'\]"),
    ('image shape', lambda r, o: _with(o, primary_image=np.zeros((S, S, 4), np.uint8)),
     rf"'primary_image' must have shape \({S}, {S}, 3\).*got \({S}, {S}, 4\)"),
    ('image CHW', lambda r, o: _with(o, left_wrist_image=np.zeros((3, S, S), np.uint8)), 'must have shape'),
    ('image float dtype', lambda r, o: _with(o, primary_image=np.zeros((S, S, 3), np.float32)),
     "'primary_image' must have dtype uint8, got float32"),
    ('image list out of range', lambda r, o: _with(o, primary_image=np.full((S, S, 3), 256).tolist()),
     r'values must lie in \[0, 255\], got range \[256, 256\]'),
    ('image not an array', lambda r, o: _with(o, primary_image='pixels'), 'must be a uint8 array'),
    ('proprio shape', lambda r, o: _with(o, proprio=np.zeros(7, np.float32)), r"'proprio' must have shape \(14,\)"),
    ('proprio NaN', lambda r, o: _with(o, proprio=np.where(np.arange(14) == 2, np.nan, o['proprio'])),
     r"'proprio' has non-finite values at index \[2\]"),
    ('proprio inf', lambda r, o: _with(o, proprio=np.full(14, np.inf)), 'non-finite'),
    ('proprio bool', lambda r, o: _with(o, proprio=np.ones(14, bool)), "'proprio' must be a float array"),
    ('proprio far out of range', lambda r, o: _with(o, proprio=_far_proprio(r)),
     r"far outside the training range .*\[3\]"),
    ('unknown task', lambda r, o: _with(o, task_description='fold shirt'),
     r"unknown task 'fold shirt'.*known tasks: \['transfer cube'\]"),
    ('task not a string', lambda r, o: _with(o, task_description=3), "'task_description' must be a string"),
    ('return_all not bool', lambda r, o: _with(o, return_all_query_results='yes'), 'must be a boolean'),
    ('not a mapping', lambda r, o: [o], 'must be a JSON object'),
]


@pytest.mark.parametrize('make,match', [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_observations_are_refused_with_a_clear_message(tiny_runner, make, match):
  with pytest.raises(runner_lib.InvalidObservation, match=match):
    tiny_runner.validate(make(tiny_runner, make_observation(tiny_runner)))


def test_lists_are_accepted_like_the_official_server(tiny_runner):
  obs = make_observation(tiny_runner)
  as_lists = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}
  validated = tiny_runner.validate({**as_lists, 'return_all_query_results': np.bool_(True)})
  np.testing.assert_array_equal(validated.camera_images['image'], obs['primary_image'])
  assert validated.camera_images['image'].dtype == np.uint8 and validated.return_all_query_results
  np.testing.assert_array_equal(validated.proprio, obs['proprio'].astype(np.float64))


def test_act_is_the_policy_functions_composed(tiny_runner):
  obs = make_observation(tiny_runner, seed=3)
  out = tiny_runner.act(obs)
  # By hand: the official camera order (left wrist, right wrist, primary), test-time crop, one causal encode,
  # normalised proprio, seed 195, un-normalised float64 actions, the same sample's value and future images.
  layout = tiny_runner.layout
  images = {'wrist_image': obs['left_wrist_image'], 'wrist_image2': obs['right_wrist_image'],
            'image': obs['primary_image']}
  images = {k: jnp.asarray(transforms.test_time_transform(v[None])) for k, v in images.items()}
  latent = vae.encode_policy_sequence(tiny_runner.vae_params, tiny_runner.vae_cfg,
                                      inference.policy_video_items(layout, images), S, S)
  proprio = stats_lib.normalize(obs['proprio'].astype(np.float64)[None], tiny_runner.statistics, 'proprio')
  context = jnp.asarray(tiny_runner.text_store.lookup(TASK).astype(np.float32)[None])
  query = inference.jit_action_query(tiny_runner.net, tiny_runner.dit_params, context, latent, jnp.asarray(proprio),
                                     jnp.asarray(sampler.parity_noise(195, latent.shape)), layout=layout,
                                     num_steps=tiny_runner.action_steps)
  actions = stats_lib.unnormalize(np.asarray(query['actions'][0]), tiny_runner.statistics, 'actions')
  assert out['actions'].shape == (50, 14) and out['actions'].dtype == np.float64
  np.testing.assert_allclose(out['actions'], actions, rtol=1e-6, atol=1e-6)
  assert out['value_prediction'] == out['value_predictions'] == pytest.approx(float(query['value'][0]), abs=1e-6)
  futures = inference.future_images(tiny_runner.vae_params, tiny_runner.vae_cfg, query['sample'], latent, layout)
  assert sorted(out['future_image_predictions']) == ['future_image', 'future_wrist_image', 'future_wrist_image2']
  for name, image in out['future_image_predictions'].items():
    assert image.shape == (S, S, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - np.asarray(futures[name][0]).astype(int)).max() <= 1, name
  assert set(out['timing']) >= {'validate_s', 'vae_encode_s', 'policy_s', 'vae_decode_s', 'total_s'}
  assert 'all_actions' not in out
  # One compiled program per shape: warm-up and every later request share it.
  assert tiny_runner._encode._cache_size() == 1 and tiny_runner._future_images._cache_size() == 1


def test_metadata(tiny_runner):
  meta = tiny_runner.metadata()
  assert meta['tasks'] == [TASK] and meta['chunk_size'] == 50 and meta['action_dim'] == 14
  assert meta['image_fields']['primary_image'] == [S, S, 3] and meta['planning'] is None


def test_planning_response():
  cfg = planning.PlanningConfig.main_command(num_candidates=2, action_steps=2, future_steps=(1,), value_steps=(1,),
                                             aggregation='average')
  runner = runner_lib.PolicyRunner.tiny(seed=1, image_size=S, planning=cfg, with_planning_model=True)
  assert runner.metadata()['planning']['num_candidates'] == 2
  out = runner.act({**make_observation(runner, seed=5), 'return_all_query_results': True})
  scores = np.asarray(out['all_value_predictions'])
  best = int(np.argmax(scores))
  chosen = best if scores[best] > scores[0] else 0  # official: keep candidate 0 unless strictly beaten
  assert out['chosen_candidate'] == chosen and out['value_prediction'] == out['value_predictions'] == scores[chosen]
  assert len(out['all_actions']) == 2 and all(a.shape == (50, 14) for a in out['all_actions'])
  np.testing.assert_array_equal(out['actions'], out['all_actions'][chosen])
  assert not np.allclose(out['all_actions'][0], out['all_actions'][1])  # different seeds, different candidates
  assert len(out['all_future_image_predictions']) == 2
  for name, image in out['future_image_predictions'].items():
    assert image.shape == (S, S, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, out['all_future_image_predictions'][chosen][name])
  assert np.asarray(out['all_value_predictions_by_depth']).shape == (2, 1)
  assert len(out['all_actions_by_depth']) == 2 and out['all_actions_by_depth'][chosen][0].shape == (50, 14)
  assert 'planning_s' in out['timing']


@pytest.fixture(scope='module')
def converted(tiny_runner, tmp_path_factory):
  """The tiny runner's weights through `python -m cosmos_jax.convert` (official files -> converted checkpoints,
  with the sample's statistics and text store stored next to the policy)."""
  root = tmp_path_factory.mktemp('converted')
  official = root / 'policy.safetensors'
  torch_io.save_state_dict(dit_rules.export_official(tiny_runner.dit_params), official)
  assets = {convert_lib.STATISTICS_ASSET: str(runner_lib.SAMPLE_DIR / 'dataset_statistics.json'),
            convert_lib.TEXT_STORE_ASSET: str(runner_lib.SAMPLE_DIR / 'text_store')}
  convert_lib.convert('dit', official, root / 'policy', tiny_runner.dit_cfg, assets=assets)
  convert_lib.convert('vae', runner_lib.TINY_VAE, root / 'vae', tiny_runner.vae_cfg, dtype='float32')
  return root


def test_from_converted_checkpoints_matches_the_same_weights(tiny_runner, converted):
  runner = runner_lib.PolicyRunner.from_checkpoints(converted / 'policy', converted / 'vae', image_size=S,
                                                    action_steps=tiny_runner.action_steps,
                                                    decode_future_images=False)
  assert runner.text_store.tasks == (TASK,) and runner.dit_cfg == tiny_runner.dit_cfg
  obs = make_observation(tiny_runner, seed=8)
  ours, reference = runner.act(obs), tiny_runner.act(obs)
  np.testing.assert_array_equal(ours['actions'], reference['actions'])
  assert ours['value_prediction'] == reference['value_prediction'] and ours['future_image_predictions'] is None


def test_from_checkpoints_errors(converted, tmp_path):
  with pytest.raises(ValueError, match="holds a converted 'vae' model, expected 'dit'"):
    runner_lib.PolicyRunner.from_checkpoints(converted / 'vae', converted / 'vae')
  with pytest.raises(FileNotFoundError, match='no text store at'):
    runner_lib.PolicyRunner.from_checkpoints(converted / 'policy', converted / 'vae', text_store=tmp_path / 'none')


def test_real_size_programs_trace():
  """The programs a 2B runner compiles (encode at 224 px, the main planning command, future-image decode) trace
  with the real shapes: checked with jax.eval_shape, nothing allocated."""
  import functools  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from cosmos_jax.nn import dit  # pylint: disable=g-import-not-at-top
  from cosmos_jax.policy import diffusion  # pylint: disable=g-import-not-at-top
  from cosmos_jax.policy import layout as layout_lib  # pylint: disable=g-import-not-at-top
  spec = jax.ShapeDtypeStruct
  dit_cfg = dit.DiTConfig.preset('2B', dtype='bfloat16', param_dtype='bfloat16')
  vae_cfg = vae.VAEConfig.policy()
  dit_params, vae_params = dit.abstract_params(dit_cfg), vae.abstract_params(vae_cfg)
  layout = layout_lib.get_layout('aloha')
  images = {c: spec((1, 224, 224, 3), np.uint8) for c in layout.cameras}
  latent = jax.eval_shape(functools.partial(runner_lib._encode_sequence, vae_cfg=vae_cfg, layout=layout,
                                            image_size=224), vae_params, images)
  assert latent.shape == (1, 11, 28, 28, 16)
  cfg = planning.PlanningConfig.main_command()
  net = diffusion.DiTNet(dit_cfg)
  out = jax.eval_shape(planning.make_planner(net, net, layout, cfg), dit_params, dit_params,
                       spec((1, 512, 1024), np.float32), latent, spec((1, 14), np.float32),
                       {'noise': spec((8, cfg.noise_slots) + latent.shape[1:], np.float32)})
  assert out['actions'].shape == (8, 50, 14) and out['values'].shape == (8, 15)
  assert out['future_samples'].shape == (8, 3, 11, 28, 28, 16)
  futures = jax.eval_shape(functools.partial(inference.future_images, vae_cfg=vae_cfg, layout=layout), vae_params,
                           sample=latent, orig_latent=latent)
  assert {k: v.shape for k, v in futures.items()} == {k: (1, 224, 224, 3) for k in
                                                        ('future_wrist_image', 'future_wrist_image2', 'future_image')}
