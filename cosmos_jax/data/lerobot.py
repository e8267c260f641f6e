"""LeRobot datasets (codebase versions v2.1 and v3.0) as a training source.

On disk (published LeRobot format):
* `meta/info.json`: `codebase_version`, `fps`, `chunks_size`, `features` (camera keys have dtype `video`),
  `data_path` / `video_path` templates.
* v2.1: `meta/tasks.jsonl` ({task_index, task}), `meta/episodes.jsonl` ({episode_index, tasks, length}), one parquet
  file and one MP4 per camera per episode (`data/chunk-XXX/episode_XXXXXX.parquet`).
* v3.0: `meta/tasks.parquet` (task strings as the index, `task_index`), `meta/episodes/chunk-XXX/file-XXX.parquet`
  (episode rows locating each episode's frames in concatenated data files and, per camera, its time range in a
  concatenated video file: `videos/<key>/from_timestamp`).

A feature map (`FeatureMap`, `config.data.features` of a training config) says which LeRobot key feeds which part of
the layout: camera key per camera role, `observation.state` -> proprio, `action` -> actions; the instruction is
the task string of the frames' `task_index`. Statistics are min/max over every demo frame (the official
`dataset_statistics.json` schema, `stats.compute_statistics`); LeRobot's own mean/std statistics are not used.
Video is decoded with PyAV (any codec its FFmpeg has: AV1 through libdav1d, H.264, ...), frames selected by
presentation time, then resized with PIL as every other reader.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping

import numpy as np

from cosmos_jax.data import decode, readers
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data.episodes import Episode, EpisodeLengthError, check_episode

VERSIONS = ('v2.1', 'v3.0')
# LeRobot ALOHA camera keys by camera role of the ALOHA layout (what the LeRobot ALOHA datasets record).
ALOHA_CAMERAS = {'image': 'observation.images.top', 'wrist_image': 'observation.images.left_wrist',
                 'wrist_image2': 'observation.images.right_wrist'}


@dataclasses.dataclass(frozen=True)
class FeatureMap(readers.FeatureMap):
  """LeRobot keys -> layout: camera key per camera role, proprio and action keys, the task-index column."""

  cameras: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(ALOHA_CAMERAS))
  proprio: str = 'observation.state'
  actions: str = 'action'
  instruction: str = 'task_index'


@dataclasses.dataclass(frozen=True)
class EpisodeLocation:
  """Where one episode's frames are: its parquet file and rows, and per camera a video file and time range."""

  index: int
  length: int
  data_file: str
  rows: tuple[int, int] | None  # (from, to) dataset index range inside a concatenated data file (v3.0)
  videos: Mapping[str, tuple[str, float]]  # camera key -> (MP4 path, start time in seconds)


def read_info(root: str) -> dict:
  path = os.path.join(root, 'meta', 'info.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{root} is not a LeRobot dataset: {path} does not exist')
  with open(path, encoding='utf-8') as f:
    info = json.load(f)
  version = info.get('codebase_version')
  if version not in VERSIONS:
    raise ValueError(f'{path}: codebase_version {version!r} is not supported (supported: {list(VERSIONS)})')
  for key in ('fps', 'features', 'data_path'):
    if key not in info:
      raise ValueError(f'{path}: missing key {key!r}')
  return info


def check_features(root: str, info: Mapping, features: FeatureMap) -> None:
  """Every mapped key exists in meta/info.json with the right kind (cameras are videos)."""
  where = os.path.join(root, 'meta', 'info.json')
  known = info['features']
  for role, key in features.cameras.items():
    if key not in known:
      cams = sorted(k for k, v in known.items() if v.get('dtype') in ('video', 'image'))
      raise ValueError(f'{where}: camera {key!r} (camera role {role!r}) is not a feature of this dataset; its '
                       f'cameras are {cams}')
    if known[key].get('dtype') != 'video':
      raise ValueError(f'{where}: camera {key!r} has dtype {known[key].get("dtype")!r}; only video cameras are read')
  for key in (features.proprio, features.actions, features.instruction):
    if key not in known:
      raise ValueError(f'{where}: feature {key!r} is missing (features: {sorted(known)})')


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    raise FileNotFoundError(f'LeRobot metadata {path} does not exist')
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def read_tasks(root: str, info: Mapping) -> dict[int, str]:
  """task_index -> task string."""
  if info['codebase_version'] == 'v2.1':
    return {int(r['task_index']): str(r['task']) for r in _read_jsonl(os.path.join(root, 'meta', 'tasks.jsonl'))}
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top  # optional: only LeRobot datasets need it

  table = pq.read_table(os.path.join(root, 'meta', 'tasks.parquet')).to_pydict()
  names = [k for k in table if k != 'task_index']
  if 'task_index' not in table or len(names) != 1:
    raise ValueError(f'{root}/meta/tasks.parquet: expected a task_index column and the task strings, got {sorted(table)}')
  return {int(i): str(t) for i, t in zip(table['task_index'], table[names[0]])}


def locate_episodes(root: str, info: Mapping, cameras) -> list[EpisodeLocation]:
  """Every episode's files, in episode order."""
  chunks = int(info.get('chunks_size', 1000))
  video_path = info.get('video_path') or ''
  out = []
  if info['codebase_version'] == 'v2.1':
    for row in _read_jsonl(os.path.join(root, 'meta', 'episodes.jsonl')):
      e = int(row['episode_index'])
      fields = dict(episode_chunk=e // chunks, episode_index=e)
      videos = {key: (os.path.join(root, video_path.format(video_key=key, **fields)), 0.0) for key in cameras}
      out.append(EpisodeLocation(e, int(row['length']), os.path.join(root, info['data_path'].format(**fields)), None,
                                 videos))
  else:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top  # optional: only LeRobot datasets need it

    meta_dir = os.path.join(root, 'meta', 'episodes')
    files = sorted(os.path.join(d, n) for d, _, names in os.walk(meta_dir) for n in names if n.endswith('.parquet'))
    if not files:
      raise FileNotFoundError(f'no episodes metadata (*.parquet) under {meta_dir}')
    for path in files:
      table = pq.read_table(path).to_pydict()
      for i, e in enumerate(table['episode_index']):
        data = dict(chunk_index=table['data/chunk_index'][i], file_index=table['data/file_index'][i])
        videos = {}
        for key in cameras:
          column = f'videos/{key}/chunk_index'
          if column not in table:
            raise ValueError(f'{path}: episode {e}: missing column {column!r} for camera {key!r}')
          fields = dict(video_key=key, chunk_index=table[column][i], file_index=table[f'videos/{key}/file_index'][i])
          videos[key] = (os.path.join(root, video_path.format(**fields)), float(table[f'videos/{key}/from_timestamp'][i]))
        out.append(EpisodeLocation(int(e), int(table['length'][i]), os.path.join(root, info['data_path'].format(**data)),
                                   (int(table['dataset_from_index'][i]), int(table['dataset_to_index'][i])), videos))
  return sorted(out, key=lambda loc: loc.index)


def read_video_frames(path: str, start_s: float, count: int, fps: float, *, episode: int, key: str) -> np.ndarray:
  """`count` frames from `start_s` seconds of an MP4 (by presentation time), (count, H, W, 3) uint8.

  Errors name the file, the episode and the camera key: a missing or undecodable file, too few frames."""
  import av  # pylint: disable=g-import-not-at-top  # optional (the lerobot extra): only LeRobot videos need PyAV

  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: video of episode {episode}, camera {key!r} does not exist')
  first = int(round(start_s * fps))
  frames = []
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      if start_s > 0 and stream.time_base is not None:
        # v3.0 files hold many episodes: jump to the keyframe before this one's start instead of decoding from 0.
        container.seek(int(start_s / stream.time_base), stream=stream, backward=True, any_frame=False)
      for frame in container.decode(stream):
        index = int(round(float(frame.time) * fps)) if frame.time is not None else None
        if index is None or index < first:
          continue
        if index >= first + count:
          break
        frames.append(frame.to_ndarray(format='rgb24'))
  except (av.error.FFmpegError, IndexError) as e:
    raise ValueError(f'{path}: video of episode {episode}, camera {key!r} is not decodable ({type(e).__name__}: {e})'
                     ) from e
  if len(frames) != count:
    raise EpisodeLengthError(f'{path}: episode {episode}, camera {key!r} has {len(frames)} frames from '
                             f'{start_s:.3f}s but the episode has {count} steps; they must match')
  return np.stack(frames)


def _load_frames(location: EpisodeLocation, roles: Mapping[str, str], fps: float, image_size: int):
  return {role: decode.resize_square(read_video_frames(*location.videos[key], location.length, fps,
                                                       episode=location.index, key=key), image_size)
          for role, key in roles.items()}


def read_episode(location: EpisodeLocation, info: Mapping, tasks: Mapping[int, str], features: FeatureMap,
                 image_size: int, *, lazy: bool = False) -> Episode:
  """One LeRobot episode: state/action/task from its parquet rows, frames from its videos (now, or when `lazy`, on
  demand)."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top  # optional: only LeRobot datasets need it

  path = location.data_file
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: data file of episode {location.index} does not exist')
  columns = [features.proprio, features.actions, features.instruction, 'episode_index']
  table = pq.read_table(path, columns=[c for c in columns if c != 'episode_index'] + ['episode_index'])
  episode_rows = np.asarray(table.column('episode_index').to_numpy()) == location.index
  name = f'{path} (episode {location.index})'
  if not episode_rows.any():
    raise ValueError(f'{name}: no rows with episode_index {location.index}')

  def column(key):
    values = table.column(key).filter(episode_rows).to_pylist()
    return np.asarray(values, np.float32)

  proprio, actions = column(features.proprio), column(features.actions)
  task_ids = set(table.column(features.instruction).filter(episode_rows).to_pylist())
  if len(task_ids) != 1:
    raise ValueError(f'{name}: {features.instruction!r} must be constant in an episode, got {sorted(task_ids)}')
  task_id = int(task_ids.pop())
  if task_id not in tasks:
    raise ValueError(f'{name}: {features.instruction!r} {task_id} is not in the tasks metadata ({sorted(tasks)})')
  check_episode(name, proprio, actions, {}, proprio_key=features.proprio, action_key=features.actions)
  if actions.shape[0] != location.length:
    raise EpisodeLengthError(f'{name}: {features.actions!r} has {actions.shape[0]} rows but the episodes metadata '
                             f'says length {location.length}; they must match')
  loader = functools.partial(_load_frames, location, dict(features.cameras), float(info['fps']), image_size)
  return Episode(path=name, command=tasks[task_id], proprio=proprio, actions=actions, success=True,
                 terminal_reward=1.0, frames=None if lazy else loader(), frame_loader=loader if lazy else None)


def read_episodes(root: str, features: FeatureMap, image_size: int, *, lazy: bool = False) -> list[Episode]:
  info = read_info(root)
  check_features(root, info, features)
  tasks = read_tasks(root, info)
  return [read_episode(loc, info, tasks, features, image_size, lazy=lazy)
          for loc in locate_episodes(root, info, features.cameras.values())]


def load_dataset(root: str, config=None, *, features: FeatureMap | Mapping | None = None,
                 stats_path: str | None = None, run_copy: stats_lib.RunCopy | None = None, tasks=None,
                 lazy: bool = False, rollout_dir: str | None = None):
  """A `PolicyDataset` of the LeRobot dataset at `root` (demos). Statistics: `stats_path`, else
  `<root>/dataset_statistics.json` (official schema) when present, else min/max computed from the demos."""
  if rollout_dir:
    raise ValueError(f'LeRobot dataset {root}: rollouts are not supported (got rollout_dir={rollout_dir!r})')
  config = config or sample_lib.SampleConfig.for_layout('aloha')
  if not isinstance(features, FeatureMap):
    features = FeatureMap.from_config(features)
  missing = sorted(set(config.layout.cameras) - set(features.cameras))
  if missing:
    raise ValueError(f'{root}: the feature map names no LeRobot camera for camera roles {missing} of the '
                     f'{config.layout.name} layout (it maps {dict(features.cameras)})')
  demos = read_episodes(root, features, config.image_size, lazy=lazy)
  return readers.build_dataset(root, demos, config, stats_path=stats_path, run_copy=run_copy, tasks=tasks)
