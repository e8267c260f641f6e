"""Evaluation episodes as ALOHA rollouts: written, read back by the training reader, fed to the planning dataset."""

import h5py
import numpy as np
import pytest

from cosmos_jax.data import aloha, bundled, datasets, decode, mixture
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.eval import rollout
from tests.eval import fake_episodes


@pytest.mark.parametrize('success', [True, False])
def test_rollout_round_trip(tmp_path, success):
  episode = fake_episodes.episode(10, success)
  assert episode.success is success
  path = rollout.save_rollout(str(tmp_path / 'rollouts' / 'episode_0.hdf5'), episode, policy_name='p', control_hz=50)
  read = aloha.read_rollout(path, 32, lazy=False)
  assert read.command == 'transfer cube' and read.success is success
  assert read.terminal_reward == (1.0 if success else 0.0)
  np.testing.assert_array_equal(read.actions, episode.actions.astype(np.float32))
  np.testing.assert_array_equal(read.proprio, episode.qpos.astype(np.float32))
  for cam, role in aloha.CAMERA_ROLES.items():  # stored as JPEG (quality 95) of each frame, decoded as stored
    expected = np.stack([decode.decode_jpeg(decode.encode_jpeg(frame)) for frame in episode.frames[cam]])
    np.testing.assert_array_equal(read.frames[role], expected, err_msg=cam)
  with h5py.File(path, 'r') as f:
    assert f.attrs['sim'] and f.attrs['success_score'] == float(success) and f.attrs['seed'] == 5
    np.testing.assert_array_equal(f['value_predictions'][:], episode.values.astype(np.float32))
    relative = f['relative_action'][:]
  actions = episode.actions.astype(np.float32)
  np.testing.assert_array_equal(relative[:-1], actions[1:] - actions[:-1])
  np.testing.assert_array_equal(relative[-1], relative[-2])


def test_rollouts_feed_the_planning_dataset(tmp_path):
  """Evaluation rollouts are planning-model data: the dataset sorts them into success and failure sections."""
  rollout_dir = tmp_path / 'rollouts'
  rollout.save_rollout(str(rollout_dir / 'episode_0.hdf5'), fake_episodes.episode(12, True))
  rollout.save_rollout(str(rollout_dir / 'episode_1.hdf5'), fake_episodes.episode(12, False))
  config = sample_lib.SampleConfig(image_size=32)
  sample_dir = str(bundled.sample_dir('aloha'))
  with_rollouts = datasets.load_dataset('aloha', sample_dir, config, rollout_dir=str(rollout_dir), lazy=True)
  without = datasets.load_dataset('aloha', sample_dir, config, lazy=True)
  assert len(with_rollouts) > len(without)
  kinds = {with_rollouts.locate(i)[0] for i in range(len(with_rollouts))}
  assert mixture.SampleType.FAILURE_ROLLOUT in kinds and mixture.SampleType.SUCCESS_ROLLOUT in kinds
  failure = next(i for i in range(len(with_rollouts))
                 if with_rollouts.locate(i)[0] == mixture.SampleType.FAILURE_ROLLOUT)
  item = with_rollouts.sample(failure, rng=np.random.default_rng(0), world_model=False)
  assert item['rollout_data_mask'] == 1 and item['rollout_data_success_mask'] == 0


def test_empty_rollout_is_refused(tmp_path):
  episode = fake_episodes.episode(4, False)
  empty = type(episode)(**{**episode.__dict__, 'actions': np.zeros((0, 14))})
  with pytest.raises(ValueError, match='empty rollout'):
    rollout.save_rollout(str(tmp_path / 'e.hdf5'), empty)
