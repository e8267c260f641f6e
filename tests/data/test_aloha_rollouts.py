"""ALOHA rollout reader: JPEG-in-HDF5 in the official writer's format (@18a2acc
cosmos_policy/experiments/robot/aloha/run_aloha_eval.py:save_rollout_episode_hdf5) (vlen uint8 datasets of
JPEG bytes at top level, attrs task_description / success / success_score), success bookkeeping, bad data."""

import io

import h5py
import numpy as np
import pytest
from PIL import Image

from cosmos_jax.data import aloha, datasets, mixture, sample as sample_lib
from cosmos_jax.data.episodes import EpisodeLengthError
from tests import parity

FIXTURE = parity.golden_dir() / 'aloha_episode_fixture'
SIZE = 16
JPEG = h5py.vlen_dtype(np.dtype('uint8'))
CAMERA_KEYS = {'image': 'primary_images_jpeg', 'wrist_image': 'wrist_left_images_jpeg',
               'wrist_image2': 'wrist_right_images_jpeg'}


def _frames(num_steps, camera):
  """Solid colours that differ per step and camera, so a swapped camera or step is visible after JPEG."""
  t = np.arange(num_steps)[:, None]
  colours = np.concatenate([(t * 9 + 40 * camera) % 256, (t * 5 + 60) % 256, np.full_like(t, 30 * camera + 20)], 1)
  return np.broadcast_to(colours[:, None, None, :].astype(np.uint8), (num_steps, SIZE, SIZE, 3)).copy()


def _jpeg(frame):
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format='JPEG', quality=95)
  return np.frombuffer(buffer.getvalue(), np.uint8)


def _jpeg_dataset(frames):
  """An object array of byte arrays: h5py would turn equal-length JPEGs in a plain list into a 2-D array."""
  data = np.empty(len(frames), object)
  data[:] = [_jpeg(x) for x in frames]
  return data


def write_rollout(path, num_steps=12, *, task='fold shirt', success=True, success_score=None, frame_steps=None,
                  cameras=CAMERA_KEYS):
  """One rollout as the official data-collection code writes it (images -> `<key>_jpeg` vlen uint8, scalars ->
  attrs, then attrs['task_description'])."""
  rng = np.random.default_rng(num_steps)
  frame_steps = num_steps if frame_steps is None else frame_steps
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, 'w') as f:
    f['action'] = rng.uniform(-1, 1, (num_steps, 14)).astype(np.float32)
    f['observations/qpos'] = rng.uniform(-1, 1, (num_steps, 14)).astype(np.float32)
    for k, key in enumerate(cameras.values()):
      f.create_dataset(key, data=_jpeg_dataset(_frames(frame_steps, k)), dtype=JPEG)
    f.attrs['success'] = success
    if success_score is not None:
      f.attrs['success_score'] = success_score
    f.attrs['task_description'] = task
  return path


def test_jpeg_rollout_frames_proprio_actions_and_task(tmp_path):
  path = write_rollout(tmp_path / 'r' / 'episode_0.hdf5', task='put candy in bag')
  episode = aloha.read_rollout(str(path), SIZE)
  assert episode.frames is None and episode.command == 'put candy in bag' and episode.num_steps == 12
  frames = episode.load_frames()
  with h5py.File(path, 'r') as f:
    np.testing.assert_array_equal(episode.actions, f['action'][:])
    np.testing.assert_array_equal(episode.proprio, f['observations/qpos'][:])
    for k, (role, key) in enumerate(CAMERA_KEYS.items()):
      assert frames[role].shape == (12, SIZE, SIZE, 3) and frames[role].dtype == np.uint8
      official = np.stack([np.array(Image.open(io.BytesIO(x.tobytes()))) for x in f[key]])  # official decode
      np.testing.assert_array_equal(frames[role], official, err_msg=role)
      np.testing.assert_allclose(frames[role].mean(axis=(1, 2)), _frames(12, k)[:, 0, 0], atol=3, err_msg=role)
  resized = aloha.read_rollout(str(path), 24).load_frames()
  assert resized['image'].shape == (12, 24, 24, 3)


def test_success_attributes_set_the_value_targets(tmp_path):
  scored = aloha.read_rollout(str(write_rollout(tmp_path / 'a.hdf5', success=True, success_score=0.25)))
  assert scored.success and scored.terminal_reward == 0.25
  plain = aloha.read_rollout(str(write_rollout(tmp_path / 'b.hdf5', success=True)))
  assert plain.success and plain.terminal_reward == 1.0
  failed = aloha.read_rollout(str(write_rollout(tmp_path / 'c.hdf5', success=False)))
  assert not failed.success and failed.terminal_reward == 0.0
  np.testing.assert_array_equal(mixture.value_returns(failed.num_steps, failed.terminal_reward, 0.998),
                                -np.ones(12, np.float32))


def test_task_falls_back_to_the_folder_name(tmp_path):
  path = write_rollout(tmp_path / 'candies_in_bowl_rollouts' / 'day1' / 'episode_3.hdf5', task='')
  assert aloha.read_rollout(str(path)).command == 'put candies in bowl'


def test_rollouts_join_the_mixture_as_success_and_failure_sections(tmp_path):
  rollouts = tmp_path / 'rollouts'
  write_rollout(rollouts / 'ok.hdf5', num_steps=10, success=True)
  write_rollout(rollouts / 'bad.hdf5', num_steps=14, success=False)
  config = sample_lib.SampleConfig(image_size=SIZE, augment=False, demonstration_sampling_prob=0.1,
                                   treat_demos_as_success_rollouts=False)
  dataset = datasets.load_dataset('aloha', str(FIXTURE), config, rollout_dir=str(rollouts))
  demos, success, failure = dataset.sections
  assert [p.episode.path for p in success] == [str(rollouts / 'ok.hdf5')]
  assert [p.episode.path for p in failure] == [str(rollouts / 'bad.hdf5')]
  epoch = dataset.epoch
  # Success vs failure: 10 < int(14 * 0.5 / 0.5), so (14, 14); then D demo steps >= int(28 * 0.1 / 0.9) keep their
  # count and the rollouts are rescaled to int(D * 0.9 / 0.1), half success, half failure.
  demo_steps = sum(p.episode.num_steps for p in demos)
  rollout_items = int(demo_steps * (1 - 0.1) / 0.1)
  assert (epoch.demo_count, epoch.success_count, epoch.failure_count) == (
      demo_steps, int(rollout_items * 0.5), int(rollout_items * 0.5))
  failure_item = epoch.demo_count + epoch.success_count + 3
  got = dataset.sample(failure_item, world_model=False)
  assert int(got['rollout_data_mask']) == 1 and int(got['value_function_sample_mask']) == 1
  assert int(got['rollout_data_success_mask']) == 0 and float(got['value_function_return']) == -1.0
  assert got['video'].shape == (11, SIZE, SIZE, 3) and got['video'][[2, 3, 4]].any()


def test_bad_rollouts(tmp_path):
  short = write_rollout(tmp_path / 'bad' / 'short.hdf5', num_steps=12, frame_steps=11)
  with pytest.raises(EpisodeLengthError, match=rf'{short}: primary_images_jpeg has 11 frames but .action. has 12'):
    aloha.read_rollout(str(short))
  config = sample_lib.SampleConfig(image_size=SIZE, augment=False)
  with pytest.raises(EpisodeLengthError, match='has 11 frames'):
    datasets.load_dataset('aloha', str(FIXTURE), config, rollout_dir=str(tmp_path / 'bad'))
  skipped = datasets.load_dataset('aloha', str(FIXTURE), config, rollout_dir=str(tmp_path / 'bad'), skip_mismatched_rollouts=True)
  assert all(p.episode.path != str(short) for s in skipped.sections for p in s)  # the official skip

  no_action = write_rollout(tmp_path / 'no_action.hdf5')
  with h5py.File(no_action, 'a') as f:
    del f['action']
  with pytest.raises(ValueError, match=rf"{no_action}: missing key 'action'"):
    aloha.read_rollout(str(no_action))

  one_wrist = write_rollout(tmp_path / 'one_wrist.hdf5',
                            cameras={'image': 'primary_images_jpeg', 'wrist_image': 'wrist_images_jpeg'})
  with pytest.raises(ValueError, match=rf'{one_wrist}: the ALOHA layout needs both wrist cameras'):
    aloha.read_rollout(str(one_wrist))

  corrupt = write_rollout(tmp_path / 'corrupt.hdf5')
  with h5py.File(corrupt, 'a') as f:
    data = f['wrist_right_images_jpeg'][:]
    data[4] = np.frombuffer(b'not a jpeg at all', np.uint8)
    del f['wrist_right_images_jpeg']
    f.create_dataset('wrist_right_images_jpeg', data=data, dtype=JPEG)
  episode = aloha.read_rollout(str(corrupt))  # lazy: the frames decode on first use
  with pytest.raises(ValueError, match=rf'{corrupt}: wrist_right_images_jpeg\[4\] is not a decodable JPEG'):
    episode.load_frames()
