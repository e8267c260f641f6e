"""PolicyRunner (protocol + query + factory): the response against the policy functions composed by hand,
best-of-N planning responses, converted checkpoints, and the real-size programs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.convert import dit_rules
from cosmos_jax.convert import library as convert_lib
from cosmos_jax.convert import torch_io
from cosmos_jax.data import bundled
from cosmos_jax.data import transforms
from cosmos_jax.nn import dit
from cosmos_jax.nn import vae
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import inference
from cosmos_jax.policy import normalization
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import planning
from cosmos_jax.policy import sampler
from cosmos_jax.policy import video as video_lib
from cosmos_jax.serve import factory
from cosmos_jax.serve import query as query_lib
from cosmos_jax.serve import runner as runner_lib
from tests.serve.conftest import IMAGE_SIZE, TASK, make_observation

S = IMAGE_SIZE


def test_act_is_the_policy_functions_composed(tiny_runner):
  obs = make_observation(tiny_runner.protocol, seed=3)
  out = tiny_runner.act(obs)
  # By hand: the official camera order (left wrist, right wrist, primary), test-time crop, one causal encode,
  # normalised proprio, seed 195, un-normalised float64 actions, the same sample's value and future images.
  query = tiny_runner.query
  layout = query.layout
  images = {'wrist_image': obs['left_wrist_image'], 'wrist_image2': obs['right_wrist_image'],
            'image': obs['primary_image']}
  images = {k: jnp.asarray(transforms.test_time_transform(v[None])) for k, v in images.items()}
  latent = video_lib.encode_policy_sequence(query.vae_params, query.vae_cfg,
                                      inference.policy_video_items(layout, images), S, S)
  proprio = normalization.normalize(obs['proprio'].astype(np.float64)[None], query.statistics, 'proprio')
  context = jnp.asarray(query.text_store.lookup(TASK).astype(np.float32)[None])
  reference = inference.jit_action_query(query.net, query.dit_params, context, latent, jnp.asarray(proprio),
                                     jnp.asarray(sampler.parity_noise(195, latent.shape)), layout=layout,
                                     num_steps=query.action_steps)
  actions = normalization.unnormalize(np.asarray(reference['actions'][0]), query.statistics, 'actions')
  assert out['actions'].shape == (50, 14) and out['actions'].dtype == np.float64
  np.testing.assert_allclose(out['actions'], actions, rtol=1e-6, atol=1e-6)
  assert out['value_prediction'] == out['value_predictions'] == pytest.approx(float(reference['value'][0]), abs=1e-6)
  futures = inference.future_images(query.vae_params, query.vae_cfg, reference['sample'], latent, layout)
  assert sorted(out['future_image_predictions']) == ['future_image', 'future_wrist_image', 'future_wrist_image2']
  for name, image in out['future_image_predictions'].items():
    assert image.shape == (S, S, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - np.asarray(futures[name][0]).astype(int)).max() <= 1, name
  assert set(out['timing']) >= {'validate_s', 'vae_encode_s', 'policy_s', 'vae_decode_s', 'total_s'}
  assert 'all_actions' not in out
  # One compiled program per shape: warm-up and every later request share it.
  assert query._encode._cache_size() == 1 and query._future_images._cache_size() == 1


def test_metadata(tiny_runner):
  meta = tiny_runner.metadata()
  assert meta['tasks'] == [TASK] and meta['chunk_size'] == 50 and meta['action_dim'] == 14
  assert meta['image_fields']['primary_image'] == [S, S, 3] and meta['planning'] is None
  assert meta['policy'] == 'tiny random policy (weights seed 0)' and meta['protocol'] == 'aloha'
  assert meta['text_embeddings'] == tiny_runner.query.text_store.kind and meta['seed'] == 195


def test_planning_response():
  cfg = planning.PlanningConfig.main_command(num_candidates=2, action_steps=2, future_steps=(1,), value_steps=(1,),
                                             aggregation='average')
  runner = runner_lib.PolicyRunner.tiny(seed=1, image_size=S, planning=cfg, with_planning_model=True)
  assert runner.metadata()['planning']['num_candidates'] == 2
  out = runner.act({**make_observation(runner.protocol, seed=5), 'return_all_query_results': True})
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
  torch_io.save_state_dict(dit_rules.export_official(tiny_runner.query.dit_params), official)
  sample = bundled.sample_dir('aloha')
  assets = {convert_lib.STATISTICS_ASSET: str(sample / 'dataset_statistics.json'),
            convert_lib.TEXT_STORE_ASSET: str(bundled.text_store_dir('aloha'))}
  convert_lib.convert('dit', official, root / 'policy', tiny_runner.query.models.dit_cfg, assets=assets,
                      layout='aloha')
  convert_lib.convert('vae', vae.TINY_VAE_PATH, root / 'vae', tiny_runner.query.vae_cfg, dtype='float32')
  return root


def test_from_converted_checkpoints_matches_the_same_weights(tiny_runner, converted):
  runner = runner_lib.PolicyRunner.from_checkpoints(converted / 'policy', converted / 'vae', image_size=S,
                                                    action_steps=tiny_runner.query.action_steps,
                                                    decode_future_images=False)
  assert runner.query.text_store.tasks == (TASK,) and runner.query.models.dit_cfg == tiny_runner.query.models.dit_cfg
  obs = make_observation(tiny_runner.protocol, seed=8)
  ours, reference = runner.act(obs), tiny_runner.act(obs)
  np.testing.assert_array_equal(ours['actions'], reference['actions'])
  assert ours['value_prediction'] == reference['value_prediction'] and ours['future_image_predictions'] is None


def test_from_checkpoints_errors(converted, tmp_path):
  with pytest.raises(ValueError, match="holds a 'vae' model, expected a 'dit' model"):
    factory.from_checkpoints(converted / 'vae', converted / 'vae')
  with pytest.raises(FileNotFoundError, match='text store index .* does not exist'):
    factory.from_checkpoints(converted / 'policy', converted / 'vae', text_store=tmp_path / 'none')


def test_real_size_programs_trace():
  """The programs a 2B runner compiles (encode at 224 px, the main planning command, future-image decode) trace
  with the real shapes: checked with jax.eval_shape, nothing allocated."""
  spec = jax.ShapeDtypeStruct
  dit_cfg = dit.DiTConfig.preset('2B', dtype='bfloat16', param_dtype='bfloat16')
  vae_cfg = vae.VAEConfig.policy()
  dit_params, vae_params = dit.abstract_params(dit_cfg), vae.abstract_params(vae_cfg)
  layout = layout_lib.get_layout('aloha')
  images = {c: spec((1, 224, 224, 3), np.uint8) for c in layout.cameras}
  latent = jax.eval_shape(functools.partial(query_lib.encode_observation, vae_cfg=vae_cfg, layout=layout,
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


def test_any_image_size_is_resized_like_the_official_server(tiny_runner):
  """A request with 80 x 60 (and 128 x 128) images answers as the same images resized to the model's size first."""
  from cosmos_jax.data import decode  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  base_obs = make_observation(tiny_runner.protocol, seed=4)
  for shape in ((60, 80, 3), (128, 128, 3)):
    large = {**base_obs, **{f: rng.integers(0, 256, shape, dtype=np.uint8) for f in tiny_runner.protocol.image_fields}}
    resized = {**large, **{f: decode.resize_square(large[f][None], S)[0] for f in tiny_runner.protocol.image_fields}}
    ours, by_hand = tiny_runner.act(large), tiny_runner.act(resized)
    np.testing.assert_array_equal(ours['actions'], by_hand['actions'])
    assert ours['value_prediction'] == by_hand['value_prediction']


def test_plain_query_has_no_per_depth_images(tiny_runner):
  out = tiny_runner.act({**make_observation(tiny_runner.protocol, seed=2), 'return_all_query_results': True})
  assert out['all_future_image_predictions_by_depth'] == [[]]
  assert out['all_value_predictions_by_depth'] == [[out['value_prediction']]]


@pytest.fixture(scope='module')
def tiny_models():
  return factory.tiny(1, with_planning_model=True)


def _planning_runner(models, cfg, **kwargs):
  return runner_lib.PolicyRunner.build(models, image_size=S, action_steps=2, planning=cfg, **kwargs)


def test_per_depth_images_at_search_depth_two(tiny_models):
  """Depth 2 with two future samples: entries = depth 1 + one per future sample, each the ensemble's images
  ('last': the member with the most steps); the first entry is the candidate's own future images."""
  cfg = planning.PlanningConfig.main_command(num_candidates=2, action_steps=1, future_steps=(1, 2), value_steps=(1,),
                                             aggregation='average', search_depth=2, future_aggregation='last',
                                             depth_aggregation='average')
  runner = _planning_runner(tiny_models, cfg)
  out = runner.act({**make_observation(runner.protocol, seed=6), 'return_all_query_results': True})
  by_depth = out['all_future_image_predictions_by_depth']
  assert len(by_depth) == 2 and all(len(entries) == cfg.depth_entries == 3 for entries in by_depth)
  for q, entries in enumerate(by_depth):
    assert sorted(entries[2]) == ['future_image', 'future_wrist_image', 'future_wrist_image2']
    for name, image in entries[0].items():
      np.testing.assert_array_equal(image, out['all_future_image_predictions'][q][name])
  values = np.asarray(out['all_value_predictions_by_depth'])
  assert values.shape == (2, 3)
  np.testing.assert_allclose(out['all_value_predictions'], values.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize('source', ['parallel', 'q_value'])
def test_model_free_scoring(tiny_models, source):
  """Best-of-N scored by the policy's own parallel value (images from the action sample) or by Q(s, a) (no world
  model: no future images, as the official server)."""
  cfg = planning.PlanningConfig(num_candidates=2, action_steps=2, value_source=source,
                                value_steps=(1,) if source == 'parallel' else (1, 2),
                                value_ensemble=source == 'q_value', q_value_mask_future_state=source == 'q_value')
  runner = _planning_runner(tiny_models, cfg)
  out = runner.act({**make_observation(runner.protocol, seed=7), 'return_all_query_results': True})
  assert out['all_future_image_predictions_by_depth'] == [[], []]
  if source == 'q_value':
    assert out['future_image_predictions'] is None and out['all_future_image_predictions'] == [None, None]
  else:
    assert sorted(out['future_image_predictions']) == ['future_image', 'future_wrist_image', 'future_wrist_image2']
  assert runner.metadata()['planning']['value_source'] == source


SHARDED_RUNNER_SCRIPT = r'''
import json
import jax, numpy as np
from configs.serve import aloha as serve_config
from cosmos_jax.serve import command
from tests.serve.conftest import make_observation
assert len(jax.local_devices()) == 8, jax.local_devices()
results = {}
for devices in (1, 0):
  config = serve_config.get_config('tiny,planning')
  config.planning.update(num_candidates=8, action_steps=2, future_steps=1, future_ensemble=0, value_steps=1,
                         value_ensemble=0, devices=devices)
  config.model.future_images = False
  runner = command.make_runner(config)
  out = runner.act({**make_observation(runner.protocol, seed=9), 'return_all_query_results': True})
  results[devices] = dict(devices=runner.metadata()['planning']['devices'], chosen=out['chosen_candidate'],
                          values=out['all_value_predictions'], actions=np.asarray(out['all_actions']).tolist())
print(json.dumps(results))
'''


def test_planner_spreads_candidates_over_eight_devices():
  """Eight (fake CPU) devices: the server's planner runs one candidate per device and chooses as on one device."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[2]
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu',
             PYTHONPATH=str(root) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-c', SHARDED_RUNNER_SCRIPT], cwd=root, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  one, spread = results['1'], results['0']
  assert one['devices'] == 1 and spread['devices'] == 8
  assert one['chosen'] == spread['chosen']
  np.testing.assert_allclose(spread['values'], one['values'], atol=2e-6)
  np.testing.assert_allclose(spread['actions'], one['actions'], atol=2e-5)


def test_randomized_seed_and_variance_scale(monkeypatch):
  """randomize_seed: each request draws its seed (official secrets.randbits(32) % 256); use_variance_scale: the
  seed's sigma range (torch.manual_seed(seed); two torch.rand draws)."""
  tiny_models = factory.tiny(1)
  common = dict(image_size=S, action_steps=2, decode_future_images=False)
  obs = make_observation(runner_lib.PolicyRunner.build(tiny_models, **common).protocol, seed=11)
  monkeypatch.setattr(query_lib.secrets, 'randbits', lambda bits: 256 * 7 + 44)
  randomized = runner_lib.PolicyRunner.build(tiny_models, randomize_seed=True, **common).act(obs)
  fixed = runner_lib.PolicyRunner.build(tiny_models, seed=44, **common).act(obs)
  np.testing.assert_array_equal(randomized['actions'], fixed['actions'])
  scaled_runner = runner_lib.PolicyRunner.build(tiny_models, seed=44, use_variance_scale=True, **common)
  scaled = scaled_runner.act(obs)
  assert not np.allclose(scaled['actions'], fixed['actions'])
  query = scaled_runner.query
  validated = scaled_runner.validate(obs)
  images = {k: jnp.asarray(transforms.test_time_transform(v[None])) for k, v in validated.camera_images.items()}
  latent = video_lib.encode_policy_sequence(query.vae_params, query.vae_cfg,
                                      inference.policy_video_items(query.layout, images), S, S)
  proprio = jnp.asarray(inference.normalized_proprio(validated.proprio, query.statistics, query.layout))
  context = jnp.asarray(query.text_store.lookup(TASK).astype(np.float32)[None])
  reference = inference.jit_action_query(query.net, query.dit_params, context, latent, proprio,
                                         jnp.asarray(sampler.parity_noise(44, latent.shape)), layout=query.layout,
                                         num_steps=2, sigma_scale=jnp.asarray([sampler.variance_scale(44)]))
  np.testing.assert_allclose(scaled['actions'], inference.unnormalized_actions(reference['actions'],
                                                                                query.statistics)[0],
                             rtol=1e-6, atol=1e-6)
