"""The gym-aloha environment shared by the demonstrations and the evaluation: seeds, absolute joint targets,
cameras, object positions. Needs gym-aloha (the `test` extra) and headless EGL (MUJOCO_GL=egl)."""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')  # before anything imports mujoco

import numpy as np
import pytest

from cosmos_jax.data import simulator


def test_simulator_steps_and_seeds():
  sim = simulator.AlohaSim('transfer_cube', control_hz=25)
  sim.reset(seed=0)
  start = sim.qpos()
  cube_0 = sim.object_position('red_box_joint')
  target = start.copy()
  target[0] += 0.2  # left waist
  for _ in range(10):
    assert sim.step(target) == 0.0
  assert sim.qpos()[0] > start[0] + 0.1  # the joint follows the absolute target
  sim.reset(seed=1)
  np.testing.assert_allclose(sim.qpos(), start, atol=1e-6)
  assert not np.allclose(sim.object_position('red_box_joint'), cube_0)  # another seed, another cube position
  sim.reset(seed=0)
  np.testing.assert_array_equal(sim.object_position('red_box_joint'), cube_0)  # gym-aloha's seeding
  with pytest.raises(ValueError, match=r'\(14,\)'):
    sim.step(np.zeros(7))
  with pytest.raises(ValueError, match='no object joint'):
    sim.object_position('red_peg_joint')
  with pytest.raises(ValueError, match='whole number of physics steps'):
    simulator.AlohaSim('transfer_cube', control_hz=30)
  with pytest.raises(ValueError, match='unknown task'):
    simulator.AlohaSim('fold_shirt')


def test_cameras_and_objects():
  sim = simulator.AlohaSim('insertion')
  sim.reset(seed=2)
  frames = sim.render(48, 64)
  assert {cam: f.shape for cam, f in frames.items()} == {cam: (48, 64, 3) for cam in simulator.SIM_CAMERAS}
  assert len({f.tobytes() for f in frames.values()}) == 3  # three different views
  peg, socket = sim.object_position('red_peg_joint'), sim.object_position('blue_socket_joint')
  assert 0.1 <= peg[0] <= 0.2 and -0.2 <= socket[0] <= -0.1  # gym-aloha's sampling ranges
  assert simulator.task_description('insertion') == 'insertion'


def _cam_high_64(sim, seed):
  from cosmos_jax.data import decode  # pylint: disable=g-import-not-at-top
  sim.reset(seed)
  return decode.resize_square(sim.render(*simulator.CAMERA_SIZE)['cam_high'][None], 64)[0].astype(int)


def _red_pixels(frame):
  return int(((frame[..., 0] > 120) & (frame[..., 1] < 80) & (frame[..., 2] < 80)).sum())


def test_cam_high_frames_the_workspace_so_the_objects_show_at_64_px():
  """cam_high looks straight down at the task's workspace (simulator.CAM_HIGH_VIEWS; gym-aloha's view leaves the
  cube about 6 red pixels at 64 px): the transfer cube is a blob of at least 30 pixels wherever gym-aloha places it
  (seeds at the corners of its range included), the insertion peg (red) and socket (blue) both show."""
  sim = simulator.AlohaSim('transfer_cube')
  for seed in range(8):
    frame = _cam_high_64(sim, seed)
    floor = (frame.max(axis=-1) < 15).mean()
    assert floor < 0.01 and _red_pixels(frame) >= 30, (
        f'seed {seed}: floor fraction {floor:.3f}, cube pixels {_red_pixels(frame)}, cube at '
        f'{sim.object_position("red_box_joint")}')
  sim = simulator.AlohaSim('insertion')
  for seed in range(4):
    frame = _cam_high_64(sim, seed)
    blue = int(((frame[..., 2] > 120) & (frame[..., 0] < 80) & (frame[..., 1] < 80)).sum())
    assert _red_pixels(frame) >= 15 and blue >= 15, f'insertion seed {seed}: peg pixels {_red_pixels(frame)}, ' \
                                                    f'socket pixels {blue}'
