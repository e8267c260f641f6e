"""Closed-loop gym-aloha evaluation: a short episode with the real tiny PolicyRunner through the command, the
official client preprocessing, the response parsing and the rollout-format round trip.

Needs gym-aloha (the `test` extra) and headless EGL (MUJOCO_GL=egl; Debian libegl1 libegl-mesa0 libgl1-mesa-dri).
"""

import json
import os

os.environ.setdefault('MUJOCO_GL', 'egl')  # before anything imports mujoco

import h5py
import numpy as np
import pytest
from PIL import Image

from cosmos_jax.data import aloha, decode, mixture
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.eval import aloha_sim

SIZE = 64  # the smallest policy image size whose latent slot holds the 700 ALOHA action values (VAE stride 8)


def _eval_argv(out, *policy, max_steps=8):
  return [*policy, '--task', 'transfer_cube', '--episodes', '1', '--max_steps', str(max_steps),
          '--num_open_loop_steps', '4', '--out', str(out), '--image_size', str(SIZE),
          '--preprocess_size', str(SIZE), '--render_height', str(SIZE), '--render_width', str(SIZE)]


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """The evaluation command with --tiny (the real PolicyRunner.tiny), every request and response recorded."""
  requests, responses, runners = [], [], []
  make_policy = aloha_sim.make_policy

  def recording_make_policy(args):
    act, name = make_policy(args)
    runners.append(act.__self__)

    def recorded(observation):
      requests.append(observation)
      responses.append(act(observation))
      return responses[-1]

    return recorded, name

  out = tmp_path_factory.mktemp('eval_tiny')
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(aloha_sim, 'make_policy', recording_make_policy)
    summary = aloha_sim.main(_eval_argv(out, '--tiny'))
  return out, summary, requests, responses, runners[0]


def test_short_closed_loop_episode_with_the_tiny_policy(tiny_run):
  """The evaluation command end to end: MP4, value plot, summary.json and a rollout that read_rollout reads."""
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

  with open(out / 'summary.json', encoding='utf-8') as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(summary))
  (episode,) = summary['per_episode']
  assert episode['length'] == 8 and episode['query_steps'] == [0, 4]
  # 8 control steps (0.16 s) from the rest pose cannot lift the cube, so this is a failure with reward 0.
  assert episode['success'] is False and episode['highest_reward'] == 0 and summary['success_rate'] == 0.0
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


def test_served_policy_gives_the_same_episode(tiny_run, tmp_path):
  """The same tiny runner behind the HTTP server (official json_numpy /act protocol): --server reproduces the
  in-process episode exactly (deterministic simulator, renderer and policy noise); its first query (4 steps)
  is enough to compare."""
  from cosmos_jax.serve import http, service  # pylint: disable=g-import-not-at-top

  out, summary, _, _, runner = tiny_run
  loop = service.BackgroundLoop()
  server = http.HTTPServer(service.PolicyService(runner), host='127.0.0.1', port=0)
  try:
    port = loop.run(server.start())
    served = aloha_sim.main(_eval_argv(tmp_path, '--server', f'http://127.0.0.1:{port}', max_steps=4))
  finally:
    loop.run(server.stop())
    loop.stop()
  assert served['policy'] == f'server http://127.0.0.1:{port}'
  (local,), (remote,) = summary['per_episode'], served['per_episode']
  assert remote['values'] == local['values'][:1] and remote['query_steps'] == [0] and remote['length'] == 4
  a = aloha.read_rollout(str(out / local['rollout']), SIZE, lazy=False)
  b = aloha.read_rollout(str(tmp_path / remote['rollout']), SIZE, lazy=False)
  np.testing.assert_array_equal(b.actions, a.actions[:4])
  np.testing.assert_array_equal(b.proprio, a.proprio[:4])
  for role in a.frames:
    np.testing.assert_array_equal(b.frames[role], a.frames[role][:4])


def _episode(num_steps: int, success: bool, size: int = 32) -> aloha_sim.EpisodeResult:
  rng = np.random.default_rng(3)
  yy, xx = np.mgrid[:size, :size]
  smooth = np.stack([(xx * 255 // size), (yy * 255 // size), np.full_like(xx, 90)], -1).astype(np.uint8)
  frames = {cam: np.stack([np.roll(smooth, t + k, axis=1) for t in range(num_steps)])
            for k, cam in enumerate(aloha_sim.SIM_CAMERAS)}
  rewards = np.zeros(num_steps)
  if success:
    rewards[-3:] = [2, 3, 4]
  return aloha_sim.EpisodeResult(
      task_description='transfer cube', seed=5, frames=frames, qpos=rng.normal(size=(num_steps, 14)),
      qvel=rng.normal(size=(num_steps, 14)), actions=rng.normal(size=(num_steps, 14)), rewards=rewards,
      query_steps=np.arange(0, num_steps, 4), values=rng.uniform(size=(num_steps + 3) // 4),
      future_images=[None] * ((num_steps + 3) // 4), max_reward=4.0, query_seconds=[0.0], policy_timings=[],
      render_seconds=0.0, sim_seconds=0.0, wall_seconds=0.0)


@pytest.mark.parametrize('success', [True, False])
def test_rollout_round_trip(tmp_path, success):
  episode = _episode(10, success)
  assert episode.success is success
  path = aloha_sim.save_rollout(str(tmp_path / 'rollouts' / 'episode_0.hdf5'), episode, policy_name='p',
                                control_hz=50)
  read = aloha.read_rollout(path, 32, lazy=False)
  assert read.command == 'transfer cube' and read.success is success
  assert read.terminal_reward == (1.0 if success else 0.0)
  np.testing.assert_array_equal(read.actions, episode.actions.astype(np.float32))
  np.testing.assert_array_equal(read.proprio, episode.qpos.astype(np.float32))
  for cam, role in aloha.CAMERA_ROLES.items():  # stored as JPEG (quality 95) of each frame, decoded as stored
    expected = np.stack([decode.decode_jpeg(decode.encode_jpeg(frame)) for frame in episode.frames[cam]])
    np.testing.assert_array_equal(read.frames[role], expected, err_msg=cam)
  with h5py.File(path, 'r') as f:
    assert f.attrs['sim'] and f.attrs['success_score'] == float(success)
    np.testing.assert_array_equal(f['value_predictions'][:], episode.values.astype(np.float32))
    relative = f['relative_action'][:]
  actions = episode.actions.astype(np.float32)
  np.testing.assert_array_equal(relative[:-1], actions[1:] - actions[:-1])
  np.testing.assert_array_equal(relative[-1], relative[-2])


def test_rollouts_feed_the_planning_dataset(tmp_path):
  """Evaluation rollouts are planning-model data: the dataset sorts them into success and failure sections."""
  rollout_dir = tmp_path / 'rollouts'
  aloha_sim.save_rollout(str(rollout_dir / 'episode_0.hdf5'), _episode(12, True))
  aloha_sim.save_rollout(str(rollout_dir / 'episode_1.hdf5'), _episode(12, False))
  config = sample_lib.SampleConfig(image_size=32)
  with_rollouts = aloha.load_dataset(aloha.SAMPLE_DIR, config, rollout_dir=str(rollout_dir), lazy=True)
  without = aloha.load_dataset(aloha.SAMPLE_DIR, config, lazy=True)
  assert len(with_rollouts) > len(without)
  kinds = {with_rollouts.locate(i)[0] for i in range(len(with_rollouts))}
  assert mixture.SampleType.FAILURE_ROLLOUT in kinds and mixture.SampleType.SUCCESS_ROLLOUT in kinds
  failure = next(i for i in range(len(with_rollouts))
                 if with_rollouts.locate(i)[0] == mixture.SampleType.FAILURE_ROLLOUT)
  item = with_rollouts.sample(failure, rng=np.random.default_rng(0), world_model=False)
  assert item['rollout_data_mask'] == 1 and item['rollout_data_success_mask'] == 0


def test_empty_rollout_is_refused(tmp_path):
  episode = _episode(4, False)
  empty = aloha_sim.EpisodeResult(**{**episode.__dict__, 'actions': np.zeros((0, 14))})
  with pytest.raises(ValueError, match='empty rollout'):
    aloha_sim.save_rollout(str(tmp_path / 'e.hdf5'), empty)


def test_client_preprocessing_is_the_official_pipeline():
  """Rendered 480x640 frames -> 256 PIL bicubic -> 224 PIL default, as the official ALOHA client (spec 2.1)."""
  sim = aloha_sim.AlohaSim('insertion')
  sim.reset(seed=1)
  frames = sim.render(*aloha_sim.CAMERA_SIZE)
  assert {cam: f.shape for cam, f in frames.items()} == {cam: (480, 640, 3) for cam in aloha_sim.SIM_CAMERAS}
  preprocessed = aloha_sim.preprocess_frames(frames)
  observation = aloha_sim.policy_observation(preprocessed, sim.qpos(), 'insertion')
  for cam, field in aloha_sim.REQUEST_FIELDS.items():
    stage1 = Image.fromarray(frames[cam]).resize((256, 256), Image.BICUBIC)
    np.testing.assert_array_equal(preprocessed[cam], np.asarray(stage1))
    np.testing.assert_array_equal(observation[field], np.asarray(stage1.resize((224, 224))))
  np.testing.assert_array_equal(observation['proprio'], sim.qpos())
  assert observation['task_description'] == 'insertion'


def test_simulator_steps_and_seeds():
  sim = aloha_sim.AlohaSim('transfer_cube', control_hz=25)
  sim.reset(seed=0)
  start = sim.qpos()
  cube_0 = sim.physics.data.qpos[-7:-4].copy()
  target = start.copy()
  target[0] += 0.2  # left waist
  for _ in range(10):
    assert sim.step(target) == 0.0
  assert sim.qpos()[0] > start[0] + 0.1  # the joint follows the absolute target
  sim.reset(seed=1)
  np.testing.assert_allclose(sim.qpos(), start, atol=1e-6)
  assert not np.allclose(sim.physics.data.qpos[-7:-4], cube_0)  # another seed, another cube position
  with pytest.raises(ValueError, match=r'\(14,\)'):
    sim.step(np.zeros(7))
  with pytest.raises(ValueError, match='whole number of physics steps'):
    aloha_sim.AlohaSim('transfer_cube', control_hz=30)
  with pytest.raises(ValueError, match='unknown task'):
    aloha_sim.AlohaSim('fold_shirt')


class _RewardAt(aloha_sim.AlohaSim):
  """The real simulator with its reward replaced by a schedule (a learned policy is needed for real success)."""

  def __init__(self, schedule):
    super().__init__('transfer_cube')
    self.schedule, self.steps = schedule, 0

  def reset(self, seed):
    super().reset(seed)
    self.steps = 0

  def step(self, action):
    super().step(action)
    self.steps += 1
    return float(self.schedule[self.steps - 1])


def test_episode_ends_at_the_maximum_reward_and_counts_as_success(tmp_path):
  sim = _RewardAt([0, 1, 2, 4, 0, 0])
  sim.reset(0)
  rest = sim.qpos()
  chunk = np.tile(rest, (6, 1))
  chunk[2, 0] += 0.3  # a jump the official real-robot client would pause on
  queries = []

  def hold(observation):
    queries.append(observation['proprio'])
    return {'actions': chunk, 'value_prediction': 0.9}

  episode = aloha_sim.run_episode(sim, hold, task_description='transfer cube', seed=0, max_steps=6,
                                  num_open_loop_steps=6, render_size=(32, 32), preprocess_size=32, image_size=32)
  assert episode.length == 4 and episode.success and episode.highest_reward == 4.0
  assert episode.episode_return == 7.0 and len(queries) == 1 and episode.safety_pause_steps == 1
  np.testing.assert_array_equal(episode.actions, chunk[:4])
  read = aloha.read_rollout(aloha_sim.save_rollout(str(tmp_path / 'episode_0.hdf5'), episode), 32)
  assert read.success and read.terminal_reward == 1.0 and read.num_steps == 4
  failed = aloha_sim.run_episode(_RewardAt([0, 3, 3, 3]), hold, task_description='transfer cube', seed=0,
                                 max_steps=4, num_open_loop_steps=2, render_size=(32, 32), preprocess_size=32,
                                 image_size=32)
  assert failed.length == 4 and not failed.success and failed.highest_reward == 3.0
  np.testing.assert_array_equal(failed.query_steps, [0, 2])


def test_parse_response():
  chunk = np.arange(50 * 14, dtype=np.float64).reshape(50, 14)
  actions, value, future = aloha_sim.parse_response({'actions': list(chunk), 'value_predictions': 0.25,
                                                     'future_image_predictions': None})
  np.testing.assert_array_equal(actions, chunk)
  assert value == 0.25 and future is None
  _, value, _ = aloha_sim.parse_response({'actions': chunk})
  assert np.isnan(value)
  with pytest.raises(ValueError, match='"error"'):
    aloha_sim.parse_response('error')
  with pytest.raises(ValueError, match='"actions"'):
    aloha_sim.parse_response({'value_prediction': 0.5})
  with pytest.raises(ValueError, match=r'\(chunk, 14\)'):
    aloha_sim.parse_response({'actions': np.zeros((50, 7))})
  with pytest.raises(ValueError, match='non-finite'):
    aloha_sim.parse_response({'actions': np.full((50, 14), np.nan)})


def test_command_line_errors(capsys):
  with pytest.raises(SystemExit) as exit_info:
    aloha_sim.main(['--help'])
  assert exit_info.value.code == 0
  assert '--num_open_loop_steps' in capsys.readouterr().out
  with pytest.raises(SystemExit):
    aloha_sim.main(['--dit_dir', 'x', '--out', 'y'])
  assert '--dit_dir needs --vae_dir' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    aloha_sim.main(['--out', 'y'])  # no policy source
