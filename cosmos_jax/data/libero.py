"""LIBERO demonstrations and rollouts in the released on-disk formats (official
cosmos_policy/datasets/libero_dataset.py:LIBERODataset).

Demonstrations (`LIBERO-Cosmos-Policy/success_only/<suite>/<task>_demo.hdf5`, robomimic layout): per file, groups
`data/demo_<k>` (taken in numeric k order) with `obs/agentview_rgb` (primary) and `obs/eye_in_hand_rgb` (wrist),
raw (T, H, W, 3) uint8 or `*_jpeg` bytes, `actions` (T, 7) and `robot_states` (T, 9). The task string comes from
the file name (`task_from_filename`). Every HDF5 file under the data directory is a demo file (no split folder).

Rollouts (`LIBERO-Cosmos-Policy/all_episodes/`): one episode per file, top-level `primary_images` and
`wrist_images` (or `*_jpeg`), `actions`, `proprio`, attrs `task_description` and `success` (terminal reward 1 or
0; LIBERO has no success score).

Differences from the official reader, on purpose: files are sorted, and a frame/action/proprio count mismatch, a
missing key or a file name without the `_demo.hdf5` suffix is an error naming the file (the official code does not
check them and would index past the end or build a wrong task string).
"""

from __future__ import annotations

import os

import numpy as np

from cosmos_jax.data import readers
from cosmos_jax.data.episodes import Episode
from cosmos_jax.policy import layout as layout_lib

LAYOUT = layout_lib.LAYOUTS['libero']
# Dataset camera -> slot role, from the policy layout: eye_in_hand_rgb -> wrist_image, agentview_rgb -> image.
CAMERA_ROLES = dict(zip(LAYOUT.camera_sources, LAYOUT.cameras))
# Rollout files name the cameras by role.
ROLLOUT_CAMERAS = {'primary_images': 'image', 'wrist_images': 'wrist_image'}  # dataset -> role
DEMO_SUFFIX = '_demo.hdf5'


def task_from_filename(path: str) -> str:
  """`KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5` -> 'turn on the stove': drop the `_demo.hdf5` suffix, split on
  '_', and keep the words after the last one containing 'SCENE' (all words if none does)."""
  name = os.path.basename(path)
  if not name.endswith(DEMO_SUFFIX):
    raise ValueError(f'{path}: LIBERO demo file names end with {DEMO_SUFFIX!r} (the task string is derived from '
                     'the name)')
  words = name[:-len(DEMO_SUFFIX)].split('_')
  scene = [i for i, w in enumerate(words) if 'SCENE' in w]
  words = words[scene[-1] + 1:] if scene else words
  task = ' '.join(words)
  if not task:
    raise ValueError(f'{path}: no task words in the file name after the SCENE word')
  return task


def read_demos(path: str, image_size: int = 224, *, lazy: bool = False) -> list[Episode]:
  """The demonstrations of one LIBERO demo file; the task string comes from the file name."""
  command = task_from_filename(path)
  return readers.read_robomimic_demos(path, CAMERA_ROLES, image_size, lazy, task=lambda _: command,
                                      read_actions=_actions)


def _actions(_, dataset) -> np.ndarray:
  return np.asarray(dataset[:], np.float32)


def read_rollout(path: str, image_size: int = 224, *, lazy: bool = True) -> Episode:
  """One LIBERO rollout (top-level images, `actions`, `proprio`; attrs task_description, success)."""
  return readers.read_flat_rollout(path, ROLLOUT_CAMERAS, image_size, lazy,
                                   read_actions=_actions)
