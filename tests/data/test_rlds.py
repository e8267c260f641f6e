"""RLDS builder: the bundled ALOHA sample (1 episode) built into a tmp TFDS dir, read back with tfds, and turned
back into the same training samples as the HDF5/MP4 reader gives."""

import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cosmos_jax.data import aloha, bundled, datasets, sample as sample_lib
from cosmos_jax.data.rlds import aloha_builder, reader

SAMPLE = bundled.sample_dir('aloha')

SIZE = 64
EPISODE = 'transfer_cube_scripted/train/episode_1'


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('rlds')
  source = root / 'aloha'
  (source / 'transfer_cube_scripted' / 'train').mkdir(parents=True)
  for suffix in ('.hdf5', '_cam_high.mp4', '_cam_left_wrist.mp4', '_cam_right_wrist.mp4'):
    shutil.copy(f'{SAMPLE}/{EPISODE}{suffix}', source / f'{EPISODE}{suffix}')
  builder = aloha_builder.AlohaRlds(source_dir=str(source), data_dir=str(root / 'tfds'), config='size64')
  builder.download_and_prepare()
  return source, root / 'tfds', builder.data_dir


def test_built_dataset_reads_back_with_tfds(built):
  source, tfds_dir, _ = built
  split = tfds.data_source('aloha_rlds/size64', data_dir=str(tfds_dir), split='train')
  assert len(split) == 1
  example = split[0]
  steps = [example['steps'][t] for t in range(len(example['steps']))]
  demo = aloha.read_demo(str(source / f'{EPISODE}.hdf5'), SIZE)
  assert len(steps) == demo.num_steps == 400
  np.testing.assert_array_equal(np.stack([s['action'] for s in steps]), demo.actions)
  np.testing.assert_array_equal(np.stack([s['observation']['state'] for s in steps]), demo.proprio)
  for cam, role in aloha.CAMERA_ROLES.items():
    np.testing.assert_array_equal(np.stack([s['observation'][cam] for s in steps]), demo.frames[role], err_msg=cam)
  assert [s['is_first'] for s in steps[:2]] == [True, False] and steps[-1]['is_last'] and steps[-1]['is_terminal']
  assert [float(s['reward']) for s in steps[-2:]] == [0.0, 1.0]
  assert {s['language_instruction'] for s in steps} == {b'transfer cube'}  # tfds returns Text as bytes
  meta = example['episode_metadata']
  assert meta['file_path'] == f'{EPISODE}.hdf5'.encode() and meta['success'] and meta['success_score'] == 1.0


def test_rlds_episodes_give_the_same_training_samples(built):
  source, _, builder_dir = built
  config = sample_lib.SampleConfig(image_size=SIZE, augment=True)
  shutil.copy(f'{SAMPLE}/dataset_statistics.json', source / 'dataset_statistics.json')
  from_hdf5 = datasets.load_dataset('aloha', str(source), config)
  from_rlds = reader.load_policy_dataset(builder_dir, config,
                                         stats_path=str(source / 'dataset_statistics.json'))
  assert len(from_rlds) == len(from_hdf5) == 800 and from_rlds.tasks == from_hdf5.tasks
  for index in (0, 37, 399, 400, 799):
    want = from_hdf5.sample(index, np.random.default_rng(index))
    got = from_rlds.sample(index, np.random.default_rng(index))
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=f'{index}: {key}')


def test_bad_rlds_inputs(built, tmp_path):
  _, _, builder_dir = built
  with pytest.raises(ValueError, match=r"no split 'rollouts'; splits are \['train'\]"):
    reader.load_policy_dataset(builder_dir, rollout_split='rollouts')
  with pytest.raises(ValueError, match=r"has no 'observation/wrist_cam'"):
    reader.load_policy_dataset(builder_dir, features={'cameras': {
        'image': 'observation/wrist_cam', 'wrist_image': 'observation/cam_left_wrist',
        'wrist_image2': 'observation/cam_right_wrist'}})
  with pytest.raises(ValueError, match=r"names no step key for camera roles \['wrist_image2'\]"):
    reader.load_policy_dataset(builder_dir, features={'cameras': {'image': 'observation/cam_high',
                                                                  'wrist_image': 'observation/cam_left_wrist'}})
  with pytest.raises(ValueError, match='pass source_dir='):
    aloha_builder.AlohaRlds(data_dir=str(tmp_path), config='size64').download_and_prepare()
