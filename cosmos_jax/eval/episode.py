"""One closed-loop episode, as the official ALOHA client runs it (`run_aloha_eval.py`), with the simulator in
place of the robot:

* every control step renders the simulator's three cameras (`simulator.SIM_CAMERAS`) at 480x640, the real cameras'
  size, and resizes them to the offline preprocessing size (256, PIL bicubic);
* when the action queue is empty the client sends {primary_image, left_wrist_image, right_wrist_image (resized
  256 -> 224, PIL default), proprio = raw qpos, task_description};
* the first `num_open_loop_steps` (50 for ALOHA) of the returned absolute joint targets are executed open loop;
* success is the simulator's: the reward reaches the task's maximum (4 for both tasks); the episode ends there.

The observation of step t is taken before action t, as in the demonstrations (`data.make_sample`): a policy trained
on demo step t answers with actions t, t+1, ... The policy is any callable `observation dict -> response dict` with
`actions` ((chunk, 14) or a list of (14,)), `value_prediction` (the official server's `value_predictions` spelling
is accepted too) and optionally `future_image_predictions`. A policy with a `start_episode(seed)` method is told
each episode's seed before its first query (the demonstration replay uses it).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping

import numpy as np

from cosmos_jax.data import decode, simulator

# Request field of each camera (official ALOHA client).
REQUEST_FIELDS = {'cam_high': 'primary_image', 'cam_left_wrist': 'left_wrist_image',
                  'cam_right_wrist': 'right_wrist_image'}
PREPROCESS_SIZE = 256  # offline preprocessing size of the ALOHA training videos
# The official client pauses the real robot when an arm joint target exceeds the current joint position by more
# than this (signed difference, joints 0-5 and 7-12); the simulator needs no pause, the count is reported.
MAX_JOINT_DIFFERENCE = 0.15
ARM_JOINTS = np.r_[0:6, 7:13]

Policy = Callable[[dict], Mapping]


def preprocess_frames(frames: Mapping[str, np.ndarray], preprocess_size: int = PREPROCESS_SIZE
                      ) -> dict[str, np.ndarray]:
  """Camera frames -> the offline preprocessing size (PIL bicubic; a copy when already that size)."""
  return {cam: decode.resize_square(frame[None], preprocess_size)[0] for cam, frame in frames.items()}


def policy_observation(preprocessed: Mapping[str, np.ndarray], qpos: np.ndarray, task_description: str,
                       image_size: int = 224) -> dict:
  """The request of the official ALOHA client from frames already at the preprocessing size (then -> image_size)."""
  observation = {REQUEST_FIELDS[cam]: decode.resize_square(preprocessed[cam][None], image_size)[0]
                 for cam in simulator.SIM_CAMERAS}
  observation['proprio'] = np.asarray(qpos, np.float64)
  observation['task_description'] = task_description
  return observation


def parse_response(response) -> tuple[np.ndarray, float, Mapping | None]:
  """(actions (chunk, 14) float64, value or NaN when the policy gives none, future images or None)."""
  if isinstance(response, str):
    raise ValueError(f'policy returned the string {response!r} (the official server answers "error" on failure)')
  if not isinstance(response, Mapping) or 'actions' not in response:
    raise ValueError(f'policy response must be a dict with "actions", got {type(response).__name__}'
                     f'{" with keys " + str(sorted(response)) if isinstance(response, Mapping) else ""}')
  actions = np.asarray(response['actions'], np.float64)
  if actions.ndim != 2 or actions.shape[1] != simulator.ACTION_DIM or actions.shape[0] == 0:
    raise ValueError(f'policy "actions" must be (chunk, {simulator.ACTION_DIM}), got shape {actions.shape}')
  if not np.all(np.isfinite(actions)):
    raise ValueError('policy "actions" contain non-finite values')
  value = response.get('value_prediction', response.get('value_predictions'))
  value = float(np.asarray(value, np.float64).reshape(())) if value is not None else float('nan')
  return actions, value, response.get('future_image_predictions')


@dataclasses.dataclass
class EpisodeResult:
  """One closed-loop episode. Per-step arrays have length T (the observation of step t precedes action t)."""

  task_description: str
  seed: int
  frames: dict[str, np.ndarray]  # camera -> (T, S, S, 3) uint8 at the preprocessing size
  qpos: np.ndarray  # (T, 14)
  qvel: np.ndarray  # (T, 14)
  actions: np.ndarray  # (T, 14) executed joint targets
  rewards: np.ndarray  # (T,) reward after each action
  query_steps: np.ndarray  # (Q,) step index of each policy query
  values: np.ndarray  # (Q,) predicted value at each query (NaN if the policy gave none)
  future_images: list  # (Q,) predicted future cam_high (H, W, 3) uint8, or None
  max_reward: float
  query_seconds: list  # (Q,) seconds per policy call, as seen by the client
  policy_timings: list  # per query, the policy's own stage timings when its response has `timing`
  render_seconds: float
  sim_seconds: float
  wall_seconds: float

  @property
  def length(self) -> int:
    return int(self.actions.shape[0])

  @property
  def highest_reward(self) -> float:
    return float(self.rewards.max()) if self.length else 0.0

  @property
  def success(self) -> bool:
    return self.highest_reward >= self.max_reward

  @property
  def episode_return(self) -> float:
    return float(self.rewards.sum())

  @property
  def safety_pause_steps(self) -> int:
    """Steps at which the official real-robot client would have paused (see MAX_JOINT_DIFFERENCE)."""
    jump = self.actions[:, ARM_JOINTS] - self.qpos[:, ARM_JOINTS]
    return int(np.any(jump > MAX_JOINT_DIFFERENCE, axis=1).sum())


def run_episode(sim: simulator.AlohaSim, policy: Policy, *, task_description: str, seed: int, max_steps: int,
                num_open_loop_steps: int = 50, render_size: tuple[int, int] = simulator.CAMERA_SIZE,
                preprocess_size: int = PREPROCESS_SIZE, image_size: int = 224) -> EpisodeResult:
  """Runs one episode: query when the action queue is empty, execute `num_open_loop_steps` actions, stop at
  success (reward == max reward) or after `max_steps` control steps."""
  if max_steps < 1 or num_open_loop_steps < 1:
    raise ValueError(f'max_steps ({max_steps}) and num_open_loop_steps ({num_open_loop_steps}) must be >= 1')
  start = time.perf_counter()
  sim.reset(seed)
  if hasattr(policy, 'start_episode'):
    policy.start_episode(seed)
  frames = {cam: [] for cam in simulator.SIM_CAMERAS}
  qpos, qvel, actions, rewards = [], [], [], []
  query_steps, values, future_images, query_seconds, policy_timings = [], [], [], [], []
  render_seconds = sim_seconds = 0.0
  queue = collections.deque()
  for t in range(max_steps):
    tick = time.perf_counter()
    step_frames = preprocess_frames(sim.render(*render_size), preprocess_size)
    render_seconds += time.perf_counter() - tick
    state = sim.qpos()
    for cam, frame in step_frames.items():
      frames[cam].append(frame)
    if not queue:
      observation = policy_observation(step_frames, state, task_description, image_size)
      tick = time.perf_counter()
      response = policy(observation)
      query_seconds.append(time.perf_counter() - tick)
      chunk, value, future = parse_response(response)
      if isinstance(response.get('timing'), Mapping):  # PolicyRunner's per-stage seconds
        policy_timings.append({k: float(v) for k, v in response['timing'].items()})
      if chunk.shape[0] < num_open_loop_steps:
        raise ValueError(f'policy returned {chunk.shape[0]} actions, fewer than num_open_loop_steps='
                         f'{num_open_loop_steps}')
      queue.extend(chunk[:num_open_loop_steps])
      query_steps.append(t)
      values.append(value)
      future_images.append(_future_primary(future))
    action = queue.popleft()
    qpos.append(state)
    qvel.append(sim.qvel())
    actions.append(action)
    tick = time.perf_counter()
    rewards.append(sim.step(action))
    sim_seconds += time.perf_counter() - tick
    if rewards[-1] >= sim.max_reward:
      break
  return EpisodeResult(
      task_description=task_description, seed=seed,
      frames={cam: np.stack(f) for cam, f in frames.items()},
      qpos=np.asarray(qpos, np.float64), qvel=np.asarray(qvel, np.float64), actions=np.asarray(actions, np.float64),
      rewards=np.asarray(rewards, np.float64), query_steps=np.asarray(query_steps, np.int64),
      values=np.asarray(values, np.float64), future_images=future_images, max_reward=sim.max_reward,
      query_seconds=query_seconds, policy_timings=policy_timings, render_seconds=render_seconds,
      sim_seconds=sim_seconds, wall_seconds=time.perf_counter() - start)


def _future_primary(future) -> np.ndarray | None:
  if not isinstance(future, Mapping) or future.get('future_image') is None:
    return None
  image = np.asarray(future['future_image'])
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'future_image_predictions["future_image"] must be (H, W, 3), got shape {image.shape}')
  return np.clip(image, 0, 255).astype(np.uint8)

