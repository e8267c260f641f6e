"""Evaluation episodes in the ALOHA rollout format, the planning model's training data.

Rollout files: attrs `task_description`, `success`, `success_score` (1.0/0.0, as the official client writes for
y/n), `sim`, `seed`; `action` (T, 14) the executed targets, `observations/qpos` (T, 14) the state before each action
(`qvel` from the simulator, `effort` zeros, `relative_action` as the official writer computes it), and the frames as
JPEG bytes (PIL quality 95) `primary_images_jpeg`, `wrist_left_images_jpeg`, `wrist_right_images_jpeg` at the
preprocessing size, so reading them at 224 repeats the policy's own 256 -> 224 step. Extra datasets `query_steps`,
`value_predictions` and `rewards` are ignored by the reader (`cosmos_jax.data.aloha.read_rollout`). (The official
real-robot client stores raw-size MP4s under `observations/video_paths` instead; the reader accepts both layouts,
JPEG keeps one file per episode.)
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from cosmos_jax.data import decode
from cosmos_jax.eval import episode as episode_lib

# Rollout JPEG dataset of each camera (official rollout writer).
ROLLOUT_JPEG_KEYS = {'cam_high': 'primary_images_jpeg', 'cam_left_wrist': 'wrist_left_images_jpeg',
                     'cam_right_wrist': 'wrist_right_images_jpeg'}


def save_rollout(path: str, episode: episode_lib.EpisodeResult, *, policy_name: str = '',
                 control_hz: float | None = None) -> str:
  """Writes the episode in the ALOHA rollout format (JPEG variant); see the module docstring."""
  if episode.length == 0:
    raise ValueError('refusing to save an empty rollout (no executed actions)')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  actions = episode.actions.astype(np.float32)
  relative = np.zeros_like(actions)
  if episode.length >= 2:  # as the official writer: next target minus this one, the last repeated
    relative[:-1] = actions[1:] - actions[:-1]
    relative[-1] = relative[-2]
  with h5py.File(path, 'w') as f:
    f.attrs['sim'] = True
    f.attrs['task_description'] = episode.task_description
    f.attrs['success'] = bool(episode.success)
    f.attrs['success_score'] = float(episode.success)
    f.attrs['seed'] = int(episode.seed)
    f.attrs['max_reward'] = float(episode.max_reward)
    if policy_name:
      f.attrs['policy_name'] = policy_name
    if control_hz is not None:
      f.attrs['control_hz'] = float(control_hz)
    obs = f.create_group('observations')
    obs['qpos'] = episode.qpos.astype(np.float32)
    obs['qvel'] = episode.qvel.astype(np.float32)
    obs['effort'] = np.zeros_like(episode.qpos, np.float32)
    f['action'] = actions
    f['relative_action'] = relative
    jpeg_dtype = h5py.vlen_dtype(np.dtype('uint8'))
    for cam, key in ROLLOUT_JPEG_KEYS.items():
      data = f.create_dataset(key, (episode.length,), dtype=jpeg_dtype)
      for i, frame in enumerate(episode.frames[cam]):
        data[i] = np.frombuffer(decode.encode_jpeg(frame), np.uint8)
    f['rewards'] = episode.rewards.astype(np.float32)
    f['query_steps'] = episode.query_steps
    f['value_predictions'] = episode.values.astype(np.float32)
  return path
