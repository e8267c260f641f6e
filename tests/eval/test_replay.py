"""Replay: a demonstration's recorded actions, fed chunk by chunk through the evaluation loop that runs policies,
from the demonstration's seed, reach the demonstration's maximum reward. This pins the conventions independently
of learning: which action meets which observation (the proprio each query sees is the state recorded at that step),
the gripper convention (the recorded normalised gripper commands close on the cube again), and the camera roles
(each request image is the demonstration's frame of the same camera at that step).

Needs gym-aloha (the `test` extra) and headless EGL (MUJOCO_GL=egl).
"""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')  # before anything imports mujoco

import h5py
import numpy as np
import pytest

from cosmos_jax.data import aloha, bundled, simulator
from cosmos_jax.eval import episode as episode_lib
from cosmos_jax.eval import policies

SIZE = 32  # request images compared with the demonstration's frames at this size
ROLE_OF_FIELD = {field: aloha.CAMERA_ROLES[cam] for cam, field in episode_lib.REQUEST_FIELDS.items()}


def _replay(path):
  with h5py.File(path, 'r') as f:
    seed, rewards = int(f.attrs['seed']), np.asarray(f['rewards'][:])
  demo = aloha.read_demo(path, SIZE)
  replay = policies.DemoReplay([path], chunk_size=50)
  observations = []

  def policy(observation):
    observations.append(observation)
    return replay(observation)

  policy.start_episode = replay.start_episode
  sim = simulator.AlohaSim('transfer_cube')
  episode = episode_lib.run_episode(sim, policy, task_description=demo.command, seed=seed,
                                    max_steps=demo.num_steps, num_open_loop_steps=50, render_size=(96, 128),
                                    preprocess_size=SIZE, image_size=SIZE)
  return demo, rewards, episode, observations, replay


@pytest.mark.parametrize('index', [0])
def test_a_bundled_demonstration_replays_to_its_maximum_reward(index):
  path = aloha.find_episode_files(str(bundled.sample_dir('aloha')))[index]
  demo, rewards, episode, observations, replay = _replay(path)

  assert rewards.max() == 4.0
  assert episode.success and episode.highest_reward == rewards.max()
  first_success = int(np.argmax(rewards >= 4.0))
  assert episode.length == first_success + 1  # the loop stops at the first maximum reward, as the recording reached it
  np.testing.assert_array_equal(episode.actions, demo.actions[:episode.length].astype(np.float64))
  # Observation t is the state before action t in both: the loop's states follow the recording (float32 storage).
  np.testing.assert_allclose(episode.qpos, demo.proprio[:episode.length], atol=2e-3)
  assert max(replay.proprio_errors) < 2e-3
  # The gripper convention: the loop's gripper readings follow the recorded ones through the close and release.
  np.testing.assert_allclose(episode.qpos[:, [6, 13]], demo.proprio[:episode.length, [6, 13]], atol=2e-3)

  # Camera roles and timing: query k (step 50 k) sees the recorded frame of the same camera at step 50 k, and
  # looks less like the other cameras' frames.
  assert [int(s) for s in episode.query_steps] == list(range(0, episode.length, 50))
  for step, observation in zip(episode.query_steps, observations):
    for field, role in ROLE_OF_FIELD.items():
      errors = {other: np.abs(observation[field].astype(int) - demo.frames[other][step].astype(int)).mean()
                for other in ROLE_OF_FIELD.values()}
      assert errors[role] < 10.0, (step, field, errors)  # rendered at 96x128 here, at 480x640 for the recording
      assert errors[role] == min(errors.values()), (step, field, errors)
    if step >= 50:  # and not the frame of the previous query
      image = observation['primary_image'].astype(int)
      assert (np.abs(image - demo.frames['image'][step].astype(int)).mean()
              < np.abs(image - demo.frames['image'][step - 50].astype(int)).mean())


@pytest.mark.slow
@pytest.mark.parametrize('index', [1, 2])
def test_every_bundled_demonstration_replays_to_its_maximum_reward(index):
  path = aloha.find_episode_files(str(bundled.sample_dir('aloha')))[index]
  _, rewards, episode, _, _ = _replay(path)
  assert episode.success and episode.highest_reward == rewards.max() == 4.0
