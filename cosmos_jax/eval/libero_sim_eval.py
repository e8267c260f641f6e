"""The official LIBERO evaluation protocol (NVlabs/cosmos-policy 18a2acc, run_libero_eval.py), its outputs, and the
policy sources; `libero_sim.py` is the command.

Per task of a suite and per episode k (the task's fixed initial state k of its 50): env.reset(),
set_init_state(k), 10 steps with the dummy action [0, 0, 0, 0, 0, 0, -1] for the objects to settle, then until the
suite's maximum steps: observe (both cameras flipped upside down, proprio = gripper qpos, eef position, eef
quaternion), query the policy when the action queue is empty and queue its first `num_open_loop_steps` actions
(the whole chunk of 16 officially), execute one action; the episode succeeds when the simulator reports `done`
(its task predicate holds).

Outputs under `out`:
  videos/<suite>/task_<i>_episode_<k>.mp4   primary | wrist | last predicted future primary, with the step and
                                            predicted value on each frame (30 fps, as the official videos)
  rollouts/<suite>/task_<i>_episode_<k>--success=<bool>.hdf5
                                            the official data-collection format (`primary_images_jpeg`,
                                            `wrist_images_jpeg` JPEG q95, `proprio`, `actions`, attrs
                                            `task_description`, `success`), read by `cosmos_jax.data.libero`
  summary.json                              per-suite and per-task success rates, per-episode details
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import deque
from collections.abc import Callable, Mapping

import cv2
import h5py
import numpy as np

from cosmos_jax.data import decode
from cosmos_jax.data import make_sample
from cosmos_jax.eval import libero_sim_env
from cosmos_jax.eval import policies as policies_lib
from cosmos_jax.serve import runner as runner_lib
from cosmos_jax.serve.protocols import libero as libero_protocol

# Official TASK_MAX_STEPS (the longest training demonstration of each suite, plus a margin).
SUITE_MAX_STEPS = {'libero_spatial': 220, 'libero_object': 280, 'libero_goal': 300, 'libero_10': 520}
NUM_STEPS_WAIT = 10  # official: dummy-action steps before the first query
ACTION_DIM = 7
VIDEO_FPS = 30  # official save_rollout_video
SUMMARY_FILENAME = 'summary.json'
POLICY_KINDS = ('checkpoint', 'tiny', 'server')

Policy = Callable[[Mapping], Mapping]


def policy_request(obs: Mapping[str, np.ndarray], task_description: str) -> dict:
  """The official `prepare_observation` with `flip_images`: both cameras flipped upside down (np.flipud), proprio
  = gripper qpos (2) + eef position (3) + eef quaternion (4)."""
  return {'primary_image': np.ascontiguousarray(np.flipud(obs['agentview_image'])),
          'wrist_image': np.ascontiguousarray(np.flipud(obs['robot0_eye_in_hand_image'])),
          'proprio': np.concatenate([obs['robot0_gripper_qpos'], obs['robot0_eef_pos'], obs['robot0_eef_quat']]),
          'task_description': task_description}


def parse_response(response) -> tuple[np.ndarray, float, np.ndarray | None]:
  """(actions (chunk, 7) float64, value or NaN when the policy gives none, predicted future primary or None)."""
  if isinstance(response, str):
    raise ValueError(f'policy returned the string {response!r} (the official server answers "error" on failure)')
  if not isinstance(response, Mapping) or 'actions' not in response:
    raise ValueError(f'policy response must be a dict with "actions", got {type(response).__name__}')
  actions = np.asarray(response['actions'], np.float64)
  if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or not len(actions):
    raise ValueError(f'policy "actions" must be (chunk, {ACTION_DIM}) for LIBERO, got shape {actions.shape}')
  if not np.all(np.isfinite(actions)):
    raise ValueError('policy "actions" contain non-finite values')
  value = response.get('value_prediction', response.get('value_predictions'))
  value = float(np.asarray(value, np.float64).reshape(())) if value is not None else float('nan')
  future = response.get('future_image_predictions')
  image = None
  if isinstance(future, Mapping) and future.get('future_image') is not None:
    image = np.clip(np.asarray(future['future_image']), 0, 255).astype(np.uint8)
  return actions, value, image


@dataclasses.dataclass
class EpisodeResult:
  """One LIBERO episode after the wait steps. Per-step arrays have length T (observation t precedes action t)."""

  suite: str
  task_id: int
  init_state: int
  task_description: str
  success: bool
  primary_images: np.ndarray  # (T, H, W, 3) uint8, flipped upright (what the policy saw before preprocessing)
  wrist_images: np.ndarray
  proprio: np.ndarray  # (T, 9)
  actions: np.ndarray  # (T, 7) executed
  query_steps: list  # step index (after the wait steps) of each policy query
  values: list  # predicted value at each query (NaN when the policy gave none)
  future_images: list  # predicted future primary image per query, or None
  query_seconds: list
  sim_seconds: float
  wall_seconds: float

  @property
  def length(self) -> int:
    return len(self.actions)


def run_episode(sim: libero_sim_env.LiberoSim, policy: Policy, *, suite: str, task_id: int, init_state: int,
                max_steps: int, num_open_loop_steps: int, task_description: str) -> EpisodeResult:
  """One episode of the official loop (see the module docstring)."""
  start = time.perf_counter()
  sim_seconds = 0.0
  obs = sim.reset(init_state)
  for _ in range(NUM_STEPS_WAIT):
    t0 = time.perf_counter()
    obs, _, _ = sim.step(libero_protocol.DUMMY_ACTION)
    sim_seconds += time.perf_counter() - t0
  queue: deque = deque()
  primary, wrist, proprio, actions = [], [], [], []
  query_steps, values, futures, query_seconds = [], [], [], []
  success = False
  for t in range(max_steps):
    request = policy_request(obs, task_description)
    primary.append(request['primary_image'])
    wrist.append(request['wrist_image'])
    proprio.append(request['proprio'])
    if not queue:
      t0 = time.perf_counter()
      chunk, value, future = parse_response(policy(request))
      query_seconds.append(time.perf_counter() - t0)
      if num_open_loop_steps > len(chunk):
        raise ValueError(f'num_open_loop_steps {num_open_loop_steps} exceeds the policy chunk of {len(chunk)}')
      queue.extend(chunk[:num_open_loop_steps])
      query_steps.append(t)
      values.append(value)
      futures.append(future)
    action = queue.popleft()
    actions.append(action)
    t0 = time.perf_counter()
    obs, _, done = sim.step(action)
    sim_seconds += time.perf_counter() - t0
    if done:
      success = True
      break
  return EpisodeResult(suite=suite, task_id=task_id, init_state=init_state, task_description=task_description,
                       success=success, primary_images=np.stack(primary), wrist_images=np.stack(wrist),
                       proprio=np.stack(proprio), actions=np.stack(actions), query_steps=query_steps, values=values,
                       future_images=futures, query_seconds=query_seconds, sim_seconds=sim_seconds,
                       wall_seconds=time.perf_counter() - start)


def video_frames(episode: EpisodeResult) -> np.ndarray:
  """(T, 20 + S, 3 S, 3): primary | wrist | the last predicted future primary (black before/without one), with
  the step and the predicted value of the current chunk printed above."""

  size = episode.primary_images.shape[1]
  out = np.zeros((episode.length, size + 20, 3 * size, 3), np.uint8)
  query = -1
  for t in range(episode.length):
    while query + 1 < len(episode.query_steps) and episode.query_steps[query + 1] <= t:
      query += 1
    out[t, 20:, :size] = episode.primary_images[t]
    out[t, 20:, size:2 * size] = episode.wrist_images[t]
    future = episode.future_images[query]
    if future is not None:
      out[t, 20:, 2 * size:] = decode.resize_square(future[None], size)[0]
    text = f't={t}  V={episode.values[query]:.3f}' + ('  success' if episode.success and t == episode.length - 1
                                                         else '')
    cv2.putText(out[t], text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45 if size >= 128 else 0.3, (255, 255, 255), 1,
                cv2.LINE_AA)
  return out


def save_rollout(path: str, episode: EpisodeResult) -> str:
  """The official data-collection HDF5 (run_libero_eval.py with data_collection, jpeg_compress on)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with h5py.File(path, 'w') as f:
    for key, frames in (('primary_images', episode.primary_images), ('wrist_images', episode.wrist_images)):
      dataset = f.create_dataset(key + '_jpeg', shape=(len(frames),), dtype=h5py.vlen_dtype(np.uint8))
      for i, frame in enumerate(frames):
        dataset[i] = np.frombuffer(decode.encode_jpeg(frame, quality=95), np.uint8)
    f.create_dataset('proprio', data=episode.proprio)
    f.create_dataset('actions', data=episode.actions)
    f.attrs['success'] = episode.success
    f.attrs['task_description'] = episode.task_description
  return path


def make_policy(config) -> tuple[Policy, str]:
  """(callable, name) for `config.policy` (configs/eval/libero.py): an in-process runner (checkpoint, tiny) or a
  served policy (http(s)://, ws(s)://)."""
  p = config.policy
  if p.kind not in POLICY_KINDS:
    raise ValueError(f'policy.kind must be one of {POLICY_KINDS}, got {p.kind!r}')
  if p.kind == 'server' or config.server:
    url = config.server or p.server
    if not url:
      raise ValueError('policy.kind=server needs config.server (http://HOST:8777 or ws://HOST:PORT)')
    return policies_lib.server_policy(url), f'server {url}'
  if p.kind == 'tiny':
    # A random policy drives the arm outside the stand-in proprio range; no range check (see eval/policies.py).
    runner = runner_lib.PolicyRunner.tiny(seed=p.tiny_seed, image_size=config.image_size, layout='libero',
                                          action_steps=p.action_steps, proprio_margin=None)
    return runner.act, runner.name
  if not p.checkpoint:
    raise ValueError('policy.kind=checkpoint needs the policy: --checkpoint=WORKDIR_OR_CHECKPOINT '
                     '(= --config.policy.checkpoint)')
  runner = runner_lib.PolicyRunner.from_checkpoints(p.checkpoint, p.vae or None, step=p.step, use_ema=p.use_ema,
                                                    statistics=p.statistics or None, text_store=p.text_store or None,
                                                    layout='libero', image_size=config.image_size,
                                                    action_steps=p.action_steps, seed=p.seed,
                                                    merge_lora=p.merge_lora, lora_base=p.lora_base or None)
  return runner.act, runner.name


TASKS_PER_SUITE = 10  # each of the four standard suites


def _task_ids(config) -> list[int]:
  ids = [int(t) for t in config.tasks] if config.tasks else list(range(TASKS_PER_SUITE))
  bad = [t for t in ids if not 0 <= t < TASKS_PER_SUITE]
  if bad:
    raise ValueError(f'tasks {bad} out of range: each suite has tasks 0..{TASKS_PER_SUITE - 1}')
  return ids


def evaluate(policy: Policy, config, *, policy_name: str = '', log: Callable[[str], None] | None = print) -> dict:
  """Every suite of `config.suites`, every task of `config.tasks` (all when empty), `config.episodes_per_task`
  episodes each (initial states 0, 1, ...); writes the outputs and returns the summary."""
  if not config.out:
    raise ValueError('config.out (the output directory) is required')
  unknown = [s for s in config.suites if s not in SUITE_MAX_STEPS]
  if unknown:
    raise ValueError(f'unknown suites {unknown}; suites: {sorted(SUITE_MAX_STEPS)}')
  if config.episodes_per_task < 1:
    raise ValueError(f'episodes_per_task must be >= 1, got {config.episodes_per_task}')
  log = log or (lambda _: None)
  out_dir = config.out
  start = time.perf_counter()
  suites = {}
  done_episodes = 0
  task_ids = _task_ids(config)
  with libero_sim_env.LiberoSim(config.sim_python) as sim:
    for suite in config.suites:
      max_steps = config.max_steps or SUITE_MAX_STEPS[suite]
      tasks, episodes = {}, []
      for task_id in task_ids:
        language = sim.make(suite, task_id, resolution=config.resolution, seed=config.env_seed)
        if config.episodes_per_task > sim.num_init_states:
          raise ValueError(f'episodes_per_task {config.episodes_per_task} exceeds the {sim.num_init_states} '
                           f'initial states of {suite} task {task_id}')
        successes = 0
        for k in range(config.episodes_per_task):
          episode = run_episode(sim, policy, suite=suite, task_id=task_id, init_state=k, max_steps=max_steps,
                                num_open_loop_steps=config.num_open_loop_steps, task_description=language)
          successes += episode.success
          name = f'task_{task_id}_episode_{k}'
          video = os.path.join(out_dir, 'videos', suite, name + '.mp4')
          os.makedirs(os.path.dirname(video), exist_ok=True)
          make_sample.write_mp4(video, video_frames(episode), fps=VIDEO_FPS)
          rollout = save_rollout(os.path.join(out_dir, 'rollouts', suite, f'{name}--success={episode.success}.hdf5'),
                                 episode)
          episodes.append({
              'task_id': task_id, 'init_state': k, 'task_description': language, 'success': episode.success,
              'length': episode.length, 'num_queries': len(episode.query_steps), 'query_steps': episode.query_steps,
              'values': [v if np.isfinite(v) else None for v in episode.values],
              'video': os.path.relpath(video, out_dir), 'rollout': os.path.relpath(rollout, out_dir),
              'timings': {'wall_seconds': episode.wall_seconds, 'sim_seconds': episode.sim_seconds,
                          'query_seconds': episode.query_seconds}})
          done_episodes += 1
          total = len(config.suites) * len(task_ids) * config.episodes_per_task
          elapsed = time.perf_counter() - start
          log(f'[{done_episodes}/{total}] {suite} task {task_id} episode {k}: '
              f'{"success" if episode.success else "failure"} after {episode.length} steps, '
              f'{len(episode.query_steps)} queries, {episode.wall_seconds:.1f} s; task so far {successes}/{k + 1}; '
              f'elapsed {elapsed / 60:.1f} min, about {elapsed / done_episodes * (total - done_episodes) / 60:.1f} '
              'min left')
        tasks[str(task_id)] = {'task_description': language, 'episodes': config.episodes_per_task,
                               'successes': int(successes), 'success_rate': successes / config.episodes_per_task}
        log(f'{suite} task {task_id} ({language}): success rate {successes / config.episodes_per_task:.3f}')
      suite_successes = sum(t['successes'] for t in tasks.values())
      suite_episodes = sum(t['episodes'] for t in tasks.values())
      suites[suite] = {'max_steps': max_steps, 'episodes': suite_episodes, 'successes': suite_successes,
                       'success_rate': suite_successes / suite_episodes, 'tasks': tasks, 'per_episode': episodes}
      log(f'{suite}: success rate {suite_successes / suite_episodes:.3f} over {suite_episodes} episodes')
  summary = {
      'policy': policy_name,
      'success_rate': float(np.mean([s['success_rate'] for s in suites.values()])),  # mean over suites
      'suites': suites,
      'config': config.to_dict(),
      'wall_seconds': time.perf_counter() - start,
  }
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, SUMMARY_FILENAME), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2)
  return summary


def run(config) -> dict:
  """`python -m cosmos_jax.eval.libero_sim` as a function: the policy of `config.policy` (or `config.server`)
  evaluated, the success rates printed."""
  policy, name = make_policy(config)
  summary = evaluate(policy, config, policy_name=name)
  rates = ', '.join(f'{suite} {s["success_rate"]:.3f}' for suite, s in summary['suites'].items())
  print(f'success rate {summary["success_rate"]:.3f} ({rates}); summary in '
        f'{os.path.join(config.out, SUMMARY_FILENAME)}', flush=True)
  return summary
