"""What every benchmark reader shares: finding episode files, HDF5 image datasets stored raw or as JPEG bytes,
the statistics file, and assembling demos and rollouts into a `PolicyDataset`.

Image datasets: the official writers store a camera either raw, `<name>` (T, H, W, 3) uint8, or JPEG-compressed,
`<name>_jpeg` (T,) vlen uint8 (one JPEG per step, quality 95). Raw wins when both exist, as in the official LIBERO
and RoboCasa readers. Frames are resized to the training size with PIL's default filter (official
`resize_images`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence

import h5py
import numpy as np

from cosmos_jax.data import decode
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data.episodes import Episode, EpisodeLengthError, check_episode, require_keys

HDF5_SUFFIXES = ('.h5', '.hdf5', '.he5')



@dataclasses.dataclass(frozen=True)
class FeatureMap:
  """Which keys of a foreign dataset format feed which part of the layout: a key per camera role, the proprio,
  action and instruction keys. Each format (LeRobot, RLDS) subclasses it with its own defaults."""

  cameras: Mapping[str, str] = dataclasses.field(default_factory=dict)
  proprio: str = ''
  actions: str = ''
  instruction: str = ''

  @classmethod
  def from_config(cls, features):
    """From a `config.data.features` ConfigDict/dict; empty fields keep the subclass's defaults."""
    default = cls()
    features = dict(features or {})
    cameras = {role: key for role, key in dict(features.get('cameras') or {}).items() if key} or dict(default.cameras)
    return cls(cameras=cameras, proprio=features.get('proprio') or default.proprio,
               actions=features.get('actions') or default.actions,
               instruction=features.get('instruction') or default.instruction)

def find_episode_files(data_dir: str, split: str | None = 'train') -> list[str]:
  """Sorted `*.h5/*.hdf5/*.he5` under `data_dir` (following symlinks), with a path component equal to `split`
  unless `split` is None. Sorted, unlike the official `os.walk` order, so every host sees the same order."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'data directory {data_dir} does not exist')
  files = []
  for root, _, names in os.walk(data_dir, followlinks=True):
    for name in names:
      if name.lower().endswith(HDF5_SUFFIXES):
        path = os.path.join(root, name)
        parts = os.path.normpath(os.path.relpath(path, data_dir)).split(os.sep)
        if split is None or split in parts:
          files.append(path)
  return sorted(files)


def image_dataset(path: str, group, name: str) -> tuple[str, int]:
  """(full HDF5 key, frame count) of camera `name` in `group`: raw `name`, else JPEG `name_jpeg`."""
  for key in (name, f'{name}_jpeg'):
    if key in group:
      return group[key].name, len(group[key])
  raise ValueError(f'{path}: missing key {name!r} (raw frames) or {name + "_jpeg"!r} (JPEG bytes) in HDF5 group '
                   f'{group.name!r}')


def load_image_datasets(path: str, keys: Mapping[str, str], image_size: int) -> dict[str, np.ndarray]:
  """{role: full HDF5 key} -> {role: (T, image_size, image_size, 3) uint8}, decoding `*_jpeg` datasets."""
  frames = {}
  for role, key in keys.items():
    if key.endswith('_jpeg'):
      images = decode.read_jpeg_sequence(path, key)
    else:
      with h5py.File(path, 'r') as f:
        images = np.asarray(f[key][:])
      if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f'{path}: {key} must be (T, H, W, 3) uint8 frames, got shape {images.shape} '
                         f'dtype {images.dtype}')
    frames[role] = decode.resize_square(images, image_size)
  return frames


def hdf5_episode(path: str, command: str, proprio: np.ndarray, actions: np.ndarray, group, cameras: Mapping[str, str],
                 image_size: int, lazy: bool, *, action_key: str, proprio_key: str, success: bool = True) -> Episode:
  """An Episode whose camera frames are image datasets of `group` (`cameras`: dataset name -> slot role),
  checked for consistent lengths; frames load now, or on demand when `lazy`."""
  keys, counts = {}, {}
  for name, role in cameras.items():
    keys[role], counts[role] = image_dataset(path, group, name)
  check_episode(path, proprio, actions, {keys[r]: n for r, n in counts.items()}, proprio_key=proprio_key,
                action_key=action_key)
  loader = functools.partial(load_image_datasets, path, keys, image_size)
  return Episode(path=path, command=command, proprio=proprio, actions=actions, success=success,
                 terminal_reward=1.0 if success else 0.0, frames=None if lazy else loader(),
                 frame_loader=loader if lazy else None)


def read_flat_rollout(path: str, cameras: Mapping[str, str], image_size: int, lazy: bool, *,
                      read_actions: Callable[[str, object], np.ndarray]) -> Episode:
  """One LIBERO/RoboCasa evaluation rollout: top-level image datasets, `actions`, `proprio`, and the attributes
  `task_description` and `success`."""
  with h5py.File(path, 'r') as f:
    require_keys(path, f, ['actions', 'proprio'])
    command = read_attr_string(path, f.attrs, 'task_description', required=True)
    success = bool(f.attrs.get('success', False))
    return hdf5_episode(path, command, np.asarray(f['proprio'][:], np.float32), read_actions(path, f['actions']), f,
                        cameras, image_size, lazy, action_key='actions', proprio_key='proprio', success=success)


def demo_keys(path: str, data_group) -> list[str]:
  """`demo_<k>` group names in numeric k order (the official sort); other names are an error."""
  keys = list(data_group.keys())
  bad = [k for k in keys if not (k.startswith('demo_') and k[5:].isdigit())]
  if bad:
    raise ValueError(f'{path}: unexpected groups {bad} under {data_group.name!r} (expected demo_<k>)')
  if not keys:
    raise ValueError(f'{path}: no demo_<k> groups under {data_group.name!r}')
  return sorted(keys, key=lambda k: int(k[5:]))


def read_robomimic_demos(path: str, cameras: Mapping[str, str], image_size: int, lazy: bool, *,
                         task: Callable[[object], str], read_actions: Callable[[str, object], np.ndarray]
                         ) -> list[Episode]:
  """The demonstrations of one robomimic-layout demo file (LIBERO, RoboCasa): groups `data/demo_<k>` in numeric k
  order, each with `obs/<camera>` (`cameras`: dataset name -> slot role), `actions` and `robot_states` (proprio).
  `task(demo_group)` is the demo's task string. Each `Episode.path` is the file; messages name the demo group
  through the full HDF5 keys."""
  episodes = []
  with h5py.File(path, 'r') as f:
    require_keys(path, f, ['data'])
    for key in demo_keys(path, f['data']):
      demo = f['data'][key]
      require_keys(path, demo, ['obs', 'actions', 'robot_states'])
      episodes.append(hdf5_episode(path, task(demo), np.asarray(demo['robot_states'][:], np.float32),
                                   read_actions(path, demo['actions']), demo['obs'], cameras, image_size, lazy,
                                   action_key=f'{demo.name}/actions', proprio_key=f'{demo.name}/robot_states'))
  return episodes


def read_attr_string(path: str, attrs, name: str, *, required: bool) -> str:
  """A string attribute (bytes or str); '' when absent and not required."""
  if name not in attrs:
    if required:
      raise ValueError(f'{path}: missing attribute {name!r}')
    return ''
  value = attrs[name]
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_statistics_or_compute(data_dir: str, demos: Sequence[Episode], stats_path: str | None = None,
                               run_copy: stats_lib.RunCopy | None = None):
  """`stats_path` (which must exist), else `<data_dir>/dataset_statistics.json` when present, else computed from the
  demos; a training run passes its `run_copy` (see `stats.resolve_statistics`). The dataset folder is never written."""
  if stats_path and not os.path.exists(stats_path):
    raise FileNotFoundError(f'statistics file {stats_path} does not exist (leave it unset to use '
                            f'{os.path.join(data_dir, stats_lib.STATISTICS_FILENAME)} or compute them)')
  return stats_lib.resolve_statistics(
      stats_path or os.path.join(data_dir, stats_lib.STATISTICS_FILENAME),
      lambda: stats_lib.compute_statistics({'actions': e.actions, 'proprio': e.proprio} for e in demos),
      run_copy=run_copy)


def read_rollouts(rollout_dir: str, read: Callable[[str], Episode], *,
                  skip_mismatched: bool = False) -> list[Episode]:
  """Every HDF5 rollout under `rollout_dir` (no split filter, as the official readers); frame/action count
  mismatches are errors unless `skip_mismatched` (the official ALOHA reader skips them with a warning)."""
  files = find_episode_files(rollout_dir, None)
  if not files:
    raise FileNotFoundError(f'no HDF5 rollouts under {rollout_dir}')
  rollouts = []
  for path in files:
    try:
      rollouts.append(read(path))
    except EpisodeLengthError:
      if not skip_mismatched:
        raise
  return rollouts


def build_dataset(data_dir: str, demos: Sequence[Episode], config, *, rollouts: Sequence[Episode] = (),
                  stats_path: str | None = None, run_copy: stats_lib.RunCopy | None = None, tasks=None):
  """Statistics from the demos (or the file), then the `PolicyDataset` over demos and rollouts."""
  stats = load_statistics_or_compute(data_dir, demos, stats_path, run_copy)
  return sample_lib.PolicyDataset(demos, stats, config, rollouts=rollouts, tasks=tasks)
