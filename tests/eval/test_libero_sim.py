"""LIBERO evaluation: the official loop's pieces without a simulator (observation flip and proprio, response
parsing, the rollout format read back), and one short episode of the tiny policy in the real LIBERO simulator
through the evaluation command (summary JSON, MP4, rollout read by the LIBERO rollout reader).

The simulator needs the LIBERO environment ($COSMOS_JAX_LIBERO_PYTHON; .ci/run creates it and sets
COSMOS_JAX_REQUIRE_LIBERO=1, so in CI its absence fails instead of skipping)."""

import json
import os
import subprocess
import sys

import chex
import cv2
import jax
import numpy as np
import pytest

from configs.eval import libero as libero_config
from cosmos_jax.data import bundled
from cosmos_jax.data import libero as libero_data
from cosmos_jax.eval import libero_sim_env
from cosmos_jax.eval import libero_sim_eval
from cosmos_jax.serve import factory
from tests.convert import trained_layout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _obs(rng, size=32):
  return {'agentview_image': rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
          'robot0_eye_in_hand_image': rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
          'robot0_gripper_qpos': np.array([0.01, -0.01]), 'robot0_eef_pos': np.array([0.1, 0.2, 0.9]),
          'robot0_eef_quat': np.array([1.0, 0.0, 0.0, 0.0])}


def test_request_flips_both_cameras_and_orders_the_proprio_as_the_official_loop():
  obs = _obs(np.random.default_rng(0))
  request = libero_sim_eval.policy_request(obs, 'put the bowl on the plate')
  np.testing.assert_array_equal(request['primary_image'], obs['agentview_image'][::-1])
  np.testing.assert_array_equal(request['wrist_image'], obs['robot0_eye_in_hand_image'][::-1])
  np.testing.assert_array_equal(request['proprio'], [0.01, -0.01, 0.1, 0.2, 0.9, 1.0, 0.0, 0.0, 0.0])
  assert request['task_description'] == 'put the bowl on the plate'


def test_responses_are_checked():
  actions, value, future = libero_sim_eval.parse_response(
      {'actions': np.zeros((16, 7)), 'value_prediction': 0.5,
       'future_image_predictions': {'future_image': np.zeros((8, 8, 3), np.uint8)}})
  assert actions.shape == (16, 7) and value == 0.5 and future.shape == (8, 8, 3)
  assert np.isnan(libero_sim_eval.parse_response({'actions': np.zeros((16, 7))})[1])
  with pytest.raises(ValueError, match=r'must be \(chunk, 7\) for LIBERO, got shape \(50, 14\)'):
    libero_sim_eval.parse_response({'actions': np.zeros((50, 14))})
  with pytest.raises(ValueError, match='non-finite'):
    libero_sim_eval.parse_response({'actions': np.full((16, 7), np.nan)})
  with pytest.raises(ValueError, match="returned the string 'error'"):
    libero_sim_eval.parse_response('error')


def test_rollouts_are_written_in_the_official_format_the_reader_loads(tmp_path):
  rng = np.random.default_rng(1)
  length = 5
  episode = libero_sim_eval.EpisodeResult(
      suite='libero_spatial', task_id=0, init_state=0, task_description='put the bowl on the plate', success=True,
      primary_images=rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8),
      wrist_images=rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8),
      proprio=rng.normal(size=(length, 9)), actions=rng.normal(size=(length, 7)), query_steps=[0], values=[0.3],
      future_images=[None], query_seconds=[1.0], sim_seconds=1.0, wall_seconds=2.0)
  path = libero_sim_eval.save_rollout(str(tmp_path / 'episode.hdf5'), episode)
  read = libero_data.read_rollout(path, image_size=32, lazy=False)
  assert read.command == 'put the bowl on the plate' and read.success
  np.testing.assert_allclose(read.actions, episode.actions, rtol=1e-6)
  np.testing.assert_allclose(read.proprio, episode.proprio, rtol=1e-6)
  frames = libero_sim_eval.video_frames(episode)
  assert frames.shape == (length, 52, 96, 3)


def test_missing_libero_environment_is_a_clear_error(monkeypatch):
  monkeypatch.delenv(libero_sim_env.PYTHON_ENV_VAR, raising=False)
  with pytest.raises(FileNotFoundError, match='COSMOS_JAX_LIBERO_PYTHON'):
    libero_sim_env.libero_python()
  with pytest.raises(FileNotFoundError, match='not an executable Python'):
    libero_sim_env.libero_python('/nonexistent/python')


def _libero_python() -> str:
  python = os.environ.get(libero_sim_env.PYTHON_ENV_VAR, '')
  if not python:
    if os.environ.get('COSMOS_JAX_REQUIRE_LIBERO'):
      pytest.fail(f'{libero_sim_env.PYTHON_ENV_VAR} is not set but COSMOS_JAX_REQUIRE_LIBERO is: .ci/run creates the '
                  'LIBERO environment and must export its Python')
    pytest.skip(f'no LIBERO environment ({libero_sim_env.PYTHON_ENV_VAR} unset; README: LIBERO evaluation)')
  return python


def test_one_short_episode_in_the_real_simulator_through_the_command(tmp_path):
  python = _libero_python()
  out = tmp_path / 'eval'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': ROOT, libero_sim_env.PYTHON_ENV_VAR: python}
  result = subprocess.run([sys.executable, '-m', 'cosmos_jax.eval.libero_sim', '--config=configs/eval/libero.py:tiny',
                           f'--config.out={out}', '--config.max_steps=20'], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
  assert '[1/1] libero_spatial task 0 episode 0' in result.stdout  # progress
  summary = json.loads((out / libero_sim_eval.SUMMARY_FILENAME).read_text())
  suite = summary['suites']['libero_spatial']
  assert suite['episodes'] == 1 and suite['tasks']['0']['episodes'] == 1
  assert summary['success_rate'] == suite['success_rate'] == suite['tasks']['0']['success_rate']
  episode = suite['per_episode'][0]
  task = 'pick up the black bowl between the plate and the ramekin and place it on the plate'
  assert episode['task_description'] == task and episode['init_state'] == 0
  if not episode['success']:  # a random policy: the full 20 steps, queried at 0 and 16
    assert episode['length'] == 20 and episode['query_steps'] == [0, 16]
  assert len(episode['values']) == episode['num_queries'] and all(0 <= v <= 1 for v in episode['values'])
  video = cv2.VideoCapture(str(out / episode['video']))
  frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
  ok, frame = video.read()
  video.release()
  assert ok and frames == episode['length'] and frame.shape == (64 + 20, 3 * 64, 3)
  rollout = libero_data.read_rollout(str(out / episode['rollout']), image_size=64, lazy=False)
  assert rollout.command == task and rollout.success == episode['success']
  assert rollout.actions.shape == (episode['length'], 7) and rollout.proprio.shape == (episode['length'], 9)


def test_policy_sources():
  config = libero_config.get_config()
  with pytest.raises(ValueError, match='needs the policy: --checkpoint='):
    libero_sim_eval.make_policy(config)
  config.server = 'http://127.0.0.1:1'
  _, name = libero_sim_eval.make_policy(config)  # the HTTP client connects on the first query
  assert name == 'server http://127.0.0.1:1'
  config.server = 'tcp://x'
  with pytest.raises(ValueError, match='must be an http://, https://, ws:// or wss:// URL'):
    libero_sim_eval.make_policy(config)
  config.server, config.policy.kind = '', 'replay'
  with pytest.raises(ValueError, match='policy.kind must be one of'):
    libero_sim_eval.make_policy(config)


def test_checkpoint_policy_is_read_by_the_one_checkpoint_reader(tmp_path):
  """A LIBERO training workdir (step 2, and step 4 with an EMA): the latest step's EMA by default, --step and
  --use_ema as for serve and the ALOHA evaluation, and the command exits 2 naming a missing step."""
  tiny = factory.tiny(seed=0, benchmark='libero')
  raw = jax.device_get(tiny.dit_params)
  ema = jax.tree.map(lambda p: (0.5 * p).astype(p.dtype), raw)
  zeros = jax.tree.map(np.zeros_like, raw)
  workdir = tmp_path / 'run'
  trained_layout.write_step(workdir, 2, zeros, tiny.dit_cfg, layout='libero', policy_assets=False)
  trained_layout.write_step(workdir, 4, raw, tiny.dit_cfg, layout='libero', policy_assets=False, ema_params=ema)
  config = libero_config.get_config()
  config.image_size = 32
  config.policy.checkpoint = str(workdir)
  config.policy.statistics = str(bundled.sample_dir('libero') / 'dataset_statistics.json')
  config.policy.text_store = str(bundled.text_store_dir('libero'))

  def served_params():
    act, _ = libero_sim_eval.make_policy(config)
    return jax.device_get(act.__self__.query.dit_params)

  chex.assert_trees_all_equal(served_params(), ema)
  config.policy.use_ema = False
  chex.assert_trees_all_equal(served_params(), raw)
  config.policy.step = 2
  chex.assert_trees_all_equal(served_params(), zeros)
  config.policy.use_ema = True
  with pytest.raises(ValueError, match='has no EMA parameters'):
    libero_sim_eval.make_policy(config)

  result = subprocess.run([sys.executable, '-m', 'cosmos_jax.eval.libero_sim', '--config=configs/eval/libero.py',
                           f'--config.out={tmp_path / "eval"}', f'--checkpoint={workdir}', '--step=3'], cwd=ROOT,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': ROOT}, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 2 and 'no checkpoint of step 3; saved steps: [2, 4]' in result.stderr, result.stderr


def test_help_lists_the_config_and_the_checkpoint_shorthands():
  result = subprocess.run([sys.executable, '-m', 'cosmos_jax.eval.libero_sim', '--help'], cwd=ROOT,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': ROOT}, capture_output=True,
                          text=True, timeout=300, check=False)
  for text in ('configs/eval/libero.py:tiny', '--config:', '--checkpoint:', '--config.policy.checkpoint', '--step:',
               '--[no]use_ema:'):
    assert text in result.stdout, (text, result.stdout[-2000:], result.stderr[-2000:])
