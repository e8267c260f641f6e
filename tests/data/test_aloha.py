"""ALOHA reader + sample construction against the official ALOHADataset output (tests/golden/aloha_episode_fixture).

The fixture ran the official dataset with final_image_size 56 on 64x64 MP4s (the 224/256 ratio), chunk 50,
gamma 0.998, treat_demos_as_success_rollouts=True; samples 1-3 without augmentation, sample 4 with it.
"""

import json

import numpy as np
import pytest

from cosmos_jax.data import aloha, datasets, decode, mixture, sample as sample_lib, transforms
from tests import parity

FIXTURE = parity.golden_dir() / 'aloha_episode_fixture'
CONFIG = json.loads((FIXTURE / 'config.json').read_text()) if FIXTURE.exists() else {}
ARRAYS = np.load(FIXTURE / 'io.npz') if FIXTURE.exists() else {}
SIZE = 56


@pytest.fixture(scope='module')
def dataset():
  config = sample_lib.SampleConfig(image_size=SIZE, augment=False)
  return datasets.load_dataset('aloha', str(FIXTURE), config)


def test_episode_order_tasks_and_epoch(dataset):
  demos = dataset.sections[0]
  for i, info in CONFIG['episodes'].items():
    episode = demos[int(i)].episode
    assert episode.path.endswith(info['file']) and episode.command == info['command']
    assert episode.num_steps == info['num_steps']
  epoch = CONFIG['epoch']
  assert (dataset.epoch.demo_count, dataset.epoch.success_count, dataset.epoch.failure_count, len(dataset)) == (
      epoch['adjusted_demo_count'], epoch['adjusted_success_rollout_count'], epoch['adjusted_failure_rollout_count'],
      epoch['epoch_length'])


def test_mp4_decode_is_bit_exact_with_official_cv2():
  """Exact: H.264 decoding is bit-exact by the standard, and the YUV -> BGR conversion of OpenCV's FFmpeg is
  integer SIMD code whose SSSE3, AVX2 and AVX-512 versions give the same bits (checked by forcing each with
  av_force_cpu_flags). Only FFmpeg's plain-C fallback differs (by up to 3 levels), and it runs only on CPUs without
  SSSE3, where jaxlib (built with AVX) does not run at all."""
  for i, info in CONFIG['episodes'].items():
    folder = (FIXTURE / info['file']).parent
    steps = ARRAYS[f'episode{i}__mp4_decoded_steps']
    for cam in aloha.CAMERAS:
      frames = decode.read_mp4(folder / f'episode_0_{cam}.mp4')
      np.testing.assert_array_equal(frames[steps], ARRAYS[f'episode{i}__mp4_decoded_{cam}'], err_msg=cam)


def test_normalised_episode_arrays_and_returns(dataset):
  for i in CONFIG['episodes']:
    prepared = dataset.sections[0][int(i)]
    np.testing.assert_array_equal(prepared.actions, ARRAYS[f'episode{i}__actions_normalized'])
    np.testing.assert_array_equal(prepared.proprio, ARRAYS[f'episode{i}__proprio_normalized'])
    np.testing.assert_array_equal(prepared.returns, ARRAYS[f'episode{i}__returns'])


def _coin(seeds: str) -> bool:
  """The official coin: numpy.random.seed(s); np.random.rand() < 0.5 (world model) for rollout items."""
  seed = int(seeds.split('numpy.random.seed(')[1].split(')')[0])
  return bool(np.random.RandomState(seed).rand() < 0.5)


def _official_aug_params(seeds: str, size: int) -> transforms.AugmentParams:
  """The official torch draws (RandomResizedCrop.get_params, rotation, jitter) under torch.manual_seed(s)."""
  import math  # pylint: disable=g-import-not-at-top

  import torch  # pylint: disable=g-import-not-at-top
  seed = int(seeds.split('torch.manual_seed(')[1].split(')')[0])
  gen = torch.Generator().manual_seed(seed)
  target_area = size * size * torch.empty(1).uniform_(0.9, 0.9, generator=gen).item()
  aspect = math.exp(torch.empty(1).uniform_(0.0, 0.0, generator=gen).item())
  side = int(round(math.sqrt(target_area * aspect)))
  top = torch.randint(0, size - side + 1, size=(1,), generator=gen).item()
  left = torch.randint(0, size - side + 1, size=(1,), generator=gen).item()
  draws = [torch.empty(1).uniform_(lo, hi, generator=gen).item()
           for lo, hi in ((-5, 5), (0.7, 1.3), (0.6, 1.4), (0.5, 1.5), (-0.05, 0.05))]
  return transforms.AugmentParams(top, left, side, *draws)


@pytest.mark.parametrize('name', ['demo_ep0_t10', 'demo_ep1_near_end', 'rollout_copy_of_demo', 'demo_ep0_t10_aug'])
def test_sample_matches_official(dataset, name):
  info = CONFIG['samples'][name]
  kind, _, episode, step = dataset.locate(info['index'])
  assert (episode, step) == (info['episode'], info['step'])
  params = _official_aug_params(info['seeds'], SIZE) if info['augmentation'] else None
  if params is not None:
    dataset = dataset.with_config(augment=True)
  got = dataset.sample(info['index'], world_model=_coin(info['seeds']), augment_params=params)
  assert int(got['future_step']) == info['future_step']
  np.testing.assert_array_equal(sample_lib.to_official_video(got['video']), ARRAYS[f'{name}__video'],
                                err_msg=f'{name}: video')
  for key in ('actions', 'proprio', 'future_proprio', 'next_action_chunk'):
    np.testing.assert_array_equal(got[key], ARRAYS[f'{name}__{key}'].astype(np.float32), err_msg=f'{name}: {key}')
  for key in ('value_function_return', 'next_value_function_return'):
    np.testing.assert_array_equal(got[key], ARRAYS[f'{name}__{key}'], err_msg=f'{name}: {key}')
  for key in ('rollout_data_mask', 'rollout_data_success_mask', 'world_model_sample_mask',
              'value_function_sample_mask', 'global_rollout_idx') + tuple(
                  k for k in sample_lib.INDEX_NAMES if f'{name}__{k}' in ARRAYS):
    assert int(got[key]) == int(ARRAYS[f'{name}__{key}']), f'{name}: {key} {int(got[key])} != official'
  assert dataset.tasks[int(got['text_index'])] == CONFIG['samples'][name]['fields']['command']
  assert int(got['index']) == int(ARRAYS[f'{name}__key'])


def test_value_returns_examples_from_spec():
  np.testing.assert_allclose(mixture.value_returns(5, 1.0, 0.998), [0.98405, 0.98802, 0.99201, 0.99600, 1.0],
                             atol=1e-5)
  np.testing.assert_array_equal(mixture.value_returns(4, 0.0, 0.998), -np.ones(4, np.float32))
  # A success score > 0 cancels out (to float32 rounding, as in the official arithmetic).
  np.testing.assert_allclose(mixture.value_returns(7, 0.3, 0.998), mixture.value_returns(7, 1.0, 0.998), rtol=1e-6)


def test_epoch_structure_balancing():
  # Planning model (p_d 0.1, p_s 0.5). Step 1: S=3000 >= F*1 so F' = 3000. Step 2: D=100 < int(6000*0.1/0.9)=666,
  # so demos are upsampled to 666 and the rollouts stay.
  e = mixture.EpochStructure.balance(100, 3000, 1000, 0.1, 0.5)
  assert (e.demo_count, e.success_count, e.failure_count) == (666, 3000, 3000)
  # D=1000 >= 666: demos stay, rollouts become int(1000*0.9/0.1)=9000 split by p_s.
  e = mixture.EpochStructure.balance(1000, 3000, 1000, 0.1, 0.5)
  assert (e.demo_count, e.success_count, e.failure_count) == (1000, 4500, 4500)
  # ALOHA main: demos copied as successes, no failures -> 50/50.
  e = mixture.EpochStructure.balance(1000, 1000, 0, 0.5, 0.5)
  assert (e.demo_count, e.success_count, e.failure_count) == (1000, 1000, 0)
  assert mixture.EpochStructure.balance(10, 0, 0, 0.5, 0.5).length == 10
  kind, step = e.locate(1500, 1000, 1000, 0)
  assert (kind, step) == (mixture.SampleType.SUCCESS_ROLLOUT, 500)


def test_episode_start_repeats_add_policy_samples_of_the_first_steps(dataset):
  demo_steps = len(dataset.step_tables[0])
  config = sample_lib.SampleConfig(image_size=SIZE, augment=False, episode_start_steps=3, episode_start_repeats=5)
  repeated = sample_lib.PolicyDataset([p.episode for p in dataset.sections[0]], dataset.stats, config)
  table = repeated.step_tables[0]
  num_demos = len(dataset.sections[0])
  assert len(table) == demo_steps + 4 * 3 * num_demos
  steps, counts = np.unique(table[:, 1], return_counts=True)
  original_steps, original_counts = np.unique(dataset.step_tables[0][:, 1], return_counts=True)
  np.testing.assert_array_equal(steps, original_steps)
  np.testing.assert_array_equal(counts, np.where(steps < 3, 5, 1) * original_counts)
  assert repeated.epoch.demo_count >= len(table)  # every row is reachable in the epoch
  with pytest.raises(ValueError, match='episode_start_repeats >= 1'):
    sample_lib.SampleConfig(episode_start_repeats=0)
