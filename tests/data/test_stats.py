"""Tests for cosmos_jax/data/stats.py against the official statistics of the ALOHA episode fixture."""

import dataclasses
import json
import shutil
import threading

import h5py
import numpy as np
import pytest

from cosmos_jax.data import readers
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.policy import normalization
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
      got = normalization.normalize(episode[key], official, key)
      assert got.dtype == np.float64
      np.testing.assert_array_equal(got, arrays[f'episode{i}__{key}_normalized'], err_msg=f'episode {i} {key}')


def test_unnormalize_inverts_normalize():
  official = stats_lib.load_statistics(FIXTURE)
  x = np.random.default_rng(0).uniform(-1, 1, (5, 14))
  back = normalization.normalize(normalization.unnormalize(x, official, 'actions'), official, 'actions')
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
    normalization.normalize(np.zeros(14), broken, 'proprio')
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
    normalization.normalize(np.zeros((3, 7)), official, 'actions')
  with pytest.raises(FileNotFoundError, match='nope.json'):
    stats_lib.load_statistics(tmp_path / 'nope.json')


# ----------------------------------------------------------------------------------------------------------------
# Where the statistics come from: never written into a dataset folder; one writer per run.


def _computed():
  return stats_lib.compute_statistics(_raw_episodes())


def _snapshot(folder):
  return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
          for p in sorted(folder.rglob('*'))}


def _read_only_dataset(tmp_path, with_statistics):
  dataset = tmp_path / 'dataset'
  shutil.copytree(FIXTURE, dataset)
  if not with_statistics:
    (dataset / stats_lib.STATISTICS_FILENAME).unlink()
  for p in [dataset, *dataset.rglob('*')]:
    p.chmod(p.stat().st_mode & ~0o222)
  return dataset


@pytest.fixture
def restore_write_permission(tmp_path):
  yield
  for p in [tmp_path, *tmp_path.rglob('*')]:
    p.chmod(p.stat().st_mode | 0o200)


def test_missing_statistics_are_computed_by_the_writer_into_the_run_copy(tmp_path, restore_write_permission):
  dataset = _read_only_dataset(tmp_path, with_statistics=False)
  before = _snapshot(dataset)
  run_copy = stats_lib.RunCopy(str(tmp_path / 'run' / 'assets' / stats_lib.STATISTICS_FILENAME), writer=True)
  calls = []
  stats = stats_lib.resolve_statistics(dataset / stats_lib.STATISTICS_FILENAME,
                                       lambda: calls.append(1) or _computed(), run_copy=run_copy)
  assert calls == [1] and _snapshot(dataset) == before
  expected = _computed()
  for name, value in stats_lib.load_statistics(run_copy.path).items():
    np.testing.assert_array_equal(value, np.asarray(expected[name], np.float64), err_msg=name)
    np.testing.assert_array_equal(stats[name], value, err_msg=name)
  # A reader of the same run (or a resumed run) reads the copy and computes nothing.
  reader = stats_lib.RunCopy(run_copy.path, writer=False, timeout_s=0)
  again = stats_lib.resolve_statistics(dataset / stats_lib.STATISTICS_FILENAME, lambda: calls.append(2), run_copy=reader)
  assert calls == [1] and all(np.array_equal(again[k], stats[k]) for k in stats)


def test_the_dataset_file_is_read_and_copied_with_the_run(tmp_path, restore_write_permission):
  dataset = _read_only_dataset(tmp_path, with_statistics=True)
  before = _snapshot(dataset)
  run_path = tmp_path / 'run' / 'assets' / stats_lib.STATISTICS_FILENAME
  reader = stats_lib.resolve_statistics(dataset / stats_lib.STATISTICS_FILENAME, _computed,
                                        run_copy=stats_lib.RunCopy(str(run_path), writer=False))
  assert not run_path.exists()  # only the writer saves the copy
  stats = stats_lib.resolve_statistics(dataset / stats_lib.STATISTICS_FILENAME, lambda: pytest.fail('computed'),
                                       run_copy=stats_lib.RunCopy(str(run_path), writer=True))
  official = stats_lib.load_statistics(FIXTURE)
  for name in official:
    np.testing.assert_array_equal(stats[name], official[name], err_msg=name)
    np.testing.assert_array_equal(reader[name], official[name], err_msg=name)
    np.testing.assert_array_equal(stats_lib.load_statistics(run_path)[name], official[name], err_msg=name)
  assert _snapshot(dataset) == before


def test_without_a_run_nothing_is_written(tmp_path, restore_write_permission):
  dataset = _read_only_dataset(tmp_path, with_statistics=False)
  before = _snapshot(dataset)
  stats = stats_lib.resolve_statistics(dataset / stats_lib.STATISTICS_FILENAME, _computed)
  assert _snapshot(dataset) == before and sorted(p.name for p in tmp_path.iterdir()) == ['dataset']
  for name, value in _computed().items():
    assert stats[name].dtype == np.float64
    np.testing.assert_array_equal(stats[name], np.asarray(value, np.float64), err_msg=name)


def test_other_processes_wait_for_the_writer_and_time_out_clearly(tmp_path):
  run_path = tmp_path / 'assets' / stats_lib.STATISTICS_FILENAME
  absent = tmp_path / 'dataset' / stats_lib.STATISTICS_FILENAME
  reader = stats_lib.RunCopy(str(run_path), writer=False, timeout_s=0.3, poll_s=0.01)
  with pytest.raises(TimeoutError, match=rf'0.3 s for the dataset statistics {run_path}.*process 0'):
    stats_lib.resolve_statistics(absent, lambda: pytest.fail('a reader computed'), run_copy=reader)

  writer = threading.Timer(0.2, lambda: stats_lib.resolve_statistics(
      absent, _computed, run_copy=stats_lib.RunCopy(str(run_path), writer=True)))
  writer.start()
  waited = stats_lib.resolve_statistics(absent, lambda: pytest.fail('a reader computed'),
                                        run_copy=dataclasses.replace(reader, timeout_s=30))
  writer.join()
  for name, value in _computed().items():
    np.testing.assert_array_equal(waited[name], np.asarray(value, np.float64), err_msg=name)


def test_run_copy_that_disagrees_with_the_dataset_file_is_an_error(tmp_path):
  run_path = tmp_path / 'assets' / stats_lib.STATISTICS_FILENAME
  run_path.parent.mkdir()
  changed = stats_lib.load_statistics(FIXTURE)
  changed['actions_max'] = changed['actions_max'] + 1
  stats_lib.save_statistics(changed, run_path)
  with pytest.raises(ValueError, match=r"differ from .*dataset_statistics.json in \['actions_max'\]"):
    stats_lib.resolve_statistics(FIXTURE / stats_lib.STATISTICS_FILENAME, _computed,
                                 run_copy=stats_lib.RunCopy(str(run_path), writer=True))


def test_a_named_statistics_file_must_exist(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'statistics file .*absent.json does not exist'):
    readers.load_statistics_or_compute(str(FIXTURE), [], stats_path=str(tmp_path / 'absent.json'))
