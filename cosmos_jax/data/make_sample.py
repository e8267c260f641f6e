"""Scripted gym-aloha demonstrations in the released ALOHA demo format, and the bundled sample made from them.

    MUJOCO_GL=egl python -m cosmos_jax.data.make_sample [--out=DIR] [--task=transfer_cube] [--episodes=3]
    MUJOCO_GL=egl python -m cosmos_jax.data.make_sample --measure [--seeds=50] [--json=FILE]

The demonstrator is `cosmos_jax.data.scripted` (full-length 400-step episodes at gym-aloha's 50 Hz). An episode is
kept only if it succeeds (the reward reaches the task's maximum); a failed seed is skipped and counted. What it writes
is the released ALOHA demonstration layout (the output of @18a2acc
cosmos_policy/experiments/robot/aloha/preprocess_split_aloha_data.py:save_new_hdf5, read by
cosmos_policy/datasets/aloha_dataset.py:ALOHADataset), so the official reader and ours read it the same way:

    <out>/<task>_scripted/train/episode_<i>.hdf5   attrs sim=True, seed, task, max_reward, success,
                                                   perturbed_copy = k on the k-th noise-injected copy
                                                   (--perturbed_copies), absent on the demonstration;
                                                   observations/{qpos,qvel,effort} (T,14) float32;
                                                   action, relative_action (T,14) float32; rewards (T,) float32;
                                                   observations/video_paths/cam_* -> the MP4 names
    <out>/<task>_scripted/train/episode_<i>_cam_{high,left_wrist,right_wrist}.mp4   S x S, mp4v, 50 fps
    <out>/dataset_statistics.json                  official schema, from the demos
    <out>/text_store/                              the task strings: a STAND-IN embedding (fixed-seed random,
                                                   NOT T5); real runs import the official T5 pickle
    <out>/demos.json                               per task, how it was made: seeds, steps, camera size

Observation t (qpos, frames) is recorded before action t is applied, as in ALOHA recordings. Cameras: the
simulator's (`simulator.SIM_CAMERAS`), rendered at 480x640 and resized to S (default 256, the official preprocessing
size) with PIL bicubic, like the official preprocessing and the evaluation client.

`--measure` runs the scripted policies without cameras over `--seeds` seeds per task and prints and writes the
success rates (reward reached 4; and reward still 4 at the last step).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence

import cv2
import h5py
import numpy as np
from absl import flags

from cosmos_jax import command_line
from cosmos_jax.data import aloha, bundled, decode, scripted, simulator, stats, text

DEFAULT_OUT = str(bundled.sample_dir('aloha'))


def task_folder(task: str) -> str:
  return f'{task}_scripted'


def write_mp4(path: str, frames_rgb: np.ndarray, fps: float = simulator.GYM_ALOHA_CONTROL_HZ) -> None:
  """(T, H, W, 3) uint8 RGB -> mp4v file (the codec the ALOHA demos and OpenCV's default build share)."""
  height, width = frames_rgb.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), float(fps), (width, height))
  if not writer.isOpened():
    raise RuntimeError(f'OpenCV could not open an mp4v writer for {path}')
  for frame in frames_rgb:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()


def record_episode(sim: simulator.AlohaSim, seed: int, num_steps: int = simulator.EPISODE_STEPS,
                   image_size: int = 256, offsets: np.ndarray | None = None
                   ) -> tuple[scripted.ScriptedEpisode, dict[str, np.ndarray]]:
  """One scripted episode with the cameras rendered before every action: (episode, {cam: (T, S, S, 3) uint8});
  `offsets` as in `scripted.run`."""
  frames = {cam: [] for cam in simulator.SIM_CAMERAS}

  def observe(_):
    for cam, frame in sim.render(*simulator.CAMERA_SIZE).items():
      frames[cam].append(decode.resize_square(frame[None], image_size)[0])

  episode = scripted.run(sim, seed, num_steps, observe=observe, offsets=offsets)
  return episode, {cam: np.stack(f) for cam, f in frames.items()}


def write_episode(directory: str, index: int, episode: scripted.ScriptedEpisode,
                  frames: dict[str, np.ndarray], perturbed_copy: int = 0) -> str:
  """The released ALOHA demo layout: HDF5 + one MP4 per camera. `perturbed_copy` > 0 marks a noise-injected copy
  of the seed's demonstration (attribute `perturbed_copy`; 0 = the scripted episode itself)."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'episode_{index}.hdf5')
  qpos = episode.qpos.astype(np.float32)
  actions = episode.actions.astype(np.float32)
  with h5py.File(path, 'w') as f:
    f.attrs['sim'] = True
    f.attrs['task'] = episode.task
    f.attrs['seed'] = int(episode.seed)
    f.attrs['max_reward'] = float(episode.max_reward)
    f.attrs['success'] = episode.success
    if perturbed_copy:  # absent on the demonstrations themselves (the bundled sample's format)
      f.attrs['perturbed_copy'] = int(perturbed_copy)
    obs = f.create_group('observations')
    obs['qpos'] = qpos
    obs['qvel'] = episode.qvel.astype(np.float32)
    obs['effort'] = np.zeros_like(qpos)
    f['action'] = actions
    f['relative_action'] = actions - qpos
    f['rewards'] = episode.rewards.astype(np.float32)
    paths = obs.create_group('video_paths')
    for cam, cam_frames in frames.items():
      name = f'episode_{index}_{cam}.mp4'
      write_mp4(os.path.join(directory, name), cam_frames)
      paths[cam] = name.encode('utf-8')
  return path


@dataclasses.dataclass(frozen=True)
class Perturbation:
  """Noise-injected copies of each demonstration (`scripted.held_offsets`): `copies` per seed, arm-joint offsets
  uniform in +-`scale` radians, redrawn every `hold` steps before step `until`. The copies show the arm off the
  scripted path with the scripted (corrective) actions as labels, so a policy cloned from them learns to return to
  its own scene's path rather than to the nearest demonstration's."""
  copies: int = 0
  scale: float = 0.05
  until: int = 60
  hold: int = 10

  def offsets(self, seed: int, copy: int, num_steps: int) -> np.ndarray:
    return scripted.held_offsets(np.random.default_rng([seed, copy]), num_steps, self.scale, self.until, self.hold)


def generator_settings(task: str, perturbation: Perturbation = Perturbation()) -> dict:
  """What else, beside the seeds, decides the demonstrations `generate` writes (recorded in demos.json)."""
  settings = {'cam_high_view': simulator.CAM_HIGH_VIEWS[task], 'tracking_damping': scripted.TRACKING_DAMPING}
  if perturbation.copies:
    settings['perturbation'] = dataclasses.asdict(perturbation)
  return settings


def generate(out: str, num_episodes: int = 3, *, task: str = 'transfer_cube', seed: int = 0,
             num_steps: int = simulator.EPISODE_STEPS, image_size: int = 256, max_failures: int = 10,
             overwrite: bool = False, perturbation: Perturbation = Perturbation(), log=print) -> dict:
  """Writes `num_episodes` successful scripted demos (seeds from `seed` up, failed seeds skipped), each followed by
  its `perturbation.copies` noise-injected copies (only successful ones are kept), then the statistics and the
  stand-in text store over every demo under `out`, and the task's entry of demos.json; returns that entry. Demos of
  the task already in `out` are an error unless `overwrite` (which deletes them first)."""
  if num_episodes < 1:
    raise ValueError(f'num_episodes must be >= 1, got {num_episodes}')
  if perturbation.copies < 0:
    raise ValueError(f'perturbation.copies must be >= 0, got {perturbation.copies}')
  sim = simulator.AlohaSim(task)
  task_dir = os.path.join(out, task_folder(task))
  train_dir = os.path.join(task_dir, 'train')
  if os.path.isdir(task_dir) and aloha.find_episode_files(task_dir, split=None):
    if not overwrite:
      raise FileExistsError(f'{task_dir} already holds demonstrations; pass overwrite=True (--overwrite) to '
                            'replace them')
    shutil.rmtree(task_dir)
  seeds, skipped, candidate, written = [], [], seed, 0
  copies, skipped_copies = [], []
  start = time.perf_counter()
  # A short smoke run cannot reach the goal; only full episodes must succeed.
  succeeded = lambda episode: episode.success or num_steps < simulator.EPISODE_STEPS
  while len(seeds) < num_episodes:
    episode, frames = record_episode(sim, candidate, num_steps, image_size)
    if succeeded(episode):
      path = write_episode(train_dir, written, episode, frames)
      written += 1
      seeds.append(candidate)
      log(f'wrote {path} (seed {candidate}, {num_steps} steps, highest reward {episode.rewards.max():g})')
      for copy in range(1, perturbation.copies + 1):
        episode, frames = record_episode(sim, candidate, num_steps, image_size,
                                         perturbation.offsets(candidate, copy, num_steps))
        if succeeded(episode):
          path = write_episode(train_dir, written, episode, frames, perturbed_copy=copy)
          written += 1
          copies.append([candidate, copy])
          log(f'wrote {path} (seed {candidate}, perturbed copy {copy}, highest reward {episode.rewards.max():g})')
        else:
          skipped_copies.append([candidate, copy])
          log(f'seed {candidate}, perturbed copy {copy}: failed (highest reward {episode.rewards.max():g}); skipped')
    else:
      skipped.append(candidate)
      log(f'seed {candidate}: the scripted policy failed (highest reward {episode.rewards.max():g}); skipped')
      if len(skipped) > max_failures:
        raise RuntimeError(f'the scripted {task} policy failed on {len(skipped)} seeds: {skipped}')
    candidate += 1
  demos = [aloha.read_demo(p, lazy=True) for p in aloha.find_episode_files(out)]
  stats_path = os.path.join(out, stats.STATISTICS_FILENAME)
  stats.save_statistics(stats.compute_statistics({'actions': d.actions, 'proprio': d.proprio} for d in demos),
                        stats_path)
  stats.load_statistics(stats_path)  # validates (no constant dimension)
  text.stand_in_store(sorted({d.command for d in demos})).save(os.path.join(out, 'text_store'),
                                                              source='cosmos_jax.data.make_sample')
  entry = {
      'generator': 'python -m cosmos_jax.data.make_sample (scripted policy: cosmos_jax.data.scripted)',
      'task': task,
      'task_description': simulator.task_description(task),
      'seeds': seeds,
      'skipped_failed_seeds': skipped,
      **({'perturbed_copies': copies, 'skipped_failed_copies': skipped_copies} if perturbation.copies else {}),
      'num_steps': num_steps,
      'control_hz': simulator.GYM_ALOHA_CONTROL_HZ,
      'image_size': image_size,
      'cameras': simulator.SIM_CAMERAS,
      **generator_settings(task, perturbation),
      'seconds': round(time.perf_counter() - start, 1),
  }
  metadata = simulator.read_demos_metadata(out)
  metadata[task] = entry
  metadata_path = os.path.join(out, simulator.DEMOS_METADATA_FILENAME)
  with open(metadata_path, 'w', encoding='utf-8') as f:
    json.dump(metadata, f, indent=2)
  log(f'wrote {stats_path}, the stand-in text store and {simulator.DEMOS_METADATA_FILENAME}')
  return entry


def measure(tasks: Sequence[str] = tuple(scripted.POLICIES), num_seeds: int = 50, first_seed: int = 0,
            num_steps: int = simulator.EPISODE_STEPS, log=print) -> dict:
  """Success of the scripted policies over seeds first_seed .. first_seed + num_seeds - 1 (no cameras)."""
  results = {}
  for task in tasks:
    sim = simulator.AlohaSim(task)
    start = time.perf_counter()
    episodes = [scripted.run(sim, s, num_steps) for s in range(first_seed, first_seed + num_seeds)]
    results[task] = {
        'seeds': [first_seed, first_seed + num_seeds - 1],
        'num_steps': num_steps,
        'success_rate': float(np.mean([e.success for e in episodes])),
        'held_to_the_end_rate': float(np.mean([e.held_to_the_end for e in episodes])),
        'mean_highest_reward': float(np.mean([e.rewards.max() for e in episodes])),
        'first_success_step_median': float(np.median([np.argmax(e.rewards >= e.max_reward)
                                                      for e in episodes if e.success] or [np.nan])),
        'failed_seeds': [e.seed for e in episodes if not e.success],
        'seconds': round(time.perf_counter() - start, 1),
    }
  log(f'{"task":<15}{"seeds":>7}{"success":>9}{"held":>7}{"step":>6}  failed seeds')
  for task, r in results.items():
    log(f'{task:<15}{num_seeds:>7}{r["success_rate"]:>9.2f}{r["held_to_the_end_rate"]:>7.2f}'
        f'{r["first_success_step_median"]:>6.0f}  {r["failed_seeds"]}')
  return results


def _define_flags(flag_values) -> None:
  fv = {'flag_values': flag_values}
  flags.DEFINE_string('out', DEFAULT_OUT, 'Output directory (default: the bundled sample).', **fv)
  flags.DEFINE_enum('task', 'transfer_cube', sorted(scripted.POLICIES), 'The simulated task.', **fv)
  flags.DEFINE_integer('episodes', 3, 'Successful demonstrations to write.', **fv)
  flags.DEFINE_integer('steps', simulator.EPISODE_STEPS, 'Control steps per episode.', **fv)
  flags.DEFINE_integer('seed', 0, 'First seed (failed seeds are skipped).', **fv)
  flags.DEFINE_integer('image_size', 256, 'Stored camera size (square).', **fv)
  flags.DEFINE_integer('perturbed_copies', 0, 'Noise-injected copies per demonstration (make_sample.Perturbation).',
                       **fv)
  flags.DEFINE_float('perturbation_scale', Perturbation.scale, 'Their arm-joint offsets: +- radians.', **fv)
  flags.DEFINE_integer('perturbation_until', Perturbation.until, 'Their offsets stop at this step.', **fv)
  flags.DEFINE_integer('perturbation_hold', Perturbation.hold, 'Their offsets are redrawn every N steps.', **fv)
  flags.DEFINE_bool('overwrite', False, "Replace the task's demonstrations in --out.", **fv)
  flags.DEFINE_bool('measure', False, "Measure the scripted policies' success rates; write no demonstrations.", **fv)
  flags.DEFINE_integer('seeds', 50, 'With --measure: seeds per task.', **fv)
  flags.DEFINE_string('json', 'scripted_success.json', 'With --measure: output JSON.', **fv)


CLI = command_line.CommandLine(
    'python -m cosmos_jax.data.make_sample', _define_flags, {'': command_line.Command()},
    'usage: python -m cosmos_jax.data.make_sample [--out=DIR --task=transfer_cube --episodes=3 --image_size=256 ...]\n'
    '       python -m cosmos_jax.data.make_sample --measure [--seeds=50 --json=FILE]',
    description='Scripted gym-aloha demonstrations in the ALOHA demo format (default: the bundled sample), or '
                "--measure the scripted policies' success rates.")


def main(argv: Sequence[str] | None = None) -> dict:
  f = CLI.parse_or_exit(argv).flags
  if f.measure:
    results = measure(num_seeds=f.seeds, first_seed=f.seed, num_steps=f.steps)
    with open(f.json, 'w', encoding='utf-8') as file:
      json.dump(results, file, indent=2)
    print(f'wrote {f.json}')
    return results
  return generate(f.out, f.episodes, task=f.task, seed=f.seed, num_steps=f.steps, image_size=f.image_size,
                  overwrite=f.overwrite, perturbation=Perturbation(f.perturbed_copies, f.perturbation_scale,
                                                                   f.perturbation_until, f.perturbation_hold))


if __name__ == '__main__':
  main()
