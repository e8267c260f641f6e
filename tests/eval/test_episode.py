"""One closed-loop episode: the official client's preprocessing, the response parsing, the action queue, the stop
at the maximum reward. Needs gym-aloha (the `test` extra) and headless EGL (MUJOCO_GL=egl)."""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')  # before anything imports mujoco

import numpy as np
import pytest
from PIL import Image

from cosmos_jax.data import aloha, simulator
from cosmos_jax.eval import episode as episode_lib
from cosmos_jax.eval import rollout


def test_client_preprocessing_is_the_official_pipeline():
  """Rendered 480x640 frames -> 256 PIL bicubic -> 224 PIL default, as the official ALOHA client."""
  sim = simulator.AlohaSim('insertion')
  sim.reset(seed=1)
  frames = sim.render(*simulator.CAMERA_SIZE)
  assert {cam: f.shape for cam, f in frames.items()} == {cam: (480, 640, 3) for cam in simulator.SIM_CAMERAS}
  preprocessed = episode_lib.preprocess_frames(frames)
  observation = episode_lib.policy_observation(preprocessed, sim.qpos(), 'insertion')
  for cam, field in episode_lib.REQUEST_FIELDS.items():
    stage1 = Image.fromarray(frames[cam]).resize((256, 256), Image.BICUBIC)
    np.testing.assert_array_equal(preprocessed[cam], np.asarray(stage1))
    np.testing.assert_array_equal(observation[field], np.asarray(stage1.resize((224, 224))))
  np.testing.assert_array_equal(observation['proprio'], sim.qpos())
  assert observation['task_description'] == 'insertion'


class _RewardAt(simulator.AlohaSim):
  """The real simulator with its reward replaced by a schedule."""

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

  episode = episode_lib.run_episode(sim, hold, task_description='transfer cube', seed=0, max_steps=6,
                                    num_open_loop_steps=6, render_size=(32, 32), preprocess_size=32, image_size=32)
  assert episode.length == 4 and episode.success and episode.highest_reward == 4.0
  assert episode.episode_return == 7.0 and len(queries) == 1 and episode.safety_pause_steps == 1
  np.testing.assert_array_equal(episode.actions, chunk[:4])
  read = aloha.read_rollout(rollout.save_rollout(str(tmp_path / 'episode_0.hdf5'), episode), 32)
  assert read.success and read.terminal_reward == 1.0 and read.num_steps == 4
  failed = episode_lib.run_episode(_RewardAt([0, 3, 3, 3]), hold, task_description='transfer cube', seed=0,
                                   max_steps=4, num_open_loop_steps=2, render_size=(32, 32), preprocess_size=32,
                                   image_size=32)
  assert failed.length == 4 and not failed.success and failed.highest_reward == 3.0
  np.testing.assert_array_equal(failed.query_steps, [0, 2])


def test_a_policy_is_told_each_episodes_seed():
  seeds = []

  class Policy:

    def start_episode(self, seed):
      seeds.append(seed)

    def __call__(self, observation):
      return {'actions': np.tile(observation['proprio'], (2, 1))}

  sim = simulator.AlohaSim('transfer_cube')
  for seed in (4, 9):
    episode_lib.run_episode(sim, Policy(), task_description='transfer cube', seed=seed, max_steps=2,
                            num_open_loop_steps=2, render_size=(16, 16), preprocess_size=16, image_size=16)
  assert seeds == [4, 9]


def test_parse_response():
  chunk = np.arange(50 * 14, dtype=np.float64).reshape(50, 14)
  actions, value, future = episode_lib.parse_response({'actions': list(chunk), 'value_predictions': 0.25,
                                                       'future_image_predictions': None})
  np.testing.assert_array_equal(actions, chunk)
  assert value == 0.25 and future is None
  _, value, _ = episode_lib.parse_response({'actions': chunk})
  assert np.isnan(value)
  with pytest.raises(ValueError, match='"error"'):
    episode_lib.parse_response('error')
  with pytest.raises(ValueError, match='"actions"'):
    episode_lib.parse_response({'value_prediction': 0.5})
  with pytest.raises(ValueError, match=r'\(chunk, 14\)'):
    episode_lib.parse_response({'actions': np.zeros((50, 7))})
  with pytest.raises(ValueError, match='non-finite'):
    episode_lib.parse_response({'actions': np.full((50, 14), np.nan)})
