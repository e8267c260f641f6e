"""The dataset inspector on every supported format: report contents, problem flags, and its PNGs checked for size
and pixels (the contact sheet tile by tile against independently decoded frames; the plot for its line colours)."""

import json
import os
import shutil
import subprocess
import sys

import av
import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cosmos_jax.data import aloha, bundled, inspect, robocasa
from cosmos_jax.data.rlds import aloha_builder
from tests.data import lerobot_fixture, sim_files

SAMPLE = bundled.sample_dir('aloha')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
EPISODE = 'transfer_cube_scripted/train/episode_0'
LIBERO_CAMERAS = ['agentview_rgb', 'eye_in_hand_rgb']
MATPLOTLIB_C0 = (31, 119, 180)  # the first colour of matplotlib's default cycle


def run(dataset, out, *args):
  assert inspect.main([str(dataset), '--out', str(out), *args]) == 0
  with open(out / 'report.json', encoding='utf-8') as f:
    return json.load(f)


def check_contact_sheet(out, report, frames_by_role):
  """Every tile equals the frame it claims to show (rows: cameras, columns: steps)."""
  sheet = np.asarray(Image.open(out / 'contact_sheet.png'))
  sheet_info = report['contact_sheet']
  h, w = sheet_info['tile']
  assert sheet.shape == (h * len(sheet_info['rows']), w * len(sheet_info['steps']), 3)
  assert sheet_info['steps'][0] == 0 and len(sheet_info['steps']) == min(6, len(next(iter(frames_by_role.values()))))
  for r, role in enumerate(sheet_info['rows']):
    for c, step in enumerate(sheet_info['steps']):
      tile = sheet[r * h:(r + 1) * h, c * w:(c + 1) * w]
      np.testing.assert_array_equal(tile, frames_by_role[role][step], err_msg=f'{role} step {step}')


def check_plot(out):
  plot = np.asarray(Image.open(out / 'proprio_actions.png').convert('RGB')).astype(int)
  assert plot.shape == (900, 1000, 3)
  near = lambda colour: (np.abs(plot - np.array(colour)).sum(-1) < 30).sum()
  assert near(MATPLOTLIB_C0) > 200, 'no proprio/action line of the first colour'
  assert near((0, 0, 0)) > 500, 'no value-target line / axes'
  assert len(np.unique(plot.reshape(-1, 3), axis=0)) > 100  # many line colours, not a blank canvas


def test_native_aloha(tmp_path):
  source = tmp_path / 'aloha' / 'transfer_cube_scripted' / 'train'
  source.mkdir(parents=True)
  for suffix in ('.hdf5', '_cam_high.mp4', '_cam_left_wrist.mp4', '_cam_right_wrist.mp4'):
    shutil.copy(f'{SAMPLE}/{EPISODE}{suffix}', source)
  report = run(tmp_path / 'aloha', tmp_path / 'out')
  assert report['format'] == 'native' and report['episodes']['count'] == 1
  assert report['episodes']['length']['total_steps'] == 400 and report['tasks'] == {'transfer cube': 1}
  assert sorted(report['cameras']) == ['image', 'wrist_image', 'wrist_image2'] and report['flags'] == []
  assert report['value_target']['max'] == 1.0 and sum(report['value_target']['histogram']['counts']) == 400
  demo = aloha.read_demo(str(source / 'episode_0.hdf5'), 64)
  np.testing.assert_array_equal(report['statistics']['actions_min'], demo.actions.min(0))
  check_contact_sheet(tmp_path / 'out', report, demo.frames)
  check_plot(tmp_path / 'out')


def test_native_libero_flags_nan_and_constant_dimensions(tmp_path):
  path = sim_files.write_demo_file(tmp_path / 'libero' / 'KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5',
                                   {'demo_0': (9, False), 'demo_1': (7, True)}, LIBERO_CAMERAS, action_dim=7)
  with h5py.File(path, 'a') as f:
    f['data/demo_0/actions'][:, 3] = 0.25  # constant across both demos
    f['data/demo_1/actions'][:, 3] = 0.25
    states = f['data/demo_1/robot_states'][:]
    states[2, 5] = np.nan
    f['data/demo_1/robot_states'][...] = states
  report = run(tmp_path / 'libero', tmp_path / 'out', '--layout', 'libero')
  assert report['episodes']['count'] == 2 and report['tasks'] == {'turn on the stove': 2}
  flags = '\n'.join(report['flags'])
  assert 'constant actions dimensions [3]' in flags
  assert 'NaN in proprio of' in flags and 'dimensions [5]' in flags
  check_plot(tmp_path / 'out')


@pytest.mark.parametrize('version', ['v2.1', 'v3.0'])
def test_lerobot(tmp_path, version):
  root = os.path.join(FIXTURES, f'lerobot_{version}')
  report = run(root, tmp_path / 'out')
  assert report['format'] == 'lerobot' and report['flags'] == []
  assert report['episodes']['count'] == 2 and report['episodes']['length']['min'] == min(lerobot_fixture.LENGTHS)
  assert report['tasks'] == {'transfer cube': 2}
  roles = {'image': 'observation.images.top', 'wrist_image': 'observation.images.left_wrist',
           'wrist_image2': 'observation.images.right_wrist'}
  frames = {}
  for role, key in roles.items():
    path = (f'{root}/videos/chunk-000/{key}/episode_000000.mp4' if version == 'v2.1' else
            f'{root}/videos/{key}/chunk-000/file-000.mp4')
    with av.open(path) as container:
      frames[role] = np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])
  check_contact_sheet(tmp_path / 'out', report, frames)
  check_plot(tmp_path / 'out')


def test_lerobot_stream_length_mismatch_is_flagged(tmp_path):
  data = tmp_path / 'v2.1'
  shutil.copytree(os.path.join(FIXTURES, 'lerobot_v2.1'), data)
  lerobot_fixture.write_video(str(data / 'videos/chunk-000/observation.images.top/episode_000001.mp4'),
                              lerobot_fixture.frames(1, 0)[:-2], 'libx264')
  report = run(data, tmp_path / 'out')
  assert report['episodes']['count'] == 1
  assert any('episode_000001.mp4: episode 1' in f and "has 16 frames" in f for f in report['flags']), report['flags']


def test_rlds_through_the_command(tmp_path):
  source = tmp_path / 'aloha' / 'transfer_cube_scripted' / 'train'
  source.mkdir(parents=True)
  for suffix in ('.hdf5', '_cam_high.mp4', '_cam_left_wrist.mp4', '_cam_right_wrist.mp4'):
    shutil.copy(f'{SAMPLE}/{EPISODE}{suffix}', source)
  builder = aloha_builder.AlohaRlds(source_dir=str(tmp_path / 'aloha'), data_dir=str(tmp_path / 'tfds'),
                                    config='size64')
  builder.download_and_prepare()
  out = tmp_path / 'out'
  done = subprocess.run([sys.executable, '-m', 'cosmos_jax.data.inspect', str(builder.data_dir), '--out', str(out)],
                        capture_output=True, text=True, cwd=REPO, check=False,
                        env={**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'})
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'episodes: 1 readable, 0 unreadable' in done.stdout and 'no problems found' in done.stdout
  report = json.loads((out / 'report.json').read_text())
  assert report['format'] == 'rlds'
  example = tfds.data_source('aloha_rlds/size64', data_dir=str(tmp_path / 'tfds'), split='train')[0]
  steps = [example['steps'][t] for t in range(len(example['steps']))]
  frames = {role: np.stack([s['observation'][cam] for s in steps]) for cam, role in aloha.CAMERA_ROLES.items()}
  check_contact_sheet(out, report, frames)
  check_plot(out)


def test_native_robocasa(tmp_path):
  cameras = list(robocasa.LAYOUT.camera_sources)
  sim_files.write_demo_file(tmp_path / 'robocasa' / 'PnPCounterToCab.hdf5', {'demo_0': (8, True), 'demo_1': (6, False)},
                            cameras, action_dim=12, task_attr='pick the apple')
  report = run(tmp_path / 'robocasa', tmp_path / 'out', '--layout', 'robocasa')
  assert report['episodes']['count'] == 2 and report['tasks'] == {'pick the apple': 2} and report['flags'] == []
  assert sorted(report['cameras']) == sorted(robocasa.LAYOUT.cameras)
  demo = robocasa.read_demos(str(tmp_path / 'robocasa' / 'PnPCounterToCab.hdf5'), 64)[0]
  check_contact_sheet(tmp_path / 'out', report, demo.frames)
  check_plot(tmp_path / 'out')
