"""Scripted demonstrators for gym-aloha transfer cube and insertion, planned from the scene geometry.

Each arm follows a list of `Move`s: reach a gripper pose (position of the grasp point and orientation) by a given
control step, with a gripper command. Poses are turned into joint targets by damped least-squares inverse kinematics
on the simulator's own MuJoCo model, one solve per control step, warm-started from the previous one, so the joint
trajectory is smooth and the actions are exactly what a joint-space policy would send. A move's target is computed
when the move starts, from the objects' positions at that moment; that lets the second arm's approach correct for how
the object actually sits in the first arm's gripper.

Geometry used (gym-aloha 0.1.5 XMLs): the arms' bases are at x = -/+0.469 m, y = 0.5, facing each other along x; the
table top is z = 0. The finger pads span 0.064 .. 0.154 m along the gripper link's x axis and narrow from +-3 cm to
+-0.5 cm across; `GRASP_POINT` (0.13 m) sits in their distal part, where the pads are narrow enough (< 1.2 cm half
width) to grasp beside the other gripper's fingers.

- Transfer cube (4 cm cube, x in [0, 0.2], y in [0.4, 0.6]): the right gripper comes from above, fingers closing
  along y, grasps the cube 1 cm above its centre and lifts it to the meeting point (0, 0.5, 0.25). The left gripper,
  pointing along +x with its fingers closing along z, moves in at the cube's measured height, closes on its top and
  bottom faces (the right fingers hold the y faces); the right gripper opens and withdraws upwards, the left arm pulls
  the cube away. Reward 4 (the cube held by the left gripper off the table) from about step 250 to the end.
- Insertion (12x2x2 cm peg at x in [0.1, 0.2]; 12 cm square socket tube at x in [-0.2, -0.1]): each gripper grasps
  its object at its centre from above (fingers along y on the long faces), both lift to 0.2 m and meet on a line
  along x; the socket is held still while the peg, re-aligned with the socket's measured axis, slides in from +x
  until it touches the pin inside (reward 4), and is pressed on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from cosmos_jax.data import simulator

ARM_JOINTS = ('waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate')
GRASP_POINT = 0.13  # along the gripper link's x axis, in the distal part of the finger pads
# Damping of the per-step IK solve that tracks a move. Near the straight-wrist singularity an almost undamped solve
# swings forearm roll and wrist rotate by up to 1.4 rad in a few steps (2.9 rad per step), in a direction that
# differs from seed to seed: motion a policy learning from the demonstrations cannot predict from the images. At 0.1
# no per-step change exceeds 0.17 rad, and the scripted success rates are unchanged (README).
TRACKING_DAMPING = 0.1
OPEN, CLOSED = 1.0, 0.0  # normalised gripper commands
TABLE_Z = 0.0
CUBE_HALF_SIZE = 0.02
MEETING_POINT = np.array([0.0, 0.5, 0.25])  # where the cube changes hands

Pose = tuple[np.ndarray, np.ndarray]  # (position (3,), rotation (3, 3) whose columns are the gripper's axes)


def gripper_frame(pointing: Sequence[float], fingers: Sequence[float]) -> np.ndarray:
  """Rotation of a gripper pointing along `pointing` whose fingers close along `fingers` (made orthogonal)."""
  x = np.asarray(pointing, np.float64)
  x = x / np.linalg.norm(x)
  y = np.asarray(fingers, np.float64)
  y = y - x * np.dot(x, y)
  y = y / np.linalg.norm(y)
  return np.stack([x, y, np.cross(x, y)], axis=1)


# Orientations reachable without rolling the forearm over (checked by the tests' IK round trip).
RIGHT_DOWN = gripper_frame([0, 0, -1], [0, -1, 0])  # right gripper pointing down, fingers closing along y
LEFT_DOWN = gripper_frame([0, 0, -1], [0, 1, 0])  # left gripper pointing down, fingers closing along y
LEFT_ALONG_X = gripper_frame([1, 0, 0], [0, 0, 1])  # left gripper pointing at the right arm, fingers along z


def _quaternion(rotation: np.ndarray) -> np.ndarray:
  """Unit quaternion (w, x, y, z) of a rotation matrix (branch on the largest diagonal term for stability)."""
  m = rotation
  trace = np.trace(m)
  if trace > 0:
    s = 2.0 * np.sqrt(1.0 + trace)
    q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
  else:
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
    q = np.zeros(4)
    q[0] = (m[k, j] - m[j, k]) / s
    q[1 + i] = 0.25 * s
    q[1 + j] = (m[j, i] + m[i, j]) / s
    q[1 + k] = (m[k, i] + m[i, k]) / s
  q = np.asarray(q, np.float64)
  return q / np.linalg.norm(q)


def slerp(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
  """Rotation a fraction of the way from rotation `a` to rotation `b` (shortest arc)."""
  qa, qb = _quaternion(a), _quaternion(b)
  if np.dot(qa, qb) < 0:
    qb = -qb
  angle = np.arccos(np.clip(np.dot(qa, qb), -1.0, 1.0))
  q = qa if angle < 1e-9 else (np.sin((1 - fraction) * angle) * qa + np.sin(fraction * angle) * qb) / np.sin(angle)
  q = q / np.linalg.norm(q)
  w, x, y, z = q
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                   [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                   [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


class ArmKinematics:
  """Forward and inverse kinematics of one arm's grasp point, on a private copy of the simulator's model data."""

  def __init__(self, physics, side: str):
    import mujoco  # pylint: disable=g-import-not-at-top  # optional simulator dependency

    if side not in ('left', 'right'):
      raise ValueError(f'side must be "left" or "right", got {side!r}')
    self._mujoco = mujoco
    self._model = physics.model.ptr
    self._data = mujoco.MjData(self._model)
    self._body = self._model.body(f'vx300s_{side}/gripper_link').id
    joints = [self._model.joint(f'vx300s_{side}/{name}') for name in ARM_JOINTS]
    self._qpos_index = np.array([j.qposadr[0] for j in joints])
    self._dof_index = np.array([j.dofadr[0] for j in joints])
    self._low = np.array([self._model.jnt_range[j.id][0] for j in joints])
    self._high = np.array([self._model.jnt_range[j.id][1] for j in joints])
    self._jacobian_position = np.zeros((3, self._model.nv))
    self._jacobian_rotation = np.zeros((3, self._model.nv))

  def forward(self, joints: np.ndarray) -> Pose:
    self._data.qpos[self._qpos_index] = joints
    self._mujoco.mj_kinematics(self._model, self._data)
    rotation = self._data.xmat[self._body].reshape(3, 3).copy()
    return self._data.xpos[self._body] + rotation[:, 0] * GRASP_POINT, rotation

  def inverse(self, pose: Pose, initial: np.ndarray, iterations: int = 50, damping: float = 1e-4) -> np.ndarray:
    """Joint angles (6,) that put the grasp point at `pose`, found from `initial` (joint limits respected)."""
    position, rotation = pose
    joints = np.array(initial, np.float64)
    error_quaternion, rotation_error = np.zeros(4), np.zeros(3)
    for _ in range(iterations):
      current, current_rotation = self.forward(joints)
      self._mujoco.mju_mat2Quat(error_quaternion, (rotation @ current_rotation.T).reshape(-1))
      self._mujoco.mju_quat2Vel(rotation_error, error_quaternion, 1.0)
      error = np.concatenate([position - current, rotation_error])
      if np.abs(error).max() < 1e-6:
        break
      self._mujoco.mj_comPos(self._model, self._data)
      self._mujoco.mj_jac(self._model, self._data, self._jacobian_position, self._jacobian_rotation, current,
                          self._body)
      jacobian = np.concatenate([self._jacobian_position[:, self._dof_index],
                                 self._jacobian_rotation[:, self._dof_index]])
      step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping * np.eye(6), error)
      joints = np.clip(joints + step, self._low, self._high)
    return _unroll_forearm(joints)


def _unroll_forearm(joints: np.ndarray) -> np.ndarray:
  """The same gripper orientation with |forearm_roll| <= pi/2: roll r, wrist w, rotate v equals roll r - pi,
  wrist -w, rotate v + pi (rolling the forearm half a turn flips the wrist). Near the straight-wrist singularity the
  solver may drift to the rolled-over branch, which sits at the joint limit."""
  joints = joints.copy()
  if abs(joints[3]) > np.pi / 2:
    joints[3] -= np.pi * np.sign(joints[3])
    joints[4] = -joints[4]
    joints[5] = (joints[5] + 2 * np.pi) % (2 * np.pi) - np.pi
  return joints


Target = Callable[[simulator.AlohaSim, Pose], Pose]  # (simulator, previous target pose) -> new target pose


@dataclasses.dataclass(frozen=True)
class Move:
  """Reach `target` (evaluated when the move starts) by control step `end`, moving the gripper to `gripper`."""

  end: int
  target: Target
  gripper: float


def hold(_, previous: Pose) -> Pose:
  return previous


def fixed(position: Sequence[float], rotation: np.ndarray) -> Target:
  return lambda sim, previous: (np.asarray(position, np.float64), rotation)


def relative_to(joint: str, offset: Sequence[float], rotation: np.ndarray, z: float | None = None) -> Target:
  """The object's current position plus `offset` (optionally with an absolute height `z`)."""

  def target(sim, previous):
    position = sim.object_position(joint) + np.asarray(offset, np.float64)
    if z is not None:
      position[2] = z
    return position, rotation

  return target


def carry(joint: str, destination: Callable[[simulator.AlohaSim], np.ndarray]) -> Target:
  """Moves the gripper so that the object it holds (at its current offset in the gripper, whatever the arm's
  tracking error) ends at `destination(sim)`."""

  def target(sim, previous):
    return previous[0] + destination(sim) - sim.object_position(joint), previous[1]

  return target


def shifted(offset: Sequence[float]) -> Target:
  return lambda sim, previous: (previous[0] + np.asarray(offset, np.float64), previous[1])


class _ArmScript:
  """Steps one arm through its moves: smooth (cosine) interpolation of position and orientation from the previous
  target to the current one, linear interpolation of the gripper command."""

  def __init__(self, kinematics: ArmKinematics, moves: Sequence[Move], joints: np.ndarray, gripper: float):
    if not moves or any(b.end <= a.end for a, b in zip(moves, moves[1:])) or moves[0].end <= 0:
      raise ValueError(f'moves must end at increasing steps > 0, got {[m.end for m in moves]}')
    self._kinematics = kinematics
    self._moves = list(moves)
    self._joints = np.asarray(joints, np.float64)
    self._start_pose = kinematics.forward(self._joints)
    self._start_gripper = float(gripper)
    self._index, self._start_step, self._target = -1, 0, None

  def action(self, sim: simulator.AlohaSim, step: int) -> np.ndarray:
    """(7,) joint targets and gripper command for `step` (called for steps 0, 1, 2, ... in order)."""
    while self._index < 0 or (step >= self._moves[self._index].end and self._index + 1 < len(self._moves)):
      if self._index >= 0:
        self._start_pose, self._start_gripper = self._target, self._moves[self._index].gripper
        self._start_step = self._moves[self._index].end
      self._index += 1
      self._target = self._moves[self._index].target(sim, self._start_pose)
    move = self._moves[self._index]
    fraction = float(np.clip((step + 1 - self._start_step) / (move.end - self._start_step), 0.0, 1.0))
    smooth = 0.5 - 0.5 * np.cos(np.pi * fraction)
    position = self._start_pose[0] + smooth * (self._target[0] - self._start_pose[0])
    rotation = slerp(self._start_pose[1], self._target[1], smooth)
    self._joints = self._kinematics.inverse((position, rotation), self._joints, damping=TRACKING_DAMPING)
    gripper = self._start_gripper + fraction * (move.gripper - self._start_gripper)
    return np.append(self._joints, gripper)


class ScriptedPolicy:
  """A whole-episode script for both arms; `policy(sim, step)` -> (14,) action, steps called in order from 0."""

  def __init__(self, sim: simulator.AlohaSim, left: Sequence[Move], right: Sequence[Move]):
    qpos = sim.qpos()
    self._arms = (_ArmScript(ArmKinematics(sim.physics, 'left'), left, qpos[:6], qpos[6]),
                  _ArmScript(ArmKinematics(sim.physics, 'right'), right, qpos[7:13], qpos[13]))
    self._next_step = 0

  def __call__(self, sim: simulator.AlohaSim, step: int) -> np.ndarray:
    if step != self._next_step:
      raise ValueError(f'scripted policy stepped out of order: expected step {self._next_step}, got {step}')
    self._next_step += 1
    return np.concatenate([arm.action(sim, step) for arm in self._arms])


def transfer_cube_policy(sim: simulator.AlohaSim) -> ScriptedPolicy:
  """Right picks the cube up, hands it over to the left at MEETING_POINT (see the module docstring)."""
  cube = 'red_box_joint'
  grasp_z = TABLE_Z + CUBE_HALF_SIZE + 0.01  # 1 cm above the centre: the fingertips clear the table by 6 mm
  right = [
      Move(60, relative_to(cube, [0, 0, 0], RIGHT_DOWN, z=grasp_z + 0.1), OPEN),
      Move(100, relative_to(cube, [0, 0, 0], RIGHT_DOWN, z=grasp_z), OPEN),
      Move(120, hold, CLOSED),
      Move(130, hold, CLOSED),
      Move(200, fixed(MEETING_POINT + [0, 0, 0.01], RIGHT_DOWN), CLOSED),
      Move(265, hold, CLOSED),
      Move(285, hold, OPEN),
      # Back towards its base: pointing down from higher up is past the wrist's limit.
      Move(330, shifted([0.1, 0, 0.03]), OPEN),
  ]
  left = [
      Move(150, fixed(MEETING_POINT + [-0.12, 0, 0], LEFT_ALONG_X), OPEN),
      Move(200, hold, OPEN),
      # 1 cm past the cube's centre as it actually hangs in the right gripper.
      Move(245, relative_to(cube, [0.01, 0, 0], LEFT_ALONG_X), OPEN),
      Move(265, hold, CLOSED),
      Move(330, hold, CLOSED),
  ]
  return ScriptedPolicy(sim, left, right)


PEG_HALF_HEIGHT = 0.01
PIN_END = 0.04  # the pin spans +-4 cm along x from the socket's centre
PEG_HALF_LENGTH = 0.06
INSERTION_HEIGHT = 0.2


def insertion_policy(sim: simulator.AlohaSim) -> ScriptedPolicy:
  """Left holds the socket still, right slides the peg in along x until it touches the pin (module docstring)."""
  peg, socket = 'red_peg_joint', 'blue_socket_joint'
  peg_grasp_z = TABLE_Z + 0.026  # fingertips 2 mm above the table: the peg is only 2 cm tall
  socket_grasp_z = TABLE_Z + 0.03  # the side walls reach 4 cm up

  def socket_line(depth):
    """Where the peg's centre goes: on the socket's measured axis, `depth` past the pin's end."""
    return lambda sim: sim.object_position(socket) + [PIN_END + PEG_HALF_LENGTH - depth, 0, 0]

  right = [
      Move(60, relative_to(peg, [0, 0, 0], RIGHT_DOWN, z=peg_grasp_z + 0.1), OPEN),
      Move(100, relative_to(peg, [0, 0, 0], RIGHT_DOWN, z=peg_grasp_z), OPEN),
      Move(120, hold, CLOSED),
      Move(130, hold, CLOSED),
      Move(200, carry(peg, lambda sim: np.array([0.12, 0.5, INSERTION_HEIGHT])), CLOSED),
      Move(240, hold, CLOSED),
      Move(280, carry(peg, socket_line(-0.03)), CLOSED),
      Move(300, hold, CLOSED),
      Move(370, carry(peg, socket_line(0.01)), CLOSED),
  ]
  left = [
      Move(60, relative_to(socket, [0, 0, 0], LEFT_DOWN, z=socket_grasp_z + 0.1), OPEN),
      Move(100, relative_to(socket, [0, 0, 0], LEFT_DOWN, z=socket_grasp_z), OPEN),
      Move(120, hold, CLOSED),
      Move(130, hold, CLOSED),
      Move(200, carry(socket, lambda sim: np.array([-0.1, 0.5, INSERTION_HEIGHT])), CLOSED),
  ]
  return ScriptedPolicy(sim, left, right)


POLICIES = {'transfer_cube': transfer_cube_policy, 'insertion': insertion_policy}


@dataclasses.dataclass
class ScriptedEpisode:
  """One scripted episode: qpos[t] is observed before actions[t]; rewards[t] follows actions[t]."""

  task: str
  seed: int
  qpos: np.ndarray  # (T, 14)
  qvel: np.ndarray  # (T, 14)
  actions: np.ndarray  # (T, 14)
  rewards: np.ndarray  # (T,)
  max_reward: float

  @property
  def success(self) -> bool:
    """The simulator's success: the reward reached its maximum (the evaluation stops there)."""
    return bool(self.rewards.max() >= self.max_reward)

  @property
  def held_to_the_end(self) -> bool:
    return bool(self.rewards[-1] >= self.max_reward)


def held_offsets(rng: np.random.Generator, num_steps: int, scale: float, until: int, hold: int) -> np.ndarray:
  """(num_steps, 14) offsets for the arm joints (radians), uniform in +-scale and redrawn every `hold` steps before
  step `until`, zero from then on; the grippers are never offset."""
  if scale < 0 or hold < 1 or until < 0:
    raise ValueError(f'held_offsets needs scale >= 0, hold >= 1 and until >= 0, got {scale}, {hold}, {until}')
  offsets = np.zeros((num_steps, 14))
  draws = rng.uniform(-scale, scale, (-(-until // hold), 14))
  draws[:, [6, 13]] = 0.0
  offsets[:until] = np.repeat(draws, hold, axis=0)[:until][:num_steps]
  return offsets


def run(sim: simulator.AlohaSim, seed: int, num_steps: int = simulator.EPISODE_STEPS,
        observe: Callable[[int], None] | None = None, offsets: np.ndarray | None = None) -> ScriptedEpisode:
  """Runs the task's scripted policy for `num_steps` control steps (not stopping at success); `observe(t)` is
  called before action t is applied (e.g. to render the cameras).

  `offsets` (num_steps, 14), e.g. `held_offsets`, are added to the actions the simulator executes, not to the
  recorded ones (DART-style noise injection): the episode then shows the arm off the scripted path, labelled with
  the scripted actions that lead back to it."""
  if offsets is not None and np.shape(offsets) != (num_steps, 14):
    raise ValueError(f'offsets must have shape ({num_steps}, 14), got {np.shape(offsets)}')
  if sim.task not in POLICIES:
    raise ValueError(f'no scripted policy for task {sim.task!r}; known: {sorted(POLICIES)}')
  sim.reset(seed)
  policy = POLICIES[sim.task](sim)
  qpos, qvel, actions, rewards = [], [], [], []
  for t in range(num_steps):
    qpos.append(sim.qpos())
    qvel.append(sim.qvel())
    if observe is not None:
      observe(t)
    actions.append(policy(sim, t))
    rewards.append(sim.step(actions[-1] if offsets is None else actions[-1] + offsets[t]))
  return ScriptedEpisode(sim.task, seed, np.asarray(qpos), np.asarray(qvel), np.asarray(actions),
                         np.asarray(rewards), sim.max_reward)
