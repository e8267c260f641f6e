"""Regenerates the bundled ALOHA-format sample (`cosmos_jax/data/sample_aloha/`) from the gym-aloha simulator.

    MUJOCO_GL=egl python -m cosmos_jax.data.make_sample [--out DIR] [--episodes 3] [--steps 60]

Needs `pip install gym-aloha` (MuJoCo) and, headless, the EGL packages `libegl1 libegl-mesa0` (osmesa did not
work here). What it writes is the released ALOHA demonstration layout (policy_spec 11.1), so the official reader
and ours read it the same way:

    <out>/transfer_cube_scripted/train/episode_<i>.hdf5   attr sim=True; observations/{qpos,qvel,effort} (T,14)
                                                          float32; action, relative_action (T,14) float32;
                                                          observations/video_paths/cam_* -> the MP4 names
    <out>/transfer_cube_scripted/train/episode_<i>_cam_{high,left_wrist,right_wrist}.mp4   256x256, mp4v, 25 fps
    <out>/dataset_statistics.json                        official schema, from the demos
    <out>/text_store/                                    task "transfer cube": a STAND-IN embedding (fixed-seed
                                                          random, NOT T5); real runs import the official T5 pickle

Cameras: gym-aloha's `top`, `left_wrist`, `right_wrist` -> cam_high, cam_left_wrist, cam_right_wrist; frames are
rendered at 480x640 and resized to 256x256 with PIL bicubic, like the official preprocessing.

The policy is scripted in joint space: piecewise-linear moves through per-episode jittered waypoints (both arms
reach towards the cube, the left gripper closes and lifts, the arms meet, the grippers hand over). It is a motion
generator for a format/pipeline sample, not a demonstration that reliably solves the task.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

TASK_FOLDER = 'transfer_cube_scripted'
TASK = 'transfer cube'
CAMERAS = {'cam_high': 'top', 'cam_left_wrist': 'left_wrist', 'cam_right_wrist': 'right_wrist'}
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sample_aloha')

# (fraction of the episode, left arm 6 joints + gripper, right arm 6 joints + gripper); gripper 1 open, 0 closed.
_WAYPOINTS = (
    (0.00, [0.0, -0.96, 1.16, 0.0, -0.30, 0.0, 1.0], [0.0, -0.96, 1.16, 0.0, -0.30, 0.0, 1.0]),
    (0.30, [0.25, -0.35, 0.85, 0.05, 0.15, -0.05, 1.0], [-0.20, -0.70, 1.00, -0.05, -0.10, 0.05, 1.0]),
    (0.45, [0.25, -0.30, 0.85, 0.05, 0.20, -0.05, 0.0], [-0.20, -0.60, 0.95, -0.05, -0.05, 0.05, 1.0]),
    (0.70, [0.10, -0.70, 1.00, 0.10, -0.20, 0.10, 0.0], [-0.10, -0.55, 0.95, -0.10, -0.15, -0.10, 1.0]),
    (0.85, [0.10, -0.70, 1.00, 0.10, -0.20, 0.10, 0.0], [-0.10, -0.55, 0.95, -0.10, -0.15, -0.10, 0.0]),
    (1.00, [0.05, -0.80, 1.05, 0.0, -0.25, 0.0, 1.0], [-0.15, -0.65, 1.00, 0.0, -0.20, 0.0, 0.0]),
)


def scripted_actions(num_steps: int, rng: np.random.Generator) -> np.ndarray:
  """(num_steps, 14) joint targets through jittered waypoints (grippers not jittered)."""
  fractions = np.asarray([w[0] for w in _WAYPOINTS])
  points = np.asarray([w[1] + w[2] for w in _WAYPOINTS], np.float64)
  jitter = rng.normal(0.0, 0.06, points.shape)
  jitter[:, [6, 13]] = 0.0
  jitter[0] = 0.0  # start at the simulator's rest pose
  points = points + jitter
  t = np.linspace(0.0, 1.0, num_steps)
  return np.stack([np.interp(t, fractions, points[:, d]) for d in range(14)], axis=1).astype(np.float32)


def record_episode(env, seed: int, num_steps: int):
  """Runs the scripted policy; returns qpos, qvel, actions (T, 14) and frames {cam: (T, 480, 640, 3)}."""
  rng = np.random.default_rng(seed)
  env.reset(seed=seed)
  physics = env.unwrapped._env.physics  # pylint: disable=protected-access
  actions = scripted_actions(num_steps, rng)
  qpos, qvel, frames = [], [], {cam: [] for cam in CAMERAS}
  for action in actions:
    # The observation of step t is recorded before action t is applied (as in ALOHA recordings).
    task = env.unwrapped._env.task  # pylint: disable=protected-access
    qpos.append(task.get_qpos(physics))
    qvel.append(task.get_qvel(physics))
    for cam, sim_cam in CAMERAS.items():
      frames[cam].append(physics.render(height=480, width=640, camera_id=sim_cam))
    env.step(action.astype(np.float64))
  return (np.asarray(qpos, np.float32), np.asarray(qvel, np.float32), actions,
          {cam: np.stack(f) for cam, f in frames.items()})


def write_mp4(path: str, frames_rgb: np.ndarray, fps: int = 25) -> None:
  import cv2  # pylint: disable=g-import-not-at-top

  height, width = frames_rgb.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
  if not writer.isOpened():
    raise RuntimeError(f'OpenCV could not open an mp4v writer for {path}')
  for frame in frames_rgb:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()


def write_episode(directory: str, index: int, qpos, qvel, actions, frames, image_size: int = 256) -> str:
  import h5py  # pylint: disable=g-import-not-at-top

  from cosmos_jax.data import decode  # pylint: disable=g-import-not-at-top

  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'episode_{index}.hdf5')
  with h5py.File(path, 'w') as f:
    f.attrs['sim'] = True
    obs = f.create_group('observations')
    obs['qpos'] = qpos
    obs['qvel'] = qvel
    obs['effort'] = np.zeros_like(qpos)
    f['action'] = actions
    f['relative_action'] = actions - qpos
    paths = obs.create_group('video_paths')
    for cam, cam_frames in frames.items():
      name = f'episode_{index}_{cam}.mp4'
      write_mp4(os.path.join(directory, name), decode.resize_square(cam_frames, image_size))
      paths[cam] = name.encode('utf-8')
  return path


def generate(out: str, num_episodes: int = 3, num_steps: int = 60, seed: int = 0) -> None:
  import gymnasium as gym  # pylint: disable=g-import-not-at-top
  import gym_aloha  # pylint: disable=g-import-not-at-top,unused-import

  from cosmos_jax.data import aloha, stats, text  # pylint: disable=g-import-not-at-top

  env = gym.make('gym_aloha/AlohaTransferCube-v0')
  train_dir = os.path.join(out, TASK_FOLDER, 'train')
  for i in range(num_episodes):
    qpos, qvel, actions, frames = record_episode(env, seed + i, num_steps)
    path = write_episode(train_dir, i, qpos, qvel, actions, frames)
    print(f'wrote {path} ({num_steps} steps)')
  demos = [aloha.read_demo(p, lazy=True) for p in aloha.find_episode_files(out)]
  stats_path = os.path.join(out, stats.STATISTICS_FILENAME)
  stats.save_statistics(stats.compute_statistics({'actions': d.actions, 'proprio': d.proprio} for d in demos),
                        stats_path)
  stats.load_statistics(stats_path)  # validates (no constant dimension)
  text.stand_in_store([TASK]).save(os.path.join(out, 'text_store'), source='cosmos_jax.data.make_sample')
  print(f'wrote {stats_path} and the stand-in text store')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description='Regenerate the bundled ALOHA-format sample from gym-aloha.')
  parser.add_argument('--out', default=DEFAULT_OUT)
  parser.add_argument('--episodes', type=int, default=3)
  parser.add_argument('--steps', type=int, default=60)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  os.environ.setdefault('MUJOCO_GL', 'egl')
  generate(args.out, args.episodes, args.steps, args.seed)


if __name__ == '__main__':
  main()
