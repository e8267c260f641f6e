"""The evaluation command: `--help`, the tiny variant end to end with the real tiny PolicyRunner (MP4, value plot,
rollout, summary.json), and the same episode from the served policy through the command line.

Needs gym-aloha (the `test` extra) and headless EGL (MUJOCO_GL=egl; Debian libegl1 libegl-mesa0 libgl1-mesa-dri).
"""

import importlib
import json
import os
import subprocess
import sys

os.environ.setdefault('MUJOCO_GL', 'egl')  # before anything imports mujoco

import jax
import numpy as np
import pytest
from PIL import Image

from cosmos_jax.convert import checkpoint as checkpoint_layout
from cosmos_jax.data import aloha, bundled, decode, simulator
from cosmos_jax.eval import evaluation, policies
from cosmos_jax.serve import factory, http, service
from tests.convert import trained_layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = 'configs/eval/aloha.py'
SIZE = 64  # the tiny variant's image size


def _tiny_config(out, **overrides):
  config = importlib.import_module('configs.eval.aloha').get_config('tiny')
  config.out = str(out)
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """The tiny variant through evaluation.run, the command as a function (the real PolicyRunner.tiny), every request and response recorded."""
  requests, responses, runners = [], [], []
  make_policy = policies.make_policy

  def recording_make_policy(config):
    act, name = make_policy(config)
    runners.append(act.__self__)

    def recorded(observation):
      requests.append(observation)
      responses.append(act(observation))
      return responses[-1]

    return recorded, name

  out = tmp_path_factory.mktemp('eval_tiny')
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(policies, 'make_policy', recording_make_policy)
    summary = evaluation.run(_tiny_config(out))
  return out, summary, requests, responses, runners[0]


def test_tiny_variant_end_to_end(tiny_run):
  """MP4, value plot, summary.json and a rollout that read_rollout reads."""
  out, summary, requests, responses, _ = tiny_run

  # The client loop: a query whenever the queue is empty, 4 actions executed per query.
  assert len(requests) == 2
  for request in requests:
    assert sorted(request) == ['left_wrist_image', 'primary_image', 'proprio', 'right_wrist_image',
                               'task_description']
    for field in ('primary_image', 'left_wrist_image', 'right_wrist_image'):
      assert request[field].shape == (SIZE, SIZE, 3) and request[field].dtype == np.uint8
    assert request['proprio'].shape == (14,) and request['task_description'] == 'transfer cube'
  assert not np.array_equal(requests[0]['primary_image'], requests[1]['primary_image'])  # the arms moved

  with open(out / evaluation.SUMMARY_FILENAME, encoding='utf-8') as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(summary))
  (episode,) = summary['per_episode']
  assert episode['length'] == 8 and episode['query_steps'] == [0, 4] and summary['seeds'] == [0]
  # 8 control steps (0.16 s) from the rest pose cannot lift the cube, so this is a failure with reward 0.
  assert episode['success'] is False and episode['highest_reward'] == 0 and summary['success_rate'] == 0.0
  assert summary['mean_highest_reward'] == 0.0 and summary['config']['policy']['kind'] == 'tiny'
  assert episode['values'] == pytest.approx([r['value_prediction'] for r in responses])
  assert all(0.0 <= v <= 1.0 for v in episode['values'])
  assert summary['timings']['num_queries'] == 2
  assert [t['total_s'] for t in episode['timings']['policy_timings']] == [r['timing']['total_s'] for r in responses]

  # The rollout, read back by the training reader: executed actions are the first 4 of each returned chunk,
  # qpos at each query is the proprio sent.
  rollout = aloha.read_rollout(str(out / episode['rollout']), SIZE, lazy=False)
  assert rollout.command == 'transfer cube' and rollout.num_steps == 8
  assert rollout.success is False and rollout.terminal_reward == 0.0
  expected_actions = np.concatenate([np.asarray(r['actions'])[:4] for r in responses]).astype(np.float32)
  np.testing.assert_array_equal(rollout.actions, expected_actions)
  arms = np.r_[0:6, 7:13]
  assert episode['safety_pause_steps'] == int(np.any(rollout.actions[:, arms] - rollout.proprio[:, arms] > 0.15,
                                                     axis=1).sum())
  np.testing.assert_array_equal(rollout.proprio[[0, 4]],
                                np.stack([r['proprio'] for r in requests]).astype(np.float32))
  for role, field in (('image', 'primary_image'), ('wrist_image', 'left_wrist_image'),
                      ('wrist_image2', 'right_wrist_image')):
    for query, step in enumerate((0, 4)):
      error = np.abs(rollout.frames[role][step].astype(int) - requests[query][field].astype(int)).mean()
      assert error < 3.0, (role, step, error)  # JPEG quality 95

  # MP4: one frame per control step, left wrist | right wrist | cam_high | predicted future cam_high.
  video = decode.read_mp4(out / episode['video'])
  assert video.shape == (8, SIZE + 20, 4 * SIZE, 3)
  cam_high = video[0, 20:, 2 * SIZE:3 * SIZE].astype(int)
  assert np.abs(cam_high - requests[0]['primary_image'].astype(int)).mean() < 12.0  # mp4v is lossy
  # The random model's future images are pixel noise that mp4v smears, so check placement, not values: steps 0-3
  # show the first query's prediction, steps 4-7 the second's.
  futures = [decode.resize_square(r['future_image_predictions']['future_image'][None], SIZE)[0].astype(int)
             for r in responses]
  for step, query in ((3, 0), (5, 1)):
    column = video[step, 20:, 3 * SIZE:].astype(int)
    errors = [np.abs(column - f).mean() for f in futures]
    assert errors[query] < errors[1 - query], (step, errors)

  # Value plot: the predicted values are drawn (blue markers) on a 720x360 PNG.
  plot = np.asarray(Image.open(out / episode['value_plot']).convert('RGB'))
  assert plot.shape == (360, 720, 3)
  assert np.all(plot == (30, 80, 200), axis=-1).sum() > 20


def _command(*args, timeout=300):
  env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu', 'MUJOCO_GL': 'egl'}
  return subprocess.run([sys.executable, '-m', 'cosmos_jax.eval.aloha_sim', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


def test_help():
  result = _command('--help')  # absl exits with status 1 after printing the usage
  assert 'python -m cosmos_jax.eval.aloha_sim --config=configs/eval/aloha.py:tiny' in result.stdout, result.stderr
  assert '--config: Evaluation config file' in result.stdout
  for shorthand in ('--checkpoint:', '--config.policy.checkpoint', '--step:', '--[no]use_ema:'):
    assert shorthand in result.stdout, shorthand


def test_served_policy_through_the_command_gives_the_same_episode(tiny_run, tmp_path):
  """The same tiny runner behind the HTTP server (official json_numpy /act protocol), evaluated by the command
  line's tiny variant with policy.kind=server: its first query (4 steps) reproduces the in-process episode exactly
  (deterministic simulator, renderer and policy noise)."""
  out, summary, _, _, runner = tiny_run
  loop = service.BackgroundLoop()
  server = http.HTTPServer(service.PolicyService(runner), host='127.0.0.1', port=0)
  try:
    port = loop.run(server.start())
    result = _command(f'--config={CONFIG}:tiny', f'--config.out={tmp_path}', '--config.max_steps=4',
                      '--config.policy.kind=server', f'--config.policy.server=http://127.0.0.1:{port}')
  finally:
    loop.run(server.stop())
    loop.stop()
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'success rate 0.000' in result.stdout
  with open(tmp_path / evaluation.SUMMARY_FILENAME, encoding='utf-8') as f:
    served = json.load(f)
  assert served['policy'] == f'server http://127.0.0.1:{port}'
  (local,), (remote,) = summary['per_episode'], served['per_episode']
  assert remote['values'] == local['values'][:1] and remote['query_steps'] == [0] and remote['length'] == 4
  a = aloha.read_rollout(str(out / local['rollout']), SIZE, lazy=False)
  b = aloha.read_rollout(str(tmp_path / remote['rollout']), SIZE, lazy=False)
  np.testing.assert_array_equal(b.actions, a.actions[:4])
  np.testing.assert_array_equal(b.proprio, a.proprio[:4])
  for role in a.frames:
    np.testing.assert_array_equal(b.frames[role], a.frames[role][:4])


def test_config_errors(tmp_path):
  with pytest.raises(ValueError, match='config.out'):
    evaluation.evaluate(lambda o: {}, _tiny_config(''))
  with pytest.raises(ValueError, match='policy.kind must be one of'):
    policies.make_policy(_tiny_config(tmp_path, policy=dict(kind='magic', server='')))
  config = _tiny_config(tmp_path)
  config.policy.kind = 'checkpoint'
  with pytest.raises(ValueError, match='needs the policy: --checkpoint='):
    policies.make_policy(config)
  config.policy.kind = 'server'
  config.policy.server = 'ftp://x'
  with pytest.raises(ValueError, match='http://, https://, ws:// or wss://'):
    policies.make_policy(config)
  config.policy.kind = 'replay'
  config.policy.demos = str(tmp_path)
  with pytest.raises(ValueError, match='num_open_loop_steps'):
    policies.make_policy(config)
  config.num_open_loop_steps = config.policy.chunk_size
  with pytest.raises(FileNotFoundError, match='no demonstrations'):
    policies.make_policy(config)
  result = _command(f'--config={CONFIG}:huge', f'--config.out={tmp_path}', timeout=120)
  assert result.returncode != 0 and "unknown variant argument 'huge'" in result.stderr


def test_checkpoint_policies_run_without_the_proprio_range_check(tmp_path, monkeypatch):
  """A policy that leaves its training range fails its episode; the runner's request check must not abort the
  evaluation instead."""
  calls = []

  class FakeRunner:
    name = 'fake'

    def act(self, observation):
      return {}

  monkeypatch.setattr(policies.runner.PolicyRunner, 'from_checkpoints',
                      classmethod(lambda cls, *args, **kwargs: calls.append((args, kwargs)) or FakeRunner()))
  monkeypatch.setattr(policies, 'check_trained_cameras', lambda checkpoint, step: None)
  config = _tiny_config(tmp_path)
  config.policy.kind, config.policy.checkpoint = 'checkpoint', 'RUN'
  _, name = policies.make_policy(config)
  assert name == 'fake' and calls[0][0] == ('RUN', None)
  assert calls[0][1]['proprio_margin'] is None and calls[0][1]['image_size'] == 64


def test_a_checkpoint_trained_on_other_camera_views_is_refused(tmp_path, monkeypatch):
  """The trainer copies simulated demonstrations' demos.json into the checkpoint; evaluating it in a simulator that
  renders cam_high from another view is refused before the weights load, naming both views."""
  tiny = factory.tiny(seed=0)
  step_dir = trained_layout.write_step(tmp_path / 'run', 2, jax.device_get(tiny.dit_params), tiny.dit_cfg)
  monkeypatch.setattr(policies.runner.PolicyRunner, 'from_checkpoints',
                      classmethod(lambda cls, *args, **kwargs: type('Fake', (), {'name': 'fake', 'act': None})()))
  config = _tiny_config(tmp_path)
  config.policy.kind, config.policy.checkpoint = 'checkpoint', str(tmp_path / 'run')
  assert policies.make_policy(config)[1] == 'fake'  # recorded data: no demos.json, nothing to check
  demos = simulator.read_demos_metadata(bundled.sample_dir('aloha'))
  assets = step_dir / checkpoint_layout.ASSETS / simulator.DEMOS_METADATA_FILENAME
  assets.write_text(json.dumps(demos), encoding='utf-8')
  assert policies.make_policy(config)[1] == 'fake'  # the bundled sample's views are the simulator's
  demos['transfer_cube']['cam_high_view'] = {'position': [0.0, 0.6, 0.8], 'fovy': 50.0}  # an older generator's
  assets.write_text(json.dumps(demos), encoding='utf-8')
  with pytest.raises(ValueError, match=r"checkpoint .*/run/checkpoints/2 \(its assets/demos.json\): the "
                                       r"transfer_cube demonstrations were rendered with cam_high view "
                                       r"\{'position': \[0.0, 0.6, 0.8\], 'fovy': 50.0\}.*the simulator renders "
                                       r"\{'position': \[0.1, 0.5, 0.8\], 'fovy': 30.0\}"):
    policies.make_policy(config)
