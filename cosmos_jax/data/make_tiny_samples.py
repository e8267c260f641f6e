"""The LIBERO- and RoboCasa-format samples bundled for `configs/libero.py:tiny` and `configs/robocasa.py:tiny`.

Neither simulator is a dependency, so these samples are re-recorded from the bundled gym-aloha sample
(`sample_aloha/`, real rendered frames and scripted trajectories): demo 0, every `STRIDE`-th step, images
at `IMAGE_SIZE` px stored as JPEG (`<camera>_jpeg`, quality 95, as the official LIBERO/RoboCasa prepressing), in
the official demo-file layouts (robomimic `data/demo_<k>`):

  LIBERO:   `<task>_demo.hdf5`, obs `agentview_rgb` <- cam_high, `eye_in_hand_rgb` <- cam_left_wrist, `actions`
            (T, 7) <- the left arm's 7 action dimensions, `robot_states` (T, 9) <- the first 9 qpos dimensions.
  RoboCasa: obs `robot0_agentview_left_rgb` <- cam_high, `robot0_agentview_right_rgb` <- cam_right_wrist,
            `robot0_eye_in_hand_rgb` <- cam_left_wrist, `actions` (T, 12) <- the first 12 action dimensions,
            `robot_states` (T, 9), the demo attribute `task_description`.

Each sample directory also holds `dataset_statistics.json` (computed from its demos as the official readers do)
and a STAND-IN text store (not T5). They train the tiny pipeline; they are not LIBERO or RoboCasa data.

    python -m cosmos_jax.data.make_tiny_samples [--out_root=DIR]   # default: the bundled directories
"""

from __future__ import annotations

import os
import pathlib

import h5py
import numpy as np
from absl import flags

from cosmos_jax import command_line
from cosmos_jax.data import aloha, bundled, decode, libero, robocasa, stats, text

STRIDE = 8  # 400-step ALOHA demos -> 50 steps, longer than RoboCasa's 32-step action chunk
IMAGE_SIZE = 64  # the tiny configs' image size
DEMOS = 1
TASK = 'transfer the cube'
_JPEG = h5py.vlen_dtype(np.dtype('uint8'))
# ALOHA role (sample_aloha camera) per benchmark camera, in each layout's camera_sources order.
SOURCES = {
    'libero': {'eye_in_hand_rgb': 'wrist_image', 'agentview_rgb': 'image'},
    'robocasa': {'robot0_eye_in_hand_rgb': 'wrist_image', 'robot0_agentview_left_rgb': 'image',
                 'robot0_agentview_right_rgb': 'wrist_image2'},
}
ACTION_DIMS = {'libero': 7, 'robocasa': 12}
PROPRIO_DIM = 9
FILE_NAMES = {'libero': 'transfer_the_cube_demo.hdf5', 'robocasa': 'transfer_the_cube.hdf5'}
READERS = {'libero': libero.read_demos, 'robocasa': robocasa.read_demos}


def _jpeg_dataset(group, name: str, frames: np.ndarray) -> None:
  data = np.empty(len(frames), object)  # a list of equal-length byte arrays would become a 2-D array
  for i, frame in enumerate(frames):
    data[i] = np.frombuffer(decode.encode_jpeg(frame), np.uint8)
  group.create_dataset(f'{name}_jpeg', data=data, dtype=_JPEG)


def write_sample(benchmark: str, out: str | os.PathLike, source: str | os.PathLike | None = None) -> pathlib.Path:
  """Writes `benchmark`'s ('libero' or 'robocasa') sample into `out`; returns the demo file."""
  if benchmark not in SOURCES:
    raise ValueError(f'no tiny sample recipe for {benchmark!r}; known: {sorted(SOURCES)}')
  source = source or bundled.sample_dir('aloha')
  files = aloha.find_episode_files(str(source))[:DEMOS]
  if len(files) < DEMOS:
    raise FileNotFoundError(f'{source}: need {DEMOS} ALOHA episodes, found {len(files)}')
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / FILE_NAMES[benchmark]
  with h5py.File(path, 'w') as f:
    data = f.create_group('data')
    for k, episode_file in enumerate(files):
      episode = aloha.read_demo(episode_file, IMAGE_SIZE)
      steps = slice(0, None, STRIDE)
      demo = data.create_group(f'demo_{k}')
      obs = demo.create_group('obs')
      for camera, role in SOURCES[benchmark].items():
        _jpeg_dataset(obs, camera, episode.frames[role][steps])
      demo['actions'] = episode.actions[steps, :ACTION_DIMS[benchmark]].astype(np.float64)
      demo['robot_states'] = episode.proprio[steps, :PROPRIO_DIM].astype(np.float64)
      if benchmark == 'robocasa':
        demo.attrs['task_description'] = TASK
  demos = READERS[benchmark](str(path), IMAGE_SIZE)
  stats.save_statistics(stats.compute_statistics({'actions': d.actions, 'proprio': d.proprio} for d in demos),
                        out / stats.STATISTICS_FILENAME)
  stats.load_statistics(out)  # validates: no constant dimension
  text.stand_in_store([TASK]).save(out / bundled.TEXT_STORE, source='cosmos_jax.data.make_tiny_samples')
  return path


def _define_flags(flag_values) -> None:
  flags.DEFINE_string('out_root', None, 'Write <out_root>/sample_<benchmark>/ (default: the bundled directories).',
                      flag_values=flag_values)


CLI = command_line.CommandLine('python -m cosmos_jax.data.make_tiny_samples', _define_flags,
                               {'': command_line.Command()},
                               'usage: python -m cosmos_jax.data.make_tiny_samples [--out_root=DIR]',
                               description=__doc__.split('\n\n')[0])


def main(argv=None) -> None:
  out_root = CLI.parse_or_exit(argv).flags.out_root
  for benchmark in SOURCES:
    out = (pathlib.Path(out_root) / f'sample_{benchmark}') if out_root else bundled.sample_dir(benchmark)
    path = write_sample(benchmark, out)
    size = sum(p.stat().st_size for p in out.rglob('*') if p.is_file())
    print(f'wrote {path} and its statistics and stand-in text store ({size / 1024:.0f} KiB)')


if __name__ == '__main__':
  main()
