"""RoboCasa demonstrations and rollouts in the released on-disk formats (official
cosmos_policy/datasets/robocasa_dataset.py:RoboCasaDataset).

Demonstrations (robomimic layout): per file, groups `data/demo_<k>` (numeric k order) with
`obs/robot0_agentview_left_rgb` (primary), `obs/robot0_agentview_right_rgb` (secondary) and
`obs/robot0_eye_in_hand_rgb` (wrist), raw or `*_jpeg`; `actions` (T, 12) of which the first 7 are used (the rest
drive the mobile base); `robot_states` (T, 9); the task string is the demo group's attr `task_description`.
Every HDF5 file under the data directory is a demo file.

Rollouts: one episode per file, top-level `primary_images`, `secondary_images`, `wrist_images` (or `*_jpeg`),
`actions` (first 7 used), `proprio`; attrs `task_description` and `success` (terminal reward 1 or 0).

Differences from the official reader, on purpose: files are sorted, and count mismatches or missing keys are
errors naming the file and key (the official code does not check them).
"""

from __future__ import annotations

import numpy as np

from cosmos_jax.data import readers
from cosmos_jax.data.episodes import Episode
from cosmos_jax.policy import layout as layout_lib

LAYOUT = layout_lib.LAYOUTS['robocasa']
# Dataset camera -> slot role, from the policy layout.
CAMERA_ROLES = dict(zip(LAYOUT.camera_sources, LAYOUT.cameras))
ROLLOUT_CAMERAS = {'primary_images': 'image', 'secondary_images': 'image2',
                   'wrist_images': 'wrist_image'}  # dataset -> role
ACTION_DIM = LAYOUT.action_dim  # first 7 of the 12 stored dimensions


def _actions(path: str, dataset) -> np.ndarray:
  actions = np.asarray(dataset[:], np.float32)
  if actions.ndim != 2 or actions.shape[1] < ACTION_DIM:
    raise ValueError(f'{path}: {dataset.name!r} must be (T, >= {ACTION_DIM}) (the first {ACTION_DIM} dimensions are '
                     f'used), got shape {actions.shape}')
  return actions[:, :ACTION_DIM]


def read_demos(path: str, image_size: int = 224, *, lazy: bool = False) -> list[Episode]:
  """The demonstrations of one RoboCasa demo file; the task string is each demo group's `task_description`."""
  return readers.read_robomimic_demos(
      path, CAMERA_ROLES, image_size, lazy, read_actions=_actions,
      task=lambda demo: readers.read_attr_string(path, demo.attrs, 'task_description', required=True))


def read_rollout(path: str, image_size: int = 224, *, lazy: bool = True) -> Episode:
  """One RoboCasa rollout (top-level images, `actions`, `proprio`; attrs task_description, success)."""
  return readers.read_flat_rollout(path, ROLLOUT_CAMERAS, image_size, lazy, read_actions=_actions)
