"""Tests for cosmos_jax/data/stats.py against the official statistics of the ALOHA episode fixture."""

import json

import h5py
import numpy as np
import pytest

from cosmos_jax.data import stats as stats_lib
from tests import parity

FIXTURE = parity.golden_dir() / 'aloha_episode_fixture'
EPISODE_FILES = ('fold_shirt_synthetic/train/episode_0.hdf5', 'put_candy_in_bag_synthetic/train/episode_0.hdf5')


def _raw_episodes():
  for name in EPISODE_FILES:
    with h5py.File(FIXTURE / name, 'r') as f:
      yield {'actions': f['action'][:], 'proprio': f['observations/qpos'][:]}


def test_compute_statistics_matches_official_file():
  official = stats_lib.load_statistics(FIXTURE / 'dataset_statistics.json')
  ours = stats_lib.compute_statistics(_raw_episodes())
  assert sorted(ours) == sorted(official)
  for name in official:
    # The official values went through float32 numpy reductions and a JSON round trip of float32 -> float64.
    np.testing.assert_array_equal(np.asarray(ours[name], np.float64), official[name], err_msg=name)


def test_normalize_matches_official_episode_arrays():
  official = stats_lib.load_statistics(FIXTURE)
  arrays = np.load(FIXTURE / 'io.npz')
  for i, episode in enumerate(_raw_episodes()):
    for key in ('actions', 'proprio'):
      got = stats_lib.normalize(episode[key], official, key)
      assert got.dtype == np.float64
      np.testing.assert_array_equal(got, arrays[f'episode{i}__{key}_normalized'], err_msg=f'episode {i} {key}')


def test_unnormalize_inverts_normalize():
  official = stats_lib.load_statistics(FIXTURE)
  x = np.random.default_rng(0).uniform(-1, 1, (5, 14))
  back = stats_lib.normalize(stats_lib.unnormalize(x, official, 'actions'), official, 'actions')
  np.testing.assert_allclose(back, x, atol=1e-12)


def test_save_and_load_round_trip(tmp_path):
  computed = stats_lib.compute_statistics(_raw_episodes())
  stats_lib.save_statistics(computed, tmp_path / 'dataset_statistics.json')
  loaded = stats_lib.load_statistics(tmp_path)
  for name, value in computed.items():
    np.testing.assert_array_equal(loaded[name], np.asarray(value, np.float64))


def test_constant_dimension_is_an_error_naming_it(tmp_path):
  official = stats_lib.load_statistics(FIXTURE)
  broken = dict(official)
  broken['proprio_max'] = official['proprio_max'].copy()
  broken['proprio_max'][6] = broken['proprio_min'][6]
  with pytest.raises(ValueError, match=r'proprio.*dimension 6'):
    stats_lib.normalize(np.zeros(14), broken, 'proprio')
  path = tmp_path / 'dataset_statistics.json'
  stats_lib.save_statistics(broken, path)
  with pytest.raises(ValueError, match=rf'{path}.*proprio.*dimension 6'):
    stats_lib.load_statistics(path)


def test_missing_statistic_and_wrong_width_are_errors(tmp_path):
  raw = json.loads((FIXTURE / 'dataset_statistics.json').read_text())
  del raw['actions_max']
  path = tmp_path / 'dataset_statistics.json'
  path.write_text(json.dumps(raw))
  with pytest.raises(ValueError, match=r'actions_max'):
    stats_lib.load_statistics(path)
  official = stats_lib.load_statistics(FIXTURE)
  with pytest.raises(ValueError, match=r'does not match the statistics \(14'):
    stats_lib.normalize(np.zeros((3, 7)), official, 'actions')
  with pytest.raises(FileNotFoundError, match='nope.json'):
    stats_lib.load_statistics(tmp_path / 'nope.json')
