"""RoboCasa demo and rollout readers on small files written in the official layouts (@18a2acc
cosmos_policy/datasets/robocasa_dataset.py:RoboCasaDataset reads both; the rollouts are written by
cosmos_policy/experiments/robot/robocasa/run_robocasa_eval.py:run_task)."""

import h5py
import numpy as np
import pytest

from cosmos_jax.data import datasets, pipeline, robocasa, sample as sample_lib
from cosmos_jax.data.episodes import EpisodeLengthError
from cosmos_jax.policy import layout as layout_lib
from tests.data import sim_files

# Colour index 0 = left agentview (primary), 1 = right agentview (secondary), 2 = eye in hand (wrist).
CAMERAS = ('robot0_agentview_left_rgb', 'robot0_agentview_right_rgb', 'robot0_eye_in_hand_rgb')
ROLLOUT_CAMERAS = ('primary_images', 'secondary_images', 'wrist_images')
ROLES = (('image', 0), ('image2', 1), ('wrist_image', 2))
SIZE = 16
TASK = 'pick the apple from the counter and place it in the sink'


def _demo_file(root, jpeg=False, name='PnPCounterToSink.hdf5'):
  return sim_files.write_demo_file(root / name, {'demo_1': (9, jpeg), 'demo_0': (8, jpeg)}, CAMERAS,
                                   action_dim=12, task_attr=TASK)


@pytest.mark.parametrize('jpeg', [False, True])
def test_demos_cameras_first_seven_action_dims_and_task_attr(tmp_path, jpeg):
  path = _demo_file(tmp_path, jpeg)
  demos = robocasa.read_demos(str(path), SIZE)
  assert [d.num_steps for d in demos] == [8, 9] and {d.command for d in demos} == {TASK}
  with h5py.File(path, 'r') as f:
    np.testing.assert_array_equal(demos[1].actions, f['data/demo_1/actions'][:, :7].astype(np.float32))
    np.testing.assert_array_equal(demos[1].proprio, f['data/demo_1/robot_states'][:].astype(np.float32))
  for role, colour in ROLES:
    got = demos[0].frames[role]
    assert got.shape == (8, SIZE, SIZE, 3)
    np.testing.assert_allclose(got.mean(axis=(1, 2)), sim_files.frames(8, colour)[:, 0, 0], atol=3, err_msg=role)


def test_rollouts_and_dataset_through_the_pipeline(tmp_path):
  _demo_file(tmp_path / 'success_only')
  rollouts = tmp_path / 'all_episodes'
  kw = dict(action_dim=12, task=TASK)
  sim_files.write_rollout_file(rollouts / 'ep=1--success=True.hdf5', 12, ROLLOUT_CAMERAS, success=True, **kw)
  sim_files.write_rollout_file(rollouts / 'ep=2--success=False.hdf5', 10, ROLLOUT_CAMERAS, success=False,
                               jpeg=False, **kw)
  episode = robocasa.read_rollout(str(rollouts / 'ep=1--success=True.hdf5'), SIZE)
  assert episode.success and episode.terminal_reward == 1.0 and episode.actions.shape == (12, 7)
  for role, colour in ROLES:
    np.testing.assert_allclose(episode.load_frames()[role].mean(axis=(1, 2)), sim_files.frames(12, colour)[:, 0, 0],
                               atol=3, err_msg=role)
  config = sample_lib.SampleConfig.for_layout('robocasa', image_size=SIZE, augment=True)
  dataset = datasets.load_dataset('robocasa', str(tmp_path / 'success_only'), config, rollout_dir=str(rollouts))
  assert [len(s) for s in dataset.sections] == [2, 1, 1]
  batch = next(pipeline.make_loader(dataset, 4, seed=0, process_index=0, process_count=1))
  layout = layout_lib.LAYOUTS['robocasa']
  assert batch['video'].shape == (4, 11, SIZE, SIZE, 3)
  assert batch['actions'].shape == (4, 32, 7) and batch['proprio'].shape == (4, 9)
  for name, index in layout.latent_indices().items():
    assert batch[name].tolist() == [index] * 4, name


def test_bad_robocasa_data(tmp_path):
  path = _demo_file(tmp_path)
  with h5py.File(path, 'a') as f:
    del f['data/demo_0'].attrs['task_description']
  with pytest.raises(ValueError, match=rf"{path}: missing attribute 'task_description'"):
    robocasa.read_demos(str(path), SIZE)
  path = _demo_file(tmp_path)
  with h5py.File(path, 'a') as f:
    del f['data/demo_1/actions']
    f['data/demo_1/actions'] = np.zeros((9, 5))
  with pytest.raises(ValueError, match=r"'/data/demo_1/actions' must be \(T, >= 7\).*got shape \(9, 5\)"):
    robocasa.read_demos(str(path), SIZE)
  path = _demo_file(tmp_path)
  with h5py.File(path, 'a') as f:
    images = f['data/demo_1/obs/robot0_agentview_right_rgb'][:]
    del f['data/demo_1/obs/robot0_agentview_right_rgb']
    f['data/demo_1/obs/robot0_agentview_right_rgb'] = images[:-2]
  with pytest.raises(EpisodeLengthError, match=r'robot0_agentview_right_rgb has 7 frames but .*actions. has 9'):
    robocasa.read_demos(str(path), SIZE)

  rollout = sim_files.write_rollout_file(tmp_path / 'r' / 'a.hdf5', 6, ROLLOUT_CAMERAS[:2], action_dim=12, task=TASK,
                                         success=True)
  with pytest.raises(ValueError, match=r"missing key 'wrist_images' \(raw frames\) or 'wrist_images_jpeg'"):
    robocasa.read_rollout(str(rollout))
