"""Bad data gives errors that name the file and the key (must-show 2 of the data issue)."""

import json
import shutil

import h5py
import numpy as np
import pytest

from cosmos_jax.data import aloha, datasets, sample as sample_lib
from tests import parity

FIXTURE = parity.golden_dir() / 'aloha_episode_fixture'
TASK = 'fold_shirt_synthetic'


@pytest.fixture
def data_dir(tmp_path):
  shutil.copytree(FIXTURE / TASK, tmp_path / TASK)
  return tmp_path


def _episode(data_dir):
  return data_dir / TASK / 'train' / 'episode_0.hdf5'


def _config():
  return sample_lib.SampleConfig(image_size=56, augment=False)


def _rewrite(path, key, value):
  with h5py.File(path, 'a') as f:
    del f[key]
    if value is not None:
      f[key] = value


def test_missing_key_names_file_and_key(data_dir):
  path = _episode(data_dir)
  _rewrite(path, 'action', None)
  with pytest.raises(ValueError, match=rf"{path}.*missing key 'action'"):
    datasets.load_dataset('aloha', str(data_dir), _config())
  shutil.copy(FIXTURE / TASK / 'train' / 'episode_0.hdf5', path)
  _rewrite(path, 'observations/video_paths/cam_left_wrist', None)
  with pytest.raises(ValueError, match=rf"{path}.*missing key 'cam_left_wrist'.*video_paths"):
    aloha.read_demo(str(path), 56)


def test_qpos_action_length_mismatch(data_dir):
  path = _episode(data_dir)
  with h5py.File(path, 'r') as f:
    qpos = f['observations/qpos'][:]
  _rewrite(path, 'observations/qpos', qpos[:-3])
  with pytest.raises(ValueError, match=rf"{path}.*'observations/qpos' has 72 steps but 'action' has 75"):
    aloha.read_demo(str(path), 56)


def test_frame_count_mismatch(data_dir):
  path = _episode(data_dir)
  with h5py.File(path, 'r') as f:
    qpos, action = f['observations/qpos'][:], f['action'][:]
  _rewrite(path, 'observations/qpos', np.concatenate([qpos, qpos[:2]]))
  _rewrite(path, 'action', np.concatenate([action, action[:2]]))
  with pytest.raises(ValueError, match=r'episode_0_cam_\w+\.mp4 has 75 frames but .action. has 77 steps'):
    aloha.read_demo(str(path), 56)


def test_unreadable_mp4_names_the_file(data_dir):
  video = data_dir / TASK / 'train' / 'episode_0_cam_right_wrist.mp4'
  video.write_bytes(b'this is not an mp4' * 10)
  with pytest.raises(ValueError, match=rf'{video}'):
    aloha.read_demo(str(_episode(data_dir)), 56)
  video.unlink()
  with pytest.raises(FileNotFoundError, match=rf'cam_right_wrist.*{video}'):
    aloha.read_demo(str(_episode(data_dir)), 56)


def test_empty_episode(data_dir):
  path = _episode(data_dir)
  _rewrite(path, 'observations/qpos', np.zeros((0, 14), np.float32))
  _rewrite(path, 'action', np.zeros((0, 14), np.float32))
  with pytest.raises(ValueError, match=rf"{path}: empty episode \('action' has 0 steps\)"):
    aloha.read_demo(str(path), 56, lazy=True)


def test_constant_statistic_dimension(data_dir):
  stats = json.loads((FIXTURE / 'dataset_statistics.json').read_text())
  stats['actions_max'][3] = stats['actions_min'][3]
  (data_dir / 'dataset_statistics.json').write_text(json.dumps(stats))
  with pytest.raises(ValueError, match=r'dataset_statistics.json: actions statistics have max <= min in dimension 3'):
    datasets.load_dataset('aloha', str(data_dir), _config())


def test_unknown_task_folder(tmp_path):
  shutil.copytree(FIXTURE / TASK, tmp_path / 'wash_dishes')
  with pytest.raises(ValueError, match=r"cannot derive the task from folder name 'wash_dishes'"):
    datasets.load_dataset('aloha', str(tmp_path), _config())


def test_no_train_episodes(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"no HDF5 demo files with a 'train' path component"):
    datasets.load_dataset('aloha', str(tmp_path), _config())
