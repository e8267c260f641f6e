"""The RoboCasa request protocol: what the official RoboCasa evaluation (NVlabs/cosmos-policy 18a2acc,
experiments/robot/robocasa/run_robocasa_eval.py) hands to `cosmos_utils.get_action`, sent over the wire.

Request: `primary_image` (robot0_agentview_left), `secondary_image` (robot0_agentview_right), `wrist_image`
(robot0_eye_in_hand) uint8 [H, W, 3] of any size, flipped upside down by the client as the official loop does
(`flip_images`); `proprio` [9] = gripper qpos (2), end-effector position (3), quaternion (4); `task_description`;
optional `return_all_query_results`. Preprocessing as LIBERO's (JPEG q95 round trip, resize to 224).

Response: `actions` [32, 12] float64 and `manipulation_actions` [32, 7]. The policy predicts a chunk of 32
seven-dimensional manipulation actions (the official loop executes the first 16, `num_open_loop_steps`); the
RoboCasa environment (a mobile manipulator) takes 12-dimensional actions, so the official loop appends the mobile
base action [0, 0, 0, 0, -1] (base still, arm mode) to each action it executes. `actions` carries every action of
the chunk padded that way, ready for `env.step`; `pad_mobile_base=False` answers the 7-dimensional chunk as
`actions` instead. Other fields as ALOHA's.
"""

from __future__ import annotations

import numpy as np

from cosmos_jax.serve.protocols import base
from cosmos_jax.serve.protocols import libero

# Official run_robocasa_eval.py: appended to each 7-dim action when the environment's action_dim is 12.
MOBILE_BASE_ACTION = (0.0, 0.0, 0.0, 0.0, -1.0)
ENV_ACTION_DIM = 12


def pad_mobile_base(actions: np.ndarray) -> np.ndarray:
  """[..., 7] manipulation actions -> [..., 12] with the official idle mobile-base action appended."""
  actions = np.asarray(actions)
  if actions.shape[-1] != 7:
    raise ValueError(f'expected 7-dim manipulation actions, got shape {actions.shape}')
  base_action = np.broadcast_to(np.asarray(MOBILE_BASE_ACTION, actions.dtype), actions.shape[:-1] + (5,))
  return np.concatenate([actions, base_action], axis=-1)


class RoboCasaProtocol(libero.LiberoProtocol):
  """LIBERO's protocol with a second third-person camera, a 32-step chunk and the mobile-base padding."""

  name = 'robocasa'

  def __init__(self, *, image_size: int, pad_mobile_base: bool = True, **kwargs):
    super().__init__(image_size=image_size, **kwargs)
    self.pad_mobile_base = pad_mobile_base

  def metadata(self) -> dict:
    meta = super().metadata()
    meta['env_action_dim'] = ENV_ACTION_DIM if self.pad_mobile_base else self.layout.action_dim
    return meta

  def response(self, result: base.QueryResult) -> dict:
    out = super().response(result)
    if self.pad_mobile_base:
      out['manipulation_actions'] = result.actions
      out['actions'] = pad_mobile_base(result.actions)
      if 'all_actions' in out:
        out['all_actions'] = [pad_mobile_base(a) for a in out['all_actions']]
    return out
