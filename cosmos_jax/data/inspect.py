"""Look at a dataset before training on it: `python -m cosmos_jax.data.inspect DATASET --out=DIR`.

Any supported format (see datasets.py): the benchmark's official files ('native': ALOHA HDF5 + MP4, LIBERO and
RoboCasa HDF5), RLDS/TFDS directories and LeRobot v2.1 / v3.0 datasets; the format is detected (LeRobot:
`meta/info.json`; RLDS: `dataset_info.json`) unless given. Prints, and writes to DIR/report.json:
episode count and lengths, tasks, cameras, the value-target (Monte-Carlo return) distribution and min/max/mean/std
statistics; flags constant dimensions, NaNs, episodes whose streams (actions, proprio, each camera) disagree in
length and episodes that cannot be read at all. Writes DIR/contact_sheet.png (one row per camera, frames of the first
readable episode at evenly spaced steps, exact pixels at the inspection size; the steps are in the report) and
DIR/proprio_actions.png (matplotlib: every proprio and action dimension over that episode, plus the value target).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np
from absl import flags
from PIL import Image

from cosmos_jax import command_line
from cosmos_jax.data import aloha, datasets, lerobot, libero, mixture, readers, robocasa
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data.episodes import Episode
from cosmos_jax.data.rlds import reader as rlds_reader
from cosmos_jax.policy import layout as layout_lib

CONTACT_COLUMNS = 6
NATIVE_DEMOS = {
    'aloha': lambda path, size: [aloha.read_demo(path, size, lazy=True)],
    'libero': functools.partial(libero.read_demos, lazy=True),
    'robocasa': functools.partial(robocasa.read_demos, lazy=True),
}


def detect_format(path: str) -> str:
  if os.path.exists(os.path.join(path, 'meta', 'info.json')):
    return 'lerobot'
  if os.path.exists(os.path.join(path, 'dataset_info.json')):
    return 'rlds'
  return 'native'


def episode_sources(path: str, data_format: str, benchmark: str, features, image_size: int
                    ) -> list[tuple[str, Callable[[], list[Episode]]]]:
  """(name, read) per unit that can fail on its own (a file, an episode), in dataset order."""
  if data_format == 'native':
    files = readers.find_episode_files(path, 'train' if benchmark == 'aloha' else None)
    if not files:
      raise FileNotFoundError(f'no HDF5 episodes under {path} for the {benchmark} format')
    return [(f, functools.partial(NATIVE_DEMOS[benchmark], f, image_size)) for f in files]
  if data_format == 'rlds':
    features = dict(features or {})
    split = features.pop('split', '') or 'train'
    features.pop('rollout_split', None)
    feature_map = rlds_reader.FeatureMap.from_config(features)
    return [(f'{path}[{split}]', lambda: rlds_reader.read_episodes(path, split, feature_map, image_size))]
  if data_format == 'lerobot':
    feature_map = lerobot.FeatureMap.from_config(features)
    info = lerobot.read_info(path)
    lerobot.check_features(path, info, feature_map)
    tasks = lerobot.read_tasks(path, info)
    return [(f'episode {loc.index}',
             functools.partial(lambda loc: [lerobot.read_episode(loc, info, tasks, feature_map, image_size,
                                                                  lazy=True)], loc))
            for loc in lerobot.locate_episodes(path, info, feature_map.cameras.values())]
  raise ValueError(f'unknown data format {data_format!r}; known: {list(datasets.FORMATS)}')


def _describe(values: np.ndarray) -> dict:
  return {'min': float(values.min()), 'max': float(values.max()), 'mean': float(values.mean()),
          'median': float(np.median(values))}


def inspect_dataset(path: str, *, data_format: str = '', benchmark: str = 'aloha', features=None,
                    image_size: int = 64) -> tuple[dict, list[Episode], dict]:
  """(report, readable episodes, frames of the first readable episode by camera role)."""
  data_format = data_format or detect_format(path)
  layout = layout_lib.LAYOUTS[benchmark]
  report = {'dataset': path, 'format': data_format, 'layout': benchmark, 'flags': []}
  episodes, first_frames = [], None
  stream_lengths = []
  for name, read in episode_sources(path, data_format, benchmark, features, image_size):
    try:
      read_episodes = read()
    except (ValueError, OSError) as e:  # EpisodeLengthError is a ValueError
      report['flags'].append(f'unreadable: {name}: {e}')
      continue
    for episode in read_episodes:
      try:
        frames = episode.load_frames()
      except (ValueError, OSError) as e:
        report['flags'].append(f'unreadable frames: {episode.path}: {e}')
        continue
      lengths = {'actions': int(episode.actions.shape[0]), 'proprio': int(episode.proprio.shape[0]),
                 **{f'camera {role}': int(v.shape[0]) for role, v in frames.items()}}
      stream_lengths.append(lengths)
      if len(set(lengths.values())) != 1:
        report['flags'].append(f'stream lengths disagree in {episode.path}: {lengths}')
      for key in ('actions', 'proprio'):
        bad = np.flatnonzero(np.isnan(getattr(episode, key)).any(axis=0))
        if bad.size:
          report['flags'].append(f'NaN in {key} of {episode.path}, dimensions {bad.tolist()}')
      if first_frames is None:
        first_frames = frames
      episode.frames, episode.frame_loader = None, None  # keep only the first episode's frames in memory
      episodes.append(episode)
  if not episodes:
    raise ValueError(f'{path}: no readable episode ({len(report["flags"])} problems: {report["flags"][:3]})')

  lengths = np.array([e.num_steps for e in episodes])
  report['episodes'] = {'count': len(episodes), 'unreadable': sum(f.startswith('unreadable') for f in report['flags']),
                        'successful': sum(bool(e.success) for e in episodes),
                        'length': {**_describe(lengths), 'total_steps': int(lengths.sum())}}
  tasks = {}
  for e in episodes:
    tasks[e.command] = tasks.get(e.command, 0) + 1
  report['tasks'] = dict(sorted(tasks.items()))
  report['cameras'] = {role: {'frames_shape': list(first_frames[role].shape[1:])} for role in first_frames}
  missing = sorted(set(layout.cameras) - set(first_frames))
  if missing:
    report['flags'].append(f'the {benchmark} layout needs camera roles {missing}, which this dataset does not map')
  returns = np.concatenate([mixture.value_returns(e.num_steps, e.terminal_reward, layout.gamma) for e in episodes])
  counts, edges = np.histogram(returns, bins=10, range=(-1.0, 1.0))
  report['value_target'] = {**_describe(returns), 'gamma': layout.gamma,
                            'histogram': {'edges': edges.tolist(), 'counts': counts.tolist()}}
  stats = stats_lib.compute_statistics({'actions': e.actions, 'proprio': e.proprio} for e in episodes)
  report['statistics'] = {k: np.asarray(v).tolist() for k, v in stats.items()}
  for key in stats_lib.STAT_KEYS:
    constant = np.flatnonzero(~(stats[f'{key}_max'] > stats[f'{key}_min']))
    if constant.size:
      report['flags'].append(f'constant {key} dimensions {constant.tolist()} (min-max normalisation divides by '
                             'zero there)')
    expected = layout.action_dim if key == 'actions' else layout.proprio_dim
    if stats[f'{key}_min'].shape[0] != expected:
      report['flags'].append(f'{key} have {stats[f"{key}_min"].shape[0]} dimensions; the {benchmark} layout expects '
                             f'{expected}')
  return report, episodes, first_frames


def contact_sheet(frames: dict[str, np.ndarray], columns: int = CONTACT_COLUMNS) -> tuple[np.ndarray, list[int]]:
  """(rows of cameras × columns of steps) tiled frames, exact pixels, and the steps shown."""
  roles = list(frames)
  n = frames[roles[0]].shape[0]
  steps = sorted(set(np.linspace(0, n - 1, min(columns, n)).round().astype(int).tolist()))
  rows = [np.concatenate([frames[role][t] for t in steps], axis=1) for role in roles]
  return np.concatenate(rows, axis=0), steps


def write_figures(out_dir: str, report: dict, episode: Episode, frames: dict[str, np.ndarray], gamma: float) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top  # optional (the inspect extra): only plots need it
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  sheet, steps = contact_sheet(frames)
  Image.fromarray(sheet).save(os.path.join(out_dir, 'contact_sheet.png'))
  report['contact_sheet'] = {'file': 'contact_sheet.png', 'episode': episode.path, 'rows': list(frames),
                             'steps': steps, 'tile': list(next(iter(frames.values())).shape[1:3])}
  figure, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
  t = np.arange(episode.num_steps)
  for axis, values, title in ((axes[0], episode.proprio, 'proprio'), (axes[1], episode.actions, 'actions')):
    for d in range(values.shape[1]):
      axis.plot(t, values[:, d], linewidth=1, label=str(d))
    axis.set_title(f'{title} ({values.shape[1]} dimensions)')
    axis.legend(ncol=8, fontsize=6, loc='upper right')
  axes[2].plot(t, mixture.value_returns(episode.num_steps, episode.terminal_reward, gamma), color='black')
  axes[2].set_title('value target (Monte-Carlo return)')
  axes[2].set_xlabel('step')
  figure.suptitle(episode.path, fontsize=8)
  figure.tight_layout()
  figure.savefig(os.path.join(out_dir, 'proprio_actions.png'), dpi=100)
  plt.close(figure)
  report['plots'] = {'file': 'proprio_actions.png', 'episode': episode.path}


def summary_lines(report: dict) -> list[str]:
  e = report['episodes']
  lines = [f"{report['dataset']} ({report['format']}, {report['layout']} layout)",
           f"episodes: {e['count']} readable, {e['unreadable']} unreadable, {e['successful']} successful; length "
           f"min {e['length']['min']:.0f} mean {e['length']['mean']:.1f} max {e['length']['max']:.0f}, "
           f"{e['length']['total_steps']} steps",
           'tasks: ' + '; '.join(f'{task!r} x{n}' for task, n in report['tasks'].items()),
           'cameras: ' + ', '.join(f"{role} {info['frames_shape']}" for role, info in report['cameras'].items()),
           'value target: ' + ', '.join(f'{k} {report["value_target"][k]:.3f}' for k in ('min', 'mean', 'max')),
           f"histogram over [-1, 1]: {report['value_target']['histogram']['counts']}"]
  for key in stats_lib.STAT_KEYS:
    for name in ('min', 'max'):
      lines.append(f'{key}_{name}: ' + ' '.join(f'{v:.4g}' for v in report['statistics'][f'{key}_{name}']))
  lines += [f'FLAG {flag}' for flag in report['flags']] or ['no problems found']
  return lines


def _define_flags(flag_values) -> None:
  fv = {'flag_values': flag_values}
  flags.DEFINE_string('out', None, 'Directory for report.json and the PNG files.', **fv)
  flags.DEFINE_enum('format', None, list(datasets.FORMATS), 'The dataset format (default: detected).', **fv)
  flags.DEFINE_enum('layout', 'aloha', sorted(NATIVE_DEMOS), 'Policy layout / benchmark.', **fv)
  flags.DEFINE_string('features', '', 'Feature map as JSON (see configs/common.py data.features).', **fv)
  flags.DEFINE_integer('image_size', 64, 'Frames are resized to this for the contact sheet.', **fv)


CLI = command_line.CommandLine(
    'python -m cosmos_jax.data.inspect', _define_flags,
    {'': command_line.Command(('DATASET',), required=('out',))},
    'usage: python -m cosmos_jax.data.inspect DATASET --out=DIR [--format=F] [--layout=aloha] [--features=JSON] '
    '[--image_size=64]', description=__doc__.split('\n')[0])


def main(argv: Sequence[str] | None = None) -> int:
  parsed = CLI.parse_or_exit(argv)
  f = parsed.flags
  features = json.loads(f.features) if f.features else None
  report, episodes, frames = inspect_dataset(parsed.positional[0], data_format=f.format or '', benchmark=f.layout,
                                             features=features, image_size=f.image_size)
  os.makedirs(f.out, exist_ok=True)
  write_figures(f.out, report, episodes[0], frames, layout_lib.LAYOUTS[f.layout].gamma)
  with open(os.path.join(f.out, 'report.json'), 'w', encoding='utf-8') as file:
    json.dump(report, file, indent=2)
  print('\n'.join(summary_lines(report)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
