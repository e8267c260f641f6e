"""Synthetic raw ALOHA recordings (the layout of the official ALOHA recorder, as preprocess_split_aloha_data.py reads
it): attrs['sim'], observations/{qpos,qvel,effort} (T, 14) float64, action (T, 14) float64 and
observations/images/<cam> (T, H, W, 3) uint8 for cam_high, cam_left_wrist, cam_right_wrist and cam_low (which the
preprocessing drops). Small frames keep the fixtures small; the resize to a square still runs."""

import os

import h5py
import numpy as np

CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist', 'cam_low')
HEIGHT, WIDTH = 48, 64
EPISODES = {'episode_0.hdf5': 9, 'episode_1.hdf5': 7, 'episode_2.hdf5': 8, 'episode_3.hdf5': 6, 'episode_4.hdf5': 7}


def images(seed: int, camera: int, steps: int) -> np.ndarray:
  y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
  out = np.empty((steps, HEIGHT, WIDTH, 3), np.uint8)
  for t in range(steps):
    for c in range(3):
      out[t, :, :, c] = np.clip(128 + 110 * np.sin((x + 4 * t) / (7 + camera + seed) + c) * np.cos(y / 11), 0, 255)
  return out


def write_episode(path: str, seed: int, steps: int, *, sim: bool = True) -> None:
  rng = np.random.default_rng(seed)
  with h5py.File(path, 'w') as f:
    f.attrs['sim'] = sim
    obs = f.create_group('observations')
    for key in ('qpos', 'qvel', 'effort'):
      obs[key] = rng.normal(size=(steps, 14))
    f['action'] = rng.normal(size=(steps, 14))
    group = obs.create_group('images')
    for c, cam in enumerate(CAMERAS):
      group[cam] = images(seed, c, steps)


def write_raw_dataset(directory: str) -> str:
  os.makedirs(directory, exist_ok=True)
  for seed, (name, steps) in enumerate(EPISODES.items()):
    write_episode(os.path.join(directory, name), seed, steps)
  return directory
