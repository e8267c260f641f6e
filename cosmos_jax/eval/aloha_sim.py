"""Closed-loop evaluation of an ALOHA policy in the gym-aloha MuJoCo simulator (transfer cube, insertion).

    MUJOCO_GL=egl python -m cosmos_jax.eval.aloha_sim --task transfer_cube --episodes 10 --out DIR \
        (--tiny | --dit_dir DIT --vae_dir VAE [--planning_dir P] | --server http://HOST:8777)

The loop is the official ALOHA client's (`run_aloha_eval.py`, policy_spec 12), with the simulator in place of the
robot:

* every control step renders the three cameras gym-aloha's scene has, `top` -> cam_high, `left_wrist`,
  `right_wrist`, at 480x640 (the real cameras' size);
* when the action queue is empty the client preprocesses exactly as the official client does (policy_spec 2.1):
  480x640 -> 256x256 PIL bicubic (the offline preprocessing size of the training MP4s), then 256 -> 224 (PIL
  default), and sends {primary_image, left_wrist_image, right_wrist_image, proprio = raw qpos, task_description};
* the first `num_open_loop_steps` (50 for ALOHA) of the returned absolute joint targets are executed open loop;
* success is the simulator's: the episode reward reaches the task's maximum (4 for both tasks; gym-aloha ends the
  episode there too).

The policy is any callable `observation dict -> response dict` with `actions` ((chunk, 14) or a list of (14,)),
`value_prediction` (the official server's `value_predictions` spelling is accepted too) and optionally
`future_image_predictions`: an in-process `PolicyRunner.act`, or a client of the served policy.

Per episode it writes
  <out>/videos/episode_<i>.mp4         left wrist | right wrist | cam_high (| predicted future cam_high), 256 px,
                                       mp4v at the control rate, step/value/reward printed on the frame;
  <out>/plots/episode_<i>_value.png    predicted value at every query and the env reward / max reward over time;
  <out>/rollouts/episode_<i>.hdf5      the ALOHA rollout format (policy_spec 11.2) that
                                       `cosmos_jax.data.aloha.read_rollout` reads (planning-model training data);
and <out>/summary.json (success rate, per-episode success/return/length/values, timings).

Rollout files: attrs `task_description`, `success`, `success_score` (1.0/0.0, as the official client writes for
y/n), `sim`; `action` (T, 14) the executed targets, `observations/qpos` (T, 14) the state before each action
(`qvel` from the simulator, `effort` zeros, `relative_action` as the official writer computes it), and the frames as
JPEG bytes (PIL quality 95) `primary_images_jpeg`, `wrist_left_images_jpeg`, `wrist_right_images_jpeg` at the
256x256 preprocessing size, so reading them at 224 repeats the policy's own 256 -> 224 step. Extra datasets
`query_steps`, `value_predictions` and `rewards` are ignored by the reader. (The official real-robot client stores
raw-size MP4s under `observations/video_paths` instead; the reader accepts both layouts, JPEG keeps one file per
episode.)

summary.json also counts, per episode, the steps at which the official real-robot client would have paused for
safety (an arm joint target more than 0.15 rad above the current position): a policy that evaluates well here but
jumps like that would stall on the robot.

Simulator notes: the tasks, assets and rewards are gym-aloha's, but the dm_control environment is built here with a
task whose observation is only qpos/qvel: gym-aloha's own observation renders three 480x640 images per step that
this loop would throw away (on a CPU renderer that triples the cost). gym-aloha steps at 50 Hz (its scripted demos
are 50 Hz); real ALOHA data and the official client run at 25 Hz, so `control_hz=25` executes each action for two
of gym-aloha's control periods' worth of physics. Headless rendering needs MUJOCO_GL=egl (set by default here) and
the EGL libraries (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri, the last for Mesa's software rasteriser).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cosmos_jax.data import decode, simulator

TASKS = simulator.TASKS
SIM_CAMERAS = simulator.SIM_CAMERAS
AlohaSim = simulator.AlohaSim
# Request field of each camera (policy_spec 12).
REQUEST_FIELDS = {'cam_high': 'primary_image', 'cam_left_wrist': 'left_wrist_image',
                  'cam_right_wrist': 'right_wrist_image'}
# Rollout JPEG dataset of each camera (policy_spec 11.2).
ROLLOUT_JPEG_KEYS = {'cam_high': 'primary_images_jpeg', 'cam_left_wrist': 'wrist_left_images_jpeg',
                     'cam_right_wrist': 'wrist_right_images_jpeg'}
ACTION_DIM = simulator.ACTION_DIM
CAMERA_SIZE = simulator.CAMERA_SIZE
PREPROCESS_SIZE = 256  # offline preprocessing size of the ALOHA training videos (policy_spec 2.1)
GYM_ALOHA_CONTROL_HZ = simulator.GYM_ALOHA_CONTROL_HZ
# The official client pauses the real robot when an arm joint target exceeds the current joint position by more
# than this (signed difference, joints 0-5 and 7-12); the simulator needs no pause, the count is reported.
MAX_JOINT_DIFFERENCE = 0.15
ARM_JOINTS = np.r_[0:6, 7:13]

Policy = Callable[[dict], Mapping]


# ----------------------------------------------------------------------------------------------------------------
# Client side: observation preprocessing and the policy response


def preprocess_frames(frames: Mapping[str, np.ndarray], preprocess_size: int = PREPROCESS_SIZE
                      ) -> dict[str, np.ndarray]:
  """Camera frames -> the offline preprocessing size (PIL bicubic; a copy when already that size)."""
  return {cam: decode.resize_square(frame[None], preprocess_size)[0] for cam, frame in frames.items()}


def policy_observation(preprocessed: Mapping[str, np.ndarray], qpos: np.ndarray, task_description: str,
                       image_size: int = 224) -> dict:
  """The request of the official ALOHA client from frames already at the preprocessing size (then -> image_size)."""
  observation = {REQUEST_FIELDS[cam]: decode.resize_square(preprocessed[cam][None], image_size)[0]
                 for cam in SIM_CAMERAS}
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
  if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or actions.shape[0] == 0:
    raise ValueError(f'policy "actions" must be (chunk, {ACTION_DIM}), got shape {actions.shape}')
  if not np.all(np.isfinite(actions)):
    raise ValueError('policy "actions" contain non-finite values')
  value = response.get('value_prediction', response.get('value_predictions'))
  value = float(np.asarray(value, np.float64).reshape(())) if value is not None else float('nan')
  return actions, value, response.get('future_image_predictions')


# ----------------------------------------------------------------------------------------------------------------
# Episode loop


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


def run_episode(sim: AlohaSim, policy: Policy, *, task_description: str, seed: int, max_steps: int,
                num_open_loop_steps: int = 50, render_size: tuple[int, int] = CAMERA_SIZE,
                preprocess_size: int = PREPROCESS_SIZE, image_size: int = 224) -> EpisodeResult:
  """Runs one episode: query when the action queue is empty, execute `num_open_loop_steps` actions, stop at
  success (reward == max reward) or after `max_steps` control steps."""
  if max_steps < 1 or num_open_loop_steps < 1:
    raise ValueError(f'max_steps ({max_steps}) and num_open_loop_steps ({num_open_loop_steps}) must be >= 1')
  start = time.perf_counter()
  sim.reset(seed)
  frames = {cam: [] for cam in SIM_CAMERAS}
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


# ----------------------------------------------------------------------------------------------------------------
# Outputs: rollout HDF5, MP4, value plot


def save_rollout(path: str, episode: EpisodeResult, *, policy_name: str = '', control_hz: float | None = None) -> str:
  """Writes the episode in the ALOHA rollout format (policy_spec 11.2, JPEG variant); see the module docstring."""
  import h5py  # pylint: disable=g-import-not-at-top

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


def video_frames(episode: EpisodeResult) -> np.ndarray:
  """(T, S + 20, 3|4 * S, 3) uint8: left wrist | right wrist | cam_high (| the last predicted future cam_high)."""
  import cv2  # pylint: disable=g-import-not-at-top

  size = episode.frames['cam_high'].shape[1]
  with_future = any(image is not None for image in episode.future_images)
  columns = 4 if with_future else 3
  out = np.zeros((episode.length, size + 20, columns * size, 3), np.uint8)
  query = -1
  for t in range(episode.length):
    while query + 1 < len(episode.query_steps) and episode.query_steps[query + 1] <= t:
      query += 1
    for c, cam in enumerate(('cam_left_wrist', 'cam_right_wrist', 'cam_high')):
      out[t, 20:, c * size:(c + 1) * size] = episode.frames[cam][t]
    future = episode.future_images[query] if with_future else None
    if future is not None:
      out[t, 20:, 3 * size:] = decode.resize_square(future[None], size)[0]
    value = episode.values[query]
    text = (f't={t}  V={value:.3f}  r={episode.rewards[t]:g}/{episode.max_reward:g}'
            + ('   [last column: predicted future cam_high]' if with_future and size >= 128 else ''))
    cv2.putText(out[t], text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45 if size >= 128 else 0.3, (255, 255, 255), 1,
                cv2.LINE_AA)
  return out


def write_video(path: str, episode: EpisodeResult, fps: float) -> str:
  from cosmos_jax.data import make_sample  # pylint: disable=g-import-not-at-top

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  make_sample.write_mp4(path, video_frames(episode), fps=int(round(fps)))
  return path


def value_plot(episode: EpisodeResult, title: str, size: tuple[int, int] = (720, 360)) -> np.ndarray:
  """(H, W, 3) uint8 plot: predicted value at each query (blue) and env reward / max reward (orange) vs step."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  width, height = size
  left, right, top, bottom = 52, 16, 30, 40
  image = Image.new('RGB', size, 'white')
  draw = ImageDraw.Draw(image)
  steps = max(episode.length, 1)

  def to_px(step, y):
    return (left + (width - left - right) * step / steps, top + (height - top - bottom) * (1.0 - y))

  for i in range(5):
    y = i / 4
    _, py = to_px(0, y)
    draw.line([(left, py), (width - right, py)], fill=(225, 225, 225))
    draw.text((8, py - 6), f'{y:.2f}', fill='black')
  for i in range(6):
    step = round(steps * i / 5)
    px, _ = to_px(step, 0)
    draw.line([(px, height - bottom), (px, height - bottom + 4)], fill='black')
    draw.text((px - 8, height - bottom + 6), str(step), fill='black')
  draw.rectangle([left, top, width - right, height - bottom], outline='black')
  draw.text((width // 2 - 40, height - 16), 'control step', fill='black')
  draw.text((left, 8), title, fill='black')
  reward = np.clip(episode.rewards / episode.max_reward, 0, 1)
  stairs, previous = [to_px(0, 0)], 0.0
  for t, r in enumerate(reward):  # reward[t] is observed after action t, i.e. at step t + 1
    stairs += [to_px(t + 1, previous), to_px(t + 1, r)]
    previous = r
  draw.line(stairs, fill=(230, 120, 20), width=2)
  points = [to_px(s, v) for s, v in zip(episode.query_steps, episode.values) if np.isfinite(v)]
  if len(points) > 1:
    draw.line(points, fill=(30, 80, 200), width=2)
  for px, py in points:
    draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(30, 80, 200))
  legend_x = width - right - 260
  draw.text((legend_x, 8), 'o predicted value', fill=(30, 80, 200))
  draw.text((legend_x + 120, 8), '_ reward / max reward', fill=(230, 120, 20))
  if not points:
    draw.text((left + 10, top + 10), 'the policy returned no value predictions', fill=(200, 0, 0))
  return np.asarray(image)


def write_plot(path: str, episode: EpisodeResult, title: str) -> str:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(value_plot(episode, title)).save(path)
  return path


# ----------------------------------------------------------------------------------------------------------------
# Evaluation driver


def _finite_or_none(x: float):
  return float(x) if np.isfinite(x) else None


def episode_summary(episode: EpisodeResult, index: int, files: Mapping[str, str]) -> dict:
  return {
      'index': index,
      'seed': episode.seed,
      'success': episode.success,
      'return': episode.episode_return,
      'highest_reward': episode.highest_reward,
      'length': episode.length,
      'num_queries': len(episode.query_steps),
      'safety_pause_steps': episode.safety_pause_steps,
      'query_steps': episode.query_steps.tolist(),
      'values': [_finite_or_none(v) for v in episode.values],
      'timings': {
          'wall_seconds': episode.wall_seconds,
          'query_seconds': episode.query_seconds,
          'policy_timings': episode.policy_timings,
          'render_seconds': episode.render_seconds,
          'sim_seconds': episode.sim_seconds,
      },
      **files,
  }


def evaluate(policy: Policy, *, task: str, out_dir: str, episodes: int = 1, max_steps: int = 400,
             num_open_loop_steps: int = 50, seed: int = 0, task_description: str | None = None,
             control_hz: float = GYM_ALOHA_CONTROL_HZ, render_size: tuple[int, int] = CAMERA_SIZE,
             preprocess_size: int = PREPROCESS_SIZE, image_size: int = 224, policy_name: str = '',
             log: Callable[[str], None] | None = print) -> dict:
  """Runs `episodes` episodes (seeds seed, seed+1, ...), writes the per-episode files and summary.json."""
  if episodes < 1:
    raise ValueError(f'episodes must be >= 1, got {episodes}')
  task_description = task_description or simulator.task_description(task)
  sim = AlohaSim(task, control_hz)
  start = time.perf_counter()
  per_episode = []
  for i in range(episodes):
    episode = run_episode(sim, policy, task_description=task_description, seed=seed + i, max_steps=max_steps,
                          num_open_loop_steps=num_open_loop_steps, render_size=render_size,
                          preprocess_size=preprocess_size, image_size=image_size)
    files = {
        'video': write_video(os.path.join(out_dir, 'videos', f'episode_{i}.mp4'), episode, control_hz),
        'value_plot': write_plot(os.path.join(out_dir, 'plots', f'episode_{i}_value.png'), episode,
                                 f'{task} episode {i} (seed {seed + i}): '
                                 f'{"success" if episode.success else "failure"}'),
        'rollout': save_rollout(os.path.join(out_dir, 'rollouts', f'episode_{i}.hdf5'), episode,
                                policy_name=policy_name, control_hz=control_hz),
    }
    per_episode.append(episode_summary(episode, i, {k: os.path.relpath(v, out_dir) for k, v in files.items()}))
    if log:
      log(f'episode {i}: success={episode.success} return={episode.episode_return:g} length={episode.length} '
          f'queries={len(episode.query_steps)} wall={episode.wall_seconds:.1f}s')
  queries = [s for e in per_episode for s in e['timings']['query_seconds']]
  summary = {
      'task': task,
      'task_description': task_description,
      'policy': policy_name,
      'episodes': episodes,
      'success_rate': float(np.mean([e['success'] for e in per_episode])),
      'mean_return': float(np.mean([e['return'] for e in per_episode])),
      'mean_length': float(np.mean([e['length'] for e in per_episode])),
      'settings': {'max_steps': max_steps, 'num_open_loop_steps': num_open_loop_steps, 'seed': seed,
                   'control_hz': control_hz, 'render_size': list(render_size), 'preprocess_size': preprocess_size,
                   'image_size': image_size},
      'timings': {
          'wall_seconds': time.perf_counter() - start,
          'num_queries': len(queries),
          'first_query_seconds': queries[0] if queries else None,  # includes compilation for an in-process policy
          'mean_query_seconds_after_first': float(np.mean(queries[1:])) if len(queries) > 1 else None,
      },
      'per_episode': per_episode,
  }
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'summary.json'), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2)
  return summary


# ----------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m cosmos_jax.eval.aloha_sim',
      description='Closed-loop evaluation of an ALOHA policy in gym-aloha (MuJoCo, headless with MUJOCO_GL=egl): '
                  'success rate, per-episode MP4, value plot, rollout HDF5 and summary.json.')
  parser.add_argument('--task', choices=sorted(TASKS), default='transfer_cube')
  parser.add_argument('--task_description', default=None,
                      help='text sent to the policy (must be in its text store); default: the task\'s own')
  parser.add_argument('--episodes', type=int, default=10)
  parser.add_argument('--max_steps', type=int, default=400,
                      help='control steps per episode (400 as ACT\'s sim tasks; gym-aloha registers 300)')
  parser.add_argument('--num_open_loop_steps', type=int, default=50, help='actions executed per policy query')
  parser.add_argument('--seed', type=int, default=0, help='episode i uses seed + i for the object poses')
  parser.add_argument('--control_hz', type=float, default=GYM_ALOHA_CONTROL_HZ,
                      help='actions per simulated second (gym-aloha 50; real ALOHA 25)')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--image_size', type=int, default=224, help='policy input size')
  parser.add_argument('--preprocess_size', type=int, default=PREPROCESS_SIZE,
                      help='intermediate resize of the camera frames (official ALOHA client: 256)')
  parser.add_argument('--render_height', type=int, default=CAMERA_SIZE[0])
  parser.add_argument('--render_width', type=int, default=CAMERA_SIZE[1])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--tiny', action='store_true',
                      help='in-process tiny random-weight policy on the bundled sample assets (smoke tests)')
  source.add_argument('--dit_dir', help='in-process policy: converted DiT checkpoint directory '
                                        '(PolicyRunner.from_checkpoints; needs --vae_dir)')
  source.add_argument('--server', metavar='URL',
                      help='served policy (python -m cosmos_jax.serve): http://HOST:8777 (official /act protocol) '
                           'or ws://HOST:PORT (websocket)')
  parser.add_argument('--vae_dir', help='converted VAE checkpoint directory (with --dit_dir)')
  parser.add_argument('--planning_dir', help='converted planning-model DiT (with --dit_dir): best-of-N planning')
  parser.add_argument('--statistics', help='dataset_statistics.json (default: the one stored with --dit_dir)')
  parser.add_argument('--text_store', help='text store directory (default: the one stored with --dit_dir)')
  parser.add_argument('--policy_seed', type=int, default=0, help='seed of the tiny policy\'s random weights')
  return parser


def server_policy(url: str) -> Policy:
  """A served policy: `http://host:port[/act]` (the official json_numpy protocol, cosmos_jax.serve.client.
  HTTPClient) or `ws://host:port` (the websocket/msgpack server)."""
  from cosmos_jax.serve import client  # pylint: disable=g-import-not-at-top

  if url.startswith(('http://', 'https://')):
    return client.HTTPClient(url if url.rstrip('/').endswith('/act') else url.rstrip('/') + '/act').act
  if url.startswith(('ws://', 'wss://')):
    return client.WebsocketClient(url).infer
  raise ValueError(f'--server must be an http://, https://, ws:// or wss:// URL, got {url!r}')


def make_policy(args) -> tuple[Policy, str]:
  """(callable, name) for the policy source chosen on the command line."""
  if args.server:
    return server_policy(args.server), f'server {args.server}'
  from cosmos_jax.serve import runner  # pylint: disable=g-import-not-at-top

  if args.tiny:
    # A random policy drives the arms far outside the sample's proprio range; the runner's range check (meant to
    # catch unit mix-ups in real requests) would refuse the next request.
    policy = runner.PolicyRunner.tiny(seed=args.policy_seed, image_size=args.image_size, proprio_margin=None)
  else:
    policy = runner.PolicyRunner.from_checkpoints(args.dit_dir, args.vae_dir, planning_dir=args.planning_dir,
                                                  statistics=args.statistics, text_store=args.text_store,
                                                  image_size=args.image_size)
  return policy.act, policy.name


def main(argv: Sequence[str] | None = None) -> dict:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.dit_dir and not args.vae_dir:
    parser.error('--dit_dir needs --vae_dir (the converted VAE checkpoint)')
  if not args.dit_dir and any((args.vae_dir, args.planning_dir, args.statistics, args.text_store)):
    parser.error('--vae_dir, --planning_dir, --statistics and --text_store go with --dit_dir')
  os.environ.setdefault('MUJOCO_GL', 'egl')
  policy, name = make_policy(args)
  summary = evaluate(policy, task=args.task, out_dir=args.out, episodes=args.episodes, max_steps=args.max_steps,
                     num_open_loop_steps=args.num_open_loop_steps, seed=args.seed,
                     task_description=args.task_description, control_hz=args.control_hz,
                     render_size=(args.render_height, args.render_width), preprocess_size=args.preprocess_size,
                     image_size=args.image_size, policy_name=name)
  print(f'success rate {summary["success_rate"]:.3f} over {summary["episodes"]} episodes; '
        f'summary in {os.path.join(args.out, "summary.json")}')
  return summary


if __name__ == '__main__':
  main()
