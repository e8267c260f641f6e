"""Raw ALOHA recordings -> the released training layout, as the official `preprocess_split_aloha_data.py`
(NVlabs/cosmos-policy 18a2acc, experiments/robot/aloha) produces it:

    python -m cosmos_jax.data.preprocess_aloha RAW_DIR OUT_DIR [--percent_val=0.05] [--image_size=256] [--fps=25]
                                               [--seed=0] [--workers=4]

RAW_DIR holds `*.hdf5` episodes (attrs `sim`; observations/qpos, qvel, effort; action; observations/images/<cam>).
Output in OUT_DIR/<basename of RAW_DIR>/: `train/` and `val/`, each with `episode_<i>.hdf5` (qpos, qvel, effort,
action and relative_action as float32, `observations/video_paths/<cam>` naming the MP4 next to it, attrs `sim`) and
`episode_<i>_<cam>.mp4` for cam_high, cam_left_wrist and cam_right_wrist (frames resized to a square with PIL bicubic,
written by OpenCV's mp4v encoder at `fps`), plus `preprocessing_metadata.json`. As the official script: files in
sorted order, a random episode-level split with int(N * percent_val) validation episodes, episodes renumbered within
their split. Unlike it, the split is seeded (`--seed`; the official script calls random.shuffle unseeded, which
equals ours after random.seed(seed)), so a re-run makes the same split.

Episodes run in parallel worker processes with a progress line each. Each episode is atomic: its videos and HDF5
are written under partial names and renamed into place, the HDF5 last, so an existing HDF5 means a finished episode
and a re-run (after a crash or kill) skips it. The split and settings are kept in `preprocessing_plan.json`; a
re-run with other settings or other input files is refused instead of mixing two datasets.
"""

from __future__ import annotations

import concurrent.futures
import glob
import json
import multiprocessing
import os
import random
import sys
from collections.abc import Sequence

import cv2
import h5py
import numpy as np
from absl import flags
from PIL import Image

from cosmos_jax import command_line
from cosmos_jax.data.episodes import require_keys

CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')  # the official cam_names, in its order
VECTORS = ('qpos', 'qvel', 'effort')
DIM = 14
PLAN_FILE = 'preprocessing_plan.json'
METADATA_FILE = 'preprocessing_metadata.json'
HDF5_CHUNK_CACHE_BYTES = 2 * 1024 ** 2  # rdcc_nbytes of the official writer (from the ALOHA codebase)


def split_episodes(paths: Sequence[str], percent_val: float, seed: int) -> tuple[list[str], list[str]]:
  """Episode-level random split: int(N * percent_val) validation episodes, the official shuffle of indices."""
  indices = list(range(len(paths)))
  random.Random(seed).shuffle(indices)
  num_train = len(paths) - int(len(paths) * percent_val)
  return [paths[i] for i in indices[:num_train]], [paths[i] for i in indices[num_train:]]


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  return np.stack([np.asarray(Image.fromarray(f).resize((size, size), resample=Image.BICUBIC)) for f in frames])


def write_mp4(frames: np.ndarray, path: str, fps: int) -> None:
  """RGB frames -> MP4 with OpenCV's mp4v encoder (the official writer)."""
  height, width = frames.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
  if not writer.isOpened():
    raise OSError(f'OpenCV could not open {path} for writing an mp4v video')
  try:
    for frame in frames:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()


def read_raw_episode(path: str) -> dict:
  """The arrays of one raw episode, checked: every key present, 14-D vectors, one length for every stream."""
  with h5py.File(path, 'r') as f:
    require_keys(path, f, ['observations', 'action'])
    require_keys(path, f['observations'], [*VECTORS, 'images'])
    require_keys(path, f['observations/images'], CAMERAS)
    if 'sim' not in f.attrs:
      raise ValueError(f'{path}: missing attribute \'sim\'')
    episode = {'sim': f.attrs['sim'], 'action': f['action'][()],
               **{key: f[f'observations/{key}'][()] for key in VECTORS},
               'images': {cam: f[f'observations/images/{cam}'][()] for cam in CAMERAS}}
  length = episode['images']['cam_high'].shape[0]  # the official episode length
  for key in (*VECTORS, 'action'):
    name = key if key == 'action' else f'observations/{key}'
    if episode[key].shape != (length, DIM):
      raise ValueError(f'{path}: {name!r} has shape {episode[key].shape}; expected ({length}, {DIM}) (cam_high has '
                       f'{length} frames)')
  for cam, frames in episode['images'].items():
    if frames.ndim != 4 or frames.shape[0] != length or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise ValueError(f'{path}: observations/images/{cam} must be ({length}, H, W, 3) uint8, got {frames.shape} '
                       f'{frames.dtype}')
  if length < 2:
    raise ValueError(f'{path}: {length} steps; relative actions need at least 2')
  return episode


def write_episode_hdf5(path: str, episode: dict, video_files: dict[str, str]) -> None:
  with h5py.File(path, 'w', rdcc_nbytes=HDF5_CHUNK_CACHE_BYTES) as root:
    root.attrs['sim'] = episode['sim']
    obs = root.create_group('observations')
    for key in VECTORS:
      obs.create_dataset(key, data=np.asarray(episode[key], np.float32))
    videos = obs.create_group('video_paths')
    for cam, name in video_files.items():
      videos.create_dataset(cam, data=name.encode('utf-8'))
    actions = episode['action']
    relative = np.zeros_like(actions)  # in the raw dtype, then stored as float32 (official order of operations)
    relative[:-1] = actions[1:] - actions[:-1]
    relative[-1] = relative[-2]
    root.create_dataset('action', data=np.asarray(actions, np.float32))
    root.create_dataset('relative_action', data=np.asarray(relative, np.float32))


def episode_metadata(source: str, split: str, index: int, length: int, sim: bool) -> dict:
  return {'original_file_path': source, 'original_file_name': os.path.basename(source),
          'preprocessed_episode_name': f'episode_{index}.hdf5',
          'preprocessed_video_files': [f'episode_{index}_{cam}.mp4' for cam in CAMERAS], 'split': split,
          'preprocessed_index': index, 'episode_length': int(length), 'is_simulation': bool(sim)}


def process_episode(source: str, out_dir: str, split: str, index: int, image_size: int, fps: int) -> dict:
  """One episode, atomically; an episode whose HDF5 exists is finished and only described."""
  final = os.path.join(out_dir, f'episode_{index}.hdf5')
  if os.path.exists(final):
    with h5py.File(final, 'r') as f:
      length, sim = f['action'].shape[0], f.attrs['sim']
    return {**episode_metadata(source, split, index, length, sim), 'status': 'skipped (already done)'}
  episode = read_raw_episode(source)
  video_files, partials = {}, []
  for cam in CAMERAS:
    name = f'episode_{index}_{cam}.mp4'
    partial = os.path.join(out_dir, f'episode_{index}_{cam}.partial.mp4')
    write_mp4(resize_frames(episode['images'][cam], image_size), partial, fps)
    video_files[cam] = name
    partials.append((partial, os.path.join(out_dir, name)))
  hdf5_partial = f'{final}.partial'
  write_episode_hdf5(hdf5_partial, episode, video_files)
  for partial, name in partials:
    os.replace(partial, name)
  os.replace(hdf5_partial, final)  # last: its presence marks the episode finished
  length = episode['images']['cam_high'].shape[0]
  return {**episode_metadata(source, split, index, length, episode['sim']), 'status': 'done'}


def _write_json(path: str, value) -> None:
  partial = f'{path}.partial'
  with open(partial, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2)
  os.replace(partial, path)


def preprocess(raw_dir: str, out_base_dir: str, *, percent_val: float = 0.05, image_size: int = 256, fps: int = 25,
               seed: int = 0, workers: int = 1, log=print) -> dict:
  """Runs the preprocessing (module docstring); returns the metadata written to preprocessing_metadata.json."""
  paths = sorted(glob.glob(os.path.join(raw_dir, '*.hdf5')))
  if not paths:
    raise FileNotFoundError(f'no *.hdf5 episodes in {raw_dir}')
  if not 0 <= percent_val < 1:
    raise ValueError(f'percent_val must be in [0, 1), got {percent_val}')
  out_dir = os.path.join(out_base_dir, os.path.basename(raw_dir.rstrip('/')))
  train, val = split_episodes(paths, percent_val, seed)
  settings = {'img_resize_size': image_size, 'video_fps': fps}
  plan = {'raw_files': paths, 'train': train, 'val': val, 'percent_val': percent_val, 'seed': seed,
          'settings': settings}
  os.makedirs(out_dir, exist_ok=True)
  plan_path = os.path.join(out_dir, PLAN_FILE)
  if os.path.exists(plan_path):
    with open(plan_path, encoding='utf-8') as f:
      previous = json.load(f)
    changed = sorted(k for k in plan if previous.get(k) != plan[k])
    if changed:
      raise ValueError(f'{out_dir} holds a preprocessing run with other {changed} ({plan_path}); use another output '
                       'directory or the same settings and input files')
  else:
    _write_json(plan_path, plan)
  jobs = []
  for split, sources in (('train', train), ('val', val)):
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    jobs += [(source, os.path.join(out_dir, split), split, i) for i, source in enumerate(sources)]
  log(f'{len(paths)} episodes: {len(train)} train, {len(val)} val -> {out_dir} ({workers} workers)')
  results = [None] * len(jobs)

  def report(done, position, result):
    results[position] = result
    log(f'[{done}/{len(jobs)}] {result["split"]}/{result["preprocessed_episode_name"]} <- '
        f'{result["original_file_name"]}: {result["status"]}')

  if workers <= 1:
    for position, job in enumerate(jobs):
      report(position + 1, position, process_episode(*job, image_size, fps))
  else:
    # Fresh interpreters, not forks: a caller may hold threads (JAX, h5py) that a fork would copy mid-operation.
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
      futures = {pool.submit(process_episode, *job, image_size, fps): p for p, job in enumerate(jobs)}
      for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
        report(done, futures[future], future.result())
  mapping = [{k: v for k, v in r.items() if k != 'status'} for r in results]
  metadata = {'dataset_info': {'original_dataset_path': raw_dir, 'preprocessed_dataset_path': out_dir,
                               'total_episodes': len(paths), 'train_episodes': len(train), 'val_episodes': len(val),
                               'validation_percentage': percent_val, 'preprocessing_settings': settings},
              'episode_mapping': mapping}
  _write_json(os.path.join(out_dir, METADATA_FILE), metadata)
  return metadata


def _define_flags(flag_values) -> None:
  fv = {'flag_values': flag_values}
  flags.DEFINE_float('percent_val', 0.05, 'Fraction of episodes for the val split.', **fv)
  flags.DEFINE_integer('image_size', 256, 'Square frame size of the MP4s.', **fv)
  flags.DEFINE_integer('fps', 25, 'Frame rate of the MP4s.', **fv)
  flags.DEFINE_integer('seed', 0, 'Seed of the train/val shuffle.', **fv)
  flags.DEFINE_integer('workers', min(4, os.cpu_count() or 1), 'Episodes processed in parallel.', **fv)


CLI = command_line.CommandLine(
    'python -m cosmos_jax.data.preprocess_aloha', _define_flags, {'': command_line.Command(('RAW_DIR', 'OUT_DIR'))},
    'usage: python -m cosmos_jax.data.preprocess_aloha RAW_DIR OUT_DIR [--percent_val=0.05] [--image_size=256] '
    '[--fps=25] [--seed=0] [--workers=4]\n  RAW_DIR: raw ALOHA *.hdf5 episodes; the dataset goes to '
    'OUT_DIR/<basename of RAW_DIR>', description=__doc__.split('\n')[0])


def main(argv: Sequence[str] | None = None) -> int:
  parsed = CLI.parse_or_exit(argv)
  f = parsed.flags
  raw_dir, out_dir = parsed.positional
  preprocess(raw_dir, out_dir, percent_val=f.percent_val, image_size=f.image_size, fps=f.fps, seed=f.seed,
             workers=f.workers, log=lambda line: print(line, file=sys.stderr, flush=True))
  return 0


if __name__ == '__main__':
  sys.exit(main())
