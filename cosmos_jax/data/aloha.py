"""ALOHA demonstrations and rollouts in the released on-disk formats (official
cosmos_policy/datasets/aloha_dataset.py:ALOHADataset).

Demonstrations (`nvidia/ALOHA-Cosmos-Policy`, `preprocessed/`): `<data_dir>/<task_folder>/{train,val}/
episode_<i>.hdf5` with `observations/qpos` (T, 14), `action` (T, 14) and either
`observations/video_paths/{cam_high,cam_left_wrist,cam_right_wrist}` (MP4 file names relative to the HDF5) or raw
`observations/images/{...}` (T, H, W, 3) uint8. Raw images win when both exist, as in the official reader.

Rollouts (planning-model data): per-episode HDF5 with attrs `task_description`, `success` and optionally
`success_score`, `action`, `observations/qpos`, and JPEG bytes `primary_images_jpeg`, `wrist_left_images_jpeg`,
`wrist_right_images_jpeg` (or one `wrist_images_jpeg`), or the demo image layouts.

Differences from the official reader, on purpose: files are sorted (the official order is `os.walk` order, which
differs between file systems; sorting makes the step index, and so sharding, identical on every host), and bad
episodes are errors naming the file and key (the official code skips rollouts with a frame/action mismatch with a
warning; pass `skip_mismatched_rollouts=True` for that behaviour).
"""

from __future__ import annotations

import functools
import os

import h5py
import numpy as np

from cosmos_jax.data import decode, readers
from cosmos_jax.data.episodes import Episode, check_episode, require_keys
from cosmos_jax.policy import layout as layout_lib

find_episode_files = readers.find_episode_files

LAYOUT = layout_lib.LAYOUTS['aloha']
# Dataset camera -> slot role, from the policy layout: left wrist, right wrist, primary (cam_high).
CAMERAS = LAYOUT.camera_sources
CAMERA_ROLES = dict(zip(LAYOUT.camera_sources, LAYOUT.cameras))
PROPRIO_KEY = 'observations/qpos'
ACTION_KEY = 'action'

# Substring of the task folder name -> task string (official `ALOHADataset.__init__`, first match wins).
TASKS_BY_FOLDER = (
    ('fold_shirt', 'fold shirt'),
    ('candies_in_bowl', 'put candies in bowl'),
    ('candy_in_bag', 'put candy in bag'),
    ('flatten_shirt', 'flatten shirt'),
    ('brown_chicken_wing_on_plate', 'put brown chicken wing on plate'),
    ('purple_eggplant_on_plate', 'put purple eggplant on plate'),
    ('transfer_cube', 'transfer cube'),  # cosmos_jax additions: the gym-aloha tasks (make_sample.py).
    ('insertion', 'insertion'),
)


def task_from_path(path: str) -> str:
  """Task string from the folder two levels above the file (`<task_folder>/train/episode_0.hdf5`)."""
  folder = os.path.normpath(os.path.abspath(path)).split(os.sep)[-3]
  for needle, task in TASKS_BY_FOLDER:
    if needle in folder:
      return task
  raise ValueError(f'{path}: cannot derive the task from folder name {folder!r}; known folder substrings: '
                   f'{[needle for needle, _ in TASKS_BY_FOLDER]}')


def _read_string(dataset) -> str:
  value = dataset[()]
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _load_mp4_frames(video_paths: dict[str, str], image_size: int) -> dict[str, np.ndarray]:
  return {CAMERA_ROLES[cam]: decode.resize_square(decode.read_mp4(path), image_size)
          for cam, path in video_paths.items()}


def _video_paths(path: str, obs) -> dict[str, str]:
  require_keys(path, obs, ['video_paths'])
  require_keys(path, obs['video_paths'], CAMERAS)
  directory = os.path.dirname(path)
  return {cam: os.path.join(directory, _read_string(obs['video_paths'][cam])) for cam in CAMERAS}


def read_demo(path: str, image_size: int = 224, *, lazy: bool = False) -> Episode:
  """One ALOHA demonstration. Frames are decoded (and resized to `image_size`) now, or on demand if `lazy`.

  Raises ValueError naming the file and key for a missing key, a qpos/action length mismatch, an empty episode
  or a frame count that differs from the action count; FileNotFoundError/ValueError for a missing or unreadable MP4.
  """
  with h5py.File(path, 'r') as f:
    require_keys(path, f, ['observations', ACTION_KEY])
    obs = f['observations']
    require_keys(path, obs, ['qpos'])
    actions = np.asarray(f[ACTION_KEY][:])
    proprio = np.asarray(f[PROPRIO_KEY][:])
    has_raw = 'images' in obs and all(cam in obs['images'] for cam in CAMERAS)
    if has_raw:
      frames = {CAMERA_ROLES[cam]: decode.resize_square(np.asarray(obs['images'][cam][:]), image_size)
                for cam in CAMERAS}
      video_paths = None
    else:
      if 'video_paths' not in obs:
        raise ValueError(f'{path}: missing key "observations/images" (raw frames) or "observations/video_paths" '
                         f'(MP4 files) for cameras {list(CAMERAS)}')
      video_paths = _video_paths(path, obs)
      frames = None
  command = task_from_path(path)
  if video_paths is not None:
    for cam, video in video_paths.items():
      if not os.path.exists(video):
        raise FileNotFoundError(f'{path}: observations/video_paths/{cam} points to {video}, which does not exist')
    loader = functools.partial(_load_mp4_frames, video_paths, image_size)
    if not lazy:
      frames = loader()
  counts = {f'observations/images/{cam}' if video_paths is None else video_paths[cam]:
            frames[CAMERA_ROLES[cam]].shape[0] for cam in CAMERAS} if frames is not None else {}
  check_episode(path, proprio, actions, counts, proprio_key=PROPRIO_KEY, action_key=ACTION_KEY)
  return Episode(path=path, command=command, proprio=proprio, actions=actions, success=True, terminal_reward=1.0,
                 frames=frames, frame_loader=None if frames is not None else loader)


# In the official preference order for the primary camera (a rollout without `primary_images_jpeg` falls back to
# the next key present).
JPEG_KEYS = ('primary_images_jpeg', 'wrist_images_jpeg', 'wrist_left_images_jpeg', 'wrist_right_images_jpeg')


def _load_jpeg_frames(path: str, keys: dict[str, str], image_size: int) -> dict[str, np.ndarray]:
  return {role: decode.resize_square(decode.read_jpeg_sequence(path, key), image_size) for role, key in keys.items()}


def read_rollout(path: str, image_size: int = 224, *, lazy: bool = True) -> Episode:
  """One ALOHA rollout (JPEG-in-HDF5, raw images or MP4). Task from attr `task_description` (else the folder).

  `success_score` (else `success`) is the terminal reward; any value > 0 gives the success value curve.
  """
  with h5py.File(path, 'r') as f:
    require_keys(path, f, [ACTION_KEY, 'observations'])
    require_keys(path, f['observations'], ['qpos'])
    actions = np.asarray(f[ACTION_KEY][:], np.float32)
    proprio = np.asarray(f[PROPRIO_KEY][:], np.float32)
    command = f.attrs.get('task_description', '')
    command = command.decode('utf-8') if isinstance(command, bytes) else str(command)
    success = bool(f.attrs.get('success', False))
    score = f.attrs.get('success_score', None)
    terminal_reward = float(score) if score is not None else (1.0 if success else 0.0)
    jpeg_present = [k for k in JPEG_KEYS if k in f]
    obs = f['observations']
    if jpeg_present:
      primary = next(k for k in JPEG_KEYS if k in f)
      left = 'wrist_left_images_jpeg' if 'wrist_left_images_jpeg' in f else (
          'wrist_images_jpeg' if 'wrist_images_jpeg' in f else None)
      right = 'wrist_right_images_jpeg' if 'wrist_right_images_jpeg' in f else None
      if left is None or right is None:
        raise ValueError(f'{path}: the ALOHA layout needs both wrist cameras; found JPEG keys {jpeg_present} '
                         '(expected wrist_left_images_jpeg and wrist_right_images_jpeg)')
      keys = {'image': primary, 'wrist_image': left, 'wrist_image2': right}
      counts = {key: len(f[key]) for key in dict.fromkeys(keys.values())}
      loader = functools.partial(_load_jpeg_frames, path, keys, image_size)
      frames = None
    elif 'images' in obs and all(cam in obs['images'] for cam in CAMERAS):
      frames = {CAMERA_ROLES[cam]: decode.resize_square(np.asarray(obs['images'][cam][:]), image_size)
                for cam in CAMERAS}
      counts = {f'observations/images/{cam}': frames[CAMERA_ROLES[cam]].shape[0] for cam in CAMERAS}
      loader = None
    else:
      video_paths = _video_paths(path, obs)
      loader = functools.partial(_load_mp4_frames, video_paths, image_size)
      frames = loader()
      counts = {video_paths[cam]: frames[CAMERA_ROLES[cam]].shape[0] for cam in CAMERAS}
  if not command:
    command = task_from_path(path)
  check_episode(path, proprio, actions, counts, proprio_key=PROPRIO_KEY, action_key=ACTION_KEY)
  if frames is None and not lazy:
    frames, loader = loader(), None
  return Episode(path=path, command=command, proprio=proprio, actions=actions, success=success,
                 terminal_reward=terminal_reward, frames=frames, frame_loader=loader)


def read_demos(path: str, image_size: int = 224, *, lazy: bool = False) -> list[Episode]:
  """The demonstration of one ALOHA episode file (one per file), as a list like the other benchmarks' readers."""
  return [read_demo(path, image_size, lazy=lazy)]
