"""LIBERO demo and rollout readers on small files written in the official layouts (@18a2acc
cosmos_policy/datasets/libero_dataset.py:LIBERODataset reads both; the rollouts are written by
cosmos_policy/experiments/robot/libero/run_libero_eval.py:run_task)."""

import h5py
import numpy as np
import pytest

from cosmos_jax.data import datasets, libero, pipeline, sample as sample_lib
from cosmos_jax.data.episodes import EpisodeLengthError
from cosmos_jax.policy import layout as layout_lib
from tests.data import sim_files

CAMERAS = ('agentview_rgb', 'eye_in_hand_rgb')  # colour index 0 = primary, 1 = wrist
ROLLOUT_CAMERAS = ('primary_images', 'wrist_images')
SIZE = 16


@pytest.mark.parametrize('name, task', [
    ('KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it_demo.hdf5',
     'turn on the stove and put the moka pot on it'),
    ('LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket_demo.hdf5',
     'put both the alphabet soup and the tomato sauce in the basket'),
    ('pick_up_the_black_bowl_next_to_the_ramekin_and_place_it_on_the_plate_demo.hdf5',
     'pick up the black bowl next to the ramekin and place it on the plate'),  # libero_spatial: no SCENE word
    ('STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy_demo.hdf5',
     'pick up the book and place it in the back compartment of the caddy'),
])
def test_task_string_from_the_file_name(name, task):
  assert libero.task_from_filename(f'/data/libero_10/{name}') == task


def test_bad_file_names():
  with pytest.raises(ValueError, match=r"end with '_demo.hdf5'"):
    libero.task_from_filename('/d/KITCHEN_SCENE3_turn_on_the_stove.hdf5')
  with pytest.raises(ValueError, match='no task words'):
    libero.task_from_filename('/d/KITCHEN_SCENE3_demo.hdf5')


def _demo_file(root, jpeg=False):
  return sim_files.write_demo_file(
      root / 'libero_goal' / 'KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5',
      {'demo_10': (9, jpeg), 'demo_2': (7, jpeg), 'demo_0': (8, jpeg)}, CAMERAS, action_dim=7)


@pytest.mark.parametrize('jpeg', [False, True])
def test_demos_in_numeric_order_with_frames_by_role(tmp_path, jpeg):
  path = _demo_file(tmp_path, jpeg)
  demos = libero.read_demos(str(path), SIZE)
  assert [d.num_steps for d in demos] == [8, 7, 9]  # demo_0, demo_2, demo_10
  assert {d.command for d in demos} == {'turn on the stove'}
  with h5py.File(path, 'r') as f:
    np.testing.assert_array_equal(demos[2].actions, f['data/demo_10/actions'][:].astype(np.float32))
    np.testing.assert_array_equal(demos[2].proprio, f['data/demo_10/robot_states'][:].astype(np.float32))
  for role, colour in (('image', 0), ('wrist_image', 1)):
    got = demos[0].frames[role]
    assert got.shape == (8, SIZE, SIZE, 3)
    np.testing.assert_allclose(got.mean(axis=(1, 2)), sim_files.frames(8, colour)[:, 0, 0], atol=3, err_msg=role)
  lazy = libero.read_demos(str(path), SIZE, lazy=True)[1]
  assert lazy.frames is None
  np.testing.assert_array_equal(lazy.load_frames()['image'], demos[1].frames['image'])


def test_rollouts_and_dataset_through_the_pipeline(tmp_path):
  _demo_file(tmp_path / 'success_only')
  rollouts = tmp_path / 'all_episodes'
  kw = dict(action_dim=7, task='turn on the stove')
  sim_files.write_rollout_file(rollouts / 'episode_data--suite=libero_goal--task=0--ep=1--success=True.hdf5', 12,
                               ROLLOUT_CAMERAS, success=True, **kw)
  sim_files.write_rollout_file(rollouts / 'episode_data--suite=libero_goal--task=0--ep=2--success=False.hdf5', 10,
                               ROLLOUT_CAMERAS, success=False, jpeg=False, **kw)
  episode = libero.read_rollout(str(next(rollouts.glob('*ep=2*'))), SIZE)
  assert not episode.success and episode.terminal_reward == 0.0 and episode.num_steps == 10
  config = sample_lib.SampleConfig.for_layout('libero', image_size=SIZE, augment=False)
  assert config.layout.chunk_size == 16 and config.layout.gamma == 0.99 and not config.treat_demos_as_success_rollouts
  dataset = datasets.load_dataset('libero', str(tmp_path / 'success_only'), config, rollout_dir=str(rollouts))
  demos, success, failure = dataset.sections
  assert (len(demos), len(success), len(failure)) == (3, 1, 1)
  assert dataset.tasks == ('turn on the stove',)
  assert not (tmp_path / 'success_only' / 'dataset_statistics.json').exists()  # computed, never written there
  batch = next(pipeline.make_loader(dataset, 4, seed=0, process_index=0, process_count=1))
  layout = layout_lib.LAYOUTS['libero']
  assert batch['video'].shape == (4, layout.state_t, SIZE, SIZE, 3)
  assert batch['actions'].shape == (4, 16, 7) and batch['proprio'].shape == (4, 9)
  for name, index in layout.latent_indices().items():
    assert batch[name].tolist() == [index] * 4, name
  failure_item = dataset.epoch.demo_count + dataset.epoch.success_count
  value_sample = dataset.sample(failure_item, world_model=False)
  assert float(value_sample['value_function_return']) == -1.0
  assert value_sample['video'][list(layout.current_image_slots)].any()


def test_bad_libero_data(tmp_path):
  path = _demo_file(tmp_path)
  with h5py.File(path, 'a') as f:
    del f['data/demo_2/obs/eye_in_hand_rgb']
  with pytest.raises(ValueError, match=rf"{path}: missing key 'eye_in_hand_rgb' .*'eye_in_hand_rgb_jpeg'.*"
                                       r"'/data/demo_2/obs'"):
    libero.read_demos(str(path), SIZE)
  path = _demo_file(tmp_path)
  with h5py.File(path, 'a') as f:
    actions = f['data/demo_0/actions'][:]
    del f['data/demo_0/actions']
    f['data/demo_0/actions'] = actions[:-1]
  with pytest.raises(ValueError, match=r"'/data/demo_0/robot_states' has 8 steps but '/data/demo_0/actions' has 7"):
    libero.read_demos(str(path), SIZE)
  path = _demo_file(tmp_path)
  with h5py.File(path, 'a') as f:
    f['data'].create_group('mask')
  with pytest.raises(ValueError, match=r"unexpected groups \['mask'\]"):
    libero.read_demos(str(path), SIZE)

  short = sim_files.write_rollout_file(tmp_path / 'r' / 'short.hdf5', 12, ROLLOUT_CAMERAS, action_dim=7, task='x',
                                       success=True, frame_steps=11)
  with pytest.raises(EpisodeLengthError, match=r'primary_images_jpeg has 11 frames but .actions. has 12'):
    libero.read_rollout(str(short))
  with h5py.File(short, 'a') as f:
    del f.attrs['task_description']
  with pytest.raises(ValueError, match=rf"{short}: missing attribute 'task_description'"):
    libero.read_rollout(str(short))
  with pytest.raises(FileNotFoundError, match='data directory .*missing does not exist'):
    datasets.load_dataset('libero', str(tmp_path / 'missing'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='no HDF5 demo files under'):
    datasets.load_dataset('libero', str(tmp_path / 'empty'))
