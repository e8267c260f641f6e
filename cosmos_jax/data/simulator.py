"""gym-aloha's bimanual ViperX scenes (transfer cube, insertion) as a MuJoCo environment: the one place that knows
the simulator's tasks, cameras and control rate. The demonstration generator (`make_sample`) and the closed-loop
evaluation (`cosmos_jax.eval`) both step this class, so a recorded demonstration replays exactly in the evaluation
loop.

The tasks, assets and rewards are gym-aloha's (0.1.5), but the dm_control environment is built here with a task
whose observation is only qpos/qvel: gym-aloha's own observation renders three 480x640 images every step, which a
caller that renders its own cameras (or none, when measuring a scripted policy) would throw away.

One departure from gym-aloha's scene: cam_high (gym-aloha's `top` camera, which looks at the table's centre from
0.8 m with a 78-degree field of view) looks straight down at the task's workspace, CAM_HIGH_VIEWS: the region where
the task places its objects, with a margin. At the 64 px of the CPU variants gym-aloha's view leaves the 4 cm cube a
pixel or two wide, which a VAE's 8x8 latent pixel averages away; framed on the workspace it is 6 px wide.

Headless rendering needs MUJOCO_GL=egl (set here before MuJoCo is imported) and the EGL libraries (Debian: libegl1
libegl-mesa0 libgl1-mesa-dri, the last for Mesa's software rasteriser).
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

TASKS = {
    # name -> (gym-aloha scene XML, task description, free joints of the objects)
    'transfer_cube': ('bimanual_viperx_transfer_cube.xml', 'transfer cube', ('red_box_joint',)),
    'insertion': ('bimanual_viperx_insertion.xml', 'insertion', ('red_peg_joint', 'blue_socket_joint')),
}
# Dataset camera name (official ALOHA) -> gym-aloha camera.
SIM_CAMERAS = {'cam_high': 'top', 'cam_left_wrist': 'left_wrist', 'cam_right_wrist': 'right_wrist'}
ACTION_DIM = 14
CAMERA_SIZE = (480, 640)  # (height, width) of the ALOHA cameras
GYM_ALOHA_CONTROL_HZ = 50  # gym-aloha's DT = 0.02 s
EPISODE_STEPS = 400  # full-length episodes, as ACT's simulated tasks (gym-aloha registers 300)
# cam_high per task: a fixed camera at `position` (m, world) looking straight down (image right = +x, up = +y) with
# a vertical field of view `fovy` (degrees). From 0.8 m above the table: transfer cube, x in [-0.1, 0.3] and y in
# [0.3, 0.7] (the cube spawns in x [0, 0.2], y [0.4, 0.6]); insertion, x in [-0.3, 0.3] (socket and peg spawn in
# x [-0.2, -0.1] and [0.1, 0.2], the peg 12 cm long). The arms meet in view.
CAM_HIGH_VIEWS = {
    'transfer_cube': {'position': [0.1, 0.5, 0.8], 'fovy': 30.0},
    'insertion': {'position': [0.0, 0.5, 0.8], 'fovy': 44.0},
}
RENDER_SHADOW_SIZE = 512  # gym-aloha's scene asks for 4096 (see AlohaSim.__init__)


# Beside simulated demonstrations (make_sample) and in the assets of a checkpoint trained on them: per task, how the
# demonstrations were made (seeds, steps, cameras and cam_high's view).
DEMOS_METADATA_FILENAME = 'demos.json'


def read_demos_metadata(directory: str | os.PathLike) -> dict:
  """The demos.json in `directory`, any epath ({} when there is none: recorded data, not simulated)."""
  path = epath.Path(directory) / DEMOS_METADATA_FILENAME
  if not path.exists():
    return {}
  metadata = json.loads(path.read_text(encoding='utf-8'))
  if not isinstance(metadata, dict) or not all(isinstance(entry, dict) for entry in metadata.values()):
    raise ValueError(f'{path}: expected an object of task entries (as make_sample writes), got {metadata!r:.200}')
  return metadata


def check_demos_cameras(metadata: Mapping[str, Mapping[str, Any]], where: str) -> None:
  """Raises ValueError when a task entry of demos.json records another cam_high view than this simulator renders
  for the task: a policy trained on those demonstrations learnt another picture of the scene than the closed loop
  shows it. An entry without `cam_high_view` comes from an older generator (gym-aloha's view, or a 50-degree one)."""
  for task, entry in metadata.items():
    view = entry.get('cam_high_view')
    if view != CAM_HIGH_VIEWS.get(task):
      raise ValueError(f'{where}: the {task} demonstrations were rendered with cam_high view {view} (None: an older '
                       f'generator); the simulator renders {CAM_HIGH_VIEWS.get(task)}. Regenerate them with '
                       'python -m cosmos_jax.data.make_sample (and retrain on them)')


def task_description(task: str) -> str:
  if task not in TASKS:
    raise ValueError(f'unknown task {task!r}; expected one of {sorted(TASKS)}')
  return TASKS[task][1]


class AlohaSim:
  """One gym-aloha scene: `reset(seed)` places the objects as gym-aloha does, `step(action)` applies absolute joint
  targets (arm joints in radians, grippers normalised 0 closed .. 1 open) for one control period."""

  def __init__(self, task: str, control_hz: float = GYM_ALOHA_CONTROL_HZ):
    task_description(task)  # validates the name
    os.environ.setdefault('MUJOCO_GL', 'egl')
    # gym-aloha and dm_control (MuJoCo) are optional: only simulator users install them, and importing MuJoCo
    # must follow the MUJOCO_GL choice above.
    # pylint: disable=g-import-not-at-top
    import mujoco
    from dm_control import mujoco as dm_mujoco
    from dm_control.rl import control
    from gym_aloha import constants, utils
    from gym_aloha.tasks import sim
    # pylint: enable=g-import-not-at-top

    base = {'transfer_cube': sim.TransferCubeTask, 'insertion': sim.InsertionTask}[task]

    class _StateOnlyTask(base):

      def get_observation(self, physics):
        return collections.OrderedDict(qpos=self.get_qpos(physics), qvel=self.get_qvel(physics))

    self.task = task
    self.control_hz = float(control_hz)
    self._gym_aloha_sim = sim
    self._sample_pose = utils.sample_box_pose if task == 'transfer_cube' else (
        lambda seed: np.concatenate(utils.sample_insertion_pose(seed)))
    physics = dm_mujoco.Physics.from_xml_path(str(constants.ASSETS_DIR / TASKS[task][0]))
    substeps = (1.0 / self.control_hz) / physics.model.opt.timestep if control_hz > 0 else 0.5
    if abs(substeps - round(substeps)) > 1e-6:
      raise ValueError(f'control_hz={control_hz} is not a whole number of physics steps of '
                       f'{physics.model.opt.timestep} s (gym-aloha runs at {GYM_ALOHA_CONTROL_HZ} Hz)')
    # Rendering cost on a CPU (Mesa's software rasteriser) is dominated by gym-aloha's 4096 px shadow map and 4x
    # multisampling: 512 px and none render 3.5x faster and look the same at the policy's 64-256 px. Demonstrations
    # and evaluation both render through here, so they see the same images.
    physics.model.vis.quality.shadowsize = RENDER_SHADOW_SIZE
    physics.model.vis.quality.offsamples = 0
    camera = physics.model.name2id(SIM_CAMERAS['cam_high'], 'camera')
    physics.model.cam_mode[camera] = mujoco.mjtCamLight.mjCAMLIGHT_FIXED  # gym-aloha's: aimed at the table
    physics.model.cam_pos[camera] = CAM_HIGH_VIEWS[task]['position']
    physics.model.cam_quat[camera] = (1.0, 0.0, 0.0, 0.0)  # the camera's -z (its view) along the world's -z
    physics.model.cam_fovy[camera] = CAM_HIGH_VIEWS[task]['fovy']
    self._task = _StateOnlyTask()
    self._env = control.Environment(physics, self._task, time_limit=float('inf'),
                                    control_timestep=1.0 / self.control_hz, flat_observation=False)
    self.max_reward = float(self._task.max_reward)
    self.objects = TASKS[task][2]

  @property
  def physics(self):
    return self._env.physics

  def reset(self, seed: int) -> None:
    """Object poses from `seed`, exactly as gym-aloha's `AlohaEnv.reset(seed)` samples them."""
    self._gym_aloha_sim.BOX_POSE[0] = self._sample_pose(seed)  # gym-aloha's tasks read the pose from this global
    self._env.reset()

  def qpos(self) -> np.ndarray:
    return np.asarray(self._task.get_qpos(self.physics), np.float64)

  def qvel(self) -> np.ndarray:
    return np.asarray(self._task.get_qvel(self.physics), np.float64)

  def object_position(self, joint: str) -> np.ndarray:
    """World position (3,) of an object's free joint (see TASKS)."""
    if joint not in self.objects:
      raise ValueError(f'{self.task} has no object joint {joint!r}; it has {list(self.objects)}')
    return np.array(self.physics.named.data.qpos[joint][:3], np.float64)

  def render(self, height: int, width: int) -> dict[str, np.ndarray]:
    """{cam_high, cam_left_wrist, cam_right_wrist} -> (height, width, 3) uint8 RGB."""
    return {cam: np.asarray(self.physics.render(height=height, width=width, camera_id=sim_cam), np.uint8)
            for cam, sim_cam in SIM_CAMERAS.items()}

  def step(self, action: np.ndarray) -> float:
    """Applies one action for one control period; returns the task reward after it (0 .. max_reward)."""
    action = np.asarray(action, np.float64)
    if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
      raise ValueError(f'action must be a finite ({ACTION_DIM},) vector, got shape {action.shape}: {action}')
    return float(self._env.step(action).reward or 0.0)
