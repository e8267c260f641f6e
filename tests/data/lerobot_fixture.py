"""Writes the bundled LeRobot fixtures (tests/data/fixtures/lerobot_v2.1, lerobot_v3.0) from the published LeRobot
dataset format (codebase versions v2.1 and v3.0: meta/info.json, tasks, episodes metadata, parquet frames, one MP4
per camera), for two short synthetic ALOHA-shaped episodes (3 cameras, 14-D state and action).

The `lerobot` library did not write these: `pip install --dry-run lerobot torch==2.13.0` resolves (lerobot 0.3.2,
which writes v2.1 only), but installed beside the pinned CPU torch (into a separate --target directory, not the
project venv) it does not import: its torchvision 0.28.0 wheel fails to load against torch 2.13.0+cpu
("RuntimeError: operator torchvision::nms does not exist"). So the files follow the published format specification.
v2.1 videos are H.264, v3.0 videos AV1 (both through PyAV).

    python -m tests.data.lerobot_fixture tests/data/fixtures
"""

from __future__ import annotations

import json
import os
import sys

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FPS = 10
SIZE = 64
LENGTHS = (24, 18)
TASKS = ('stack the blocks', 'transfer cube')
EPISODE_TASKS = (1, 1)  # task index of each episode (the bundled text store knows 'transfer cube')
CAMERAS = ('observation.images.top', 'observation.images.left_wrist', 'observation.images.right_wrist')
DIM = 14


def episode_arrays(episode: int) -> dict[str, np.ndarray]:
  n = LENGTHS[episode]
  t = np.arange(n, dtype=np.float32)[:, None]
  d = np.arange(DIM, dtype=np.float32)[None, :]
  state = np.sin(0.3 * t + 0.5 * d + episode).astype(np.float32)
  action = np.cos(0.2 * t - 0.4 * d + 2 * episode).astype(np.float32)
  return {'observation.state': state, 'action': action}


def frames(episode: int, camera: int) -> np.ndarray:
  """Smooth, camera- and time-dependent images (compress well, survive the codec roughly)."""
  n = LENGTHS[episode]
  y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
  out = np.empty((n, SIZE, SIZE, 3), np.uint8)
  for t in range(n):
    for c in range(3):
      out[t, :, :, c] = np.clip(128 + 100 * np.sin((x + 3 * t) / (9 + camera) + c + episode) * np.cos(y / 13), 0, 255)
  return out


def write_video(path: str, images: np.ndarray, codec: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=FPS)
    stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, 'yuv420p'
    if codec == 'libx264':
      stream.options = {'crf': '18', 'bf': '0'}
    for image in images:
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def frame_table(episodes, start_index: int = 0) -> pa.Table:
  columns = {'observation.state': [], 'action': [], 'timestamp': [], 'frame_index': [], 'episode_index': [],
             'index': [], 'task_index': []}
  index = start_index
  for e in episodes:
    arrays = episode_arrays(e)
    for t in range(LENGTHS[e]):
      columns['observation.state'].append(arrays['observation.state'][t].tolist())
      columns['action'].append(arrays['action'][t].tolist())
      columns['timestamp'].append(np.float32(t / FPS))
      columns['frame_index'].append(t)
      columns['episode_index'].append(e)
      columns['index'].append(index)
      columns['task_index'].append(EPISODE_TASKS[e])
      index += 1
  vector = pa.list_(pa.float32(), DIM)
  return pa.table({'observation.state': pa.array(columns['observation.state'], vector),
                   'action': pa.array(columns['action'], vector),
                   'timestamp': pa.array(columns['timestamp'], pa.float32()),
                   **{k: pa.array(columns[k], pa.int64()) for k in ('frame_index', 'episode_index', 'index',
                                                                    'task_index')}})


def features(codec: str) -> dict:
  video = {'dtype': 'video', 'shape': [SIZE, SIZE, 3], 'names': ['height', 'width', 'channels'],
           'info': {'video.height': SIZE, 'video.width': SIZE, 'video.codec': codec, 'video.pix_fmt': 'yuv420p',
                    'video.is_depth_map': False, 'video.fps': FPS, 'video.channels': 3, 'has_audio': False}}
  out = {key: video for key in CAMERAS}
  out.update({
      'observation.state': {'dtype': 'float32', 'shape': [DIM], 'names': [f'joint_{i}' for i in range(DIM)]},
      'action': {'dtype': 'float32', 'shape': [DIM], 'names': [f'joint_{i}' for i in range(DIM)]},
      'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
      'frame_index': {'dtype': 'int64', 'shape': [1], 'names': None},
      'episode_index': {'dtype': 'int64', 'shape': [1], 'names': None},
      'index': {'dtype': 'int64', 'shape': [1], 'names': None},
      'task_index': {'dtype': 'int64', 'shape': [1], 'names': None},
  })
  return out


def info(version: str, codec: str, data_path: str, video_path: str, **extra) -> dict:
  return {'codebase_version': version, 'robot_type': 'aloha', 'total_episodes': len(LENGTHS),
          'total_frames': sum(LENGTHS), 'total_tasks': len(TASKS), 'chunks_size': 1000, 'fps': FPS,
          'splits': {'train': f'0:{len(LENGTHS)}'}, 'data_path': data_path, 'video_path': video_path,
          'features': features(codec), **extra}


def write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=4)


def write_v21(root: str) -> None:
  write_json(f'{root}/meta/info.json', info(
      'v2.1', 'h264', 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet',
      'videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4',
      total_chunks=1, total_videos=len(LENGTHS) * len(CAMERAS)))
  with open(f'{root}/meta/tasks.jsonl', 'w', encoding='utf-8') as f:
    for i, task in enumerate(TASKS):
      f.write(json.dumps({'task_index': i, 'task': task}) + '\n')
  with open(f'{root}/meta/episodes.jsonl', 'w', encoding='utf-8') as f:
    for e, n in enumerate(LENGTHS):
      f.write(json.dumps({'episode_index': e, 'tasks': [TASKS[EPISODE_TASKS[e]]], 'length': n}) + '\n')
  start = 0
  for e, n in enumerate(LENGTHS):
    os.makedirs(f'{root}/data/chunk-000', exist_ok=True)
    pq.write_table(frame_table([e], start), f'{root}/data/chunk-000/episode_{e:06d}.parquet')
    start += n
    for c, key in enumerate(CAMERAS):
      write_video(f'{root}/videos/chunk-000/{key}/episode_{e:06d}.mp4', frames(e, c), 'libx264')


def write_v30(root: str) -> None:
  """v3.0: every episode in one data file and one video file per camera, located by episodes metadata."""
  write_json(f'{root}/meta/info.json', info(
      'v3.0', 'av1', 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
      'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4',
      data_files_size_in_mb=100, video_files_size_in_mb=500))
  os.makedirs(f'{root}/meta/episodes/chunk-000', exist_ok=True)
  pq.write_table(pa.table({'task_index': pa.array(range(len(TASKS)), pa.int64()),
                           '__index_level_0__': pa.array(TASKS)}), f'{root}/meta/tasks.parquet')
  os.makedirs(f'{root}/data/chunk-000', exist_ok=True)
  pq.write_table(frame_table(range(len(LENGTHS))), f'{root}/data/chunk-000/file-000.parquet')
  for c, key in enumerate(CAMERAS):
    write_video(f'{root}/videos/{key}/chunk-000/file-000.mp4',
                np.concatenate([frames(e, c) for e in range(len(LENGTHS))]), 'libsvtav1')
  starts = np.cumsum((0,) + LENGTHS)
  table = {'episode_index': list(range(len(LENGTHS))), 'tasks': [[TASKS[t]] for t in EPISODE_TASKS],
           'length': list(LENGTHS), 'dataset_from_index': starts[:-1].tolist(), 'dataset_to_index': starts[1:].tolist(),
           'data/chunk_index': [0, 0], 'data/file_index': [0, 0]}
  for key in CAMERAS:
    table[f'videos/{key}/chunk_index'] = [0, 0]
    table[f'videos/{key}/file_index'] = [0, 0]
    table[f'videos/{key}/from_timestamp'] = (starts[:-1] / FPS).tolist()
    table[f'videos/{key}/to_timestamp'] = (starts[1:] / FPS).tolist()
  pq.write_table(pa.table(table), f'{root}/meta/episodes/chunk-000/file-000.parquet')


def main(out: str) -> None:
  write_v21(os.path.join(out, 'lerobot_v2.1'))
  write_v30(os.path.join(out, 'lerobot_v3.0'))


if __name__ == '__main__':
  main(sys.argv[1])
