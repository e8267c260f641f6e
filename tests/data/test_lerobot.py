"""LeRobot datasets v2.1 (H.264) and v3.0 (AV1) as a training source: the first samples' slots against the raw
parquet rows and PyAV-decoded video frames after normalisation, min/max statistics, tiny training runs, and errors
naming file, episode and key for bad data. Fixtures: tests/data/lerobot_fixture.py."""

import json
import os
import shutil

import av
import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from configs import aloha as aloha_config
from cosmos_jax.data import bundled, datasets, lerobot
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data.episodes import EpisodeLengthError
from cosmos_jax.policy import normalization
from cosmos_jax.train import trainer
from tests.data import lerobot_fixture as fixture

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
VERSIONS = ('v2.1', 'v3.0')
ROLES = ('image', 'wrist_image', 'wrist_image2')  # lerobot_fixture.CAMERAS in this order


def root(version):
  return os.path.join(FIXTURES, f'lerobot_{version}')


def raw_rows(version):
  """(state, action, episode_index) of every frame, straight from the parquet files."""
  files = sorted(os.path.join(d, n) for d, _, names in os.walk(os.path.join(root(version), 'data')) for n in names)
  tables = [pq.read_table(f).to_pydict() for f in files]
  cat = lambda k: np.concatenate([np.asarray(t[k], np.float32 if k != 'episode_index' else np.int64) for t in tables])
  return cat('observation.state'), cat('action'), cat('episode_index')


def raw_frame(version, camera_key, episode, t):
  """Frame t of an episode decoded independently with PyAV (v3.0: episodes follow each other in one file)."""
  if version == 'v2.1':
    path, offset = f'{root(version)}/videos/chunk-000/{camera_key}/episode_{episode:06d}.mp4', t
  else:
    path, offset = f'{root(version)}/videos/{camera_key}/chunk-000/file-000.mp4', sum(fixture.LENGTHS[:episode]) + t
  with av.open(path) as container:
    for i, frame in enumerate(container.decode(video=0)):
      if i == offset:
        return frame.to_ndarray(format='rgb24')
  raise AssertionError(f'{path} has no frame {offset}')


@pytest.mark.parametrize('version', VERSIONS)
def test_first_samples_match_raw_parquet_and_video(version):
  config = sample_lib.SampleConfig(image_size=64, augment=False)
  dataset = datasets.load_dataset('aloha', root(version), config, data_format='lerobot')
  state, action, episode_index = raw_rows(version)
  # Min/max over every frame, as the official statistics (not LeRobot's mean/std).
  np.testing.assert_array_equal(dataset.stats['actions_min'], action.min(0).astype(np.float64))
  np.testing.assert_array_equal(dataset.stats['proprio_max'], state.max(0).astype(np.float64))
  assert dataset.tasks == ('transfer cube',)  # task index 1 of the tasks table
  cameras = dict(zip(ROLES, fixture.CAMERAS))
  for index in (0, 1, fixture.LENGTHS[0] + 2):  # episode 0 steps 0 and 1, episode 1 step 2
    got = dataset.sample(index, np.random.default_rng(0))
    episode, step = (0, index) if index < fixture.LENGTHS[0] else (1, index - fixture.LENGTHS[0])
    rows = np.flatnonzero(episode_index == episode)
    want_actions = normalization.normalize(action[rows], dataset.stats, 'actions')
    chunk = want_actions[np.minimum(np.arange(step, step + 50), len(rows) - 1)]
    np.testing.assert_allclose(got['actions'], chunk, rtol=0, atol=1e-6, err_msg=f'{version} {index}')
    np.testing.assert_allclose(got['proprio'], normalization.normalize(state[rows], dataset.stats, 'proprio')[step],
                               rtol=0, atol=1e-6)
    for slot, role in enumerate(config.layout.cameras):  # current frames sit in slots 2.. in layout camera order
      np.testing.assert_array_equal(got['video'][2 + slot], raw_frame(version, cameras[role], episode, step),
                                    err_msg=f'{version} sample {index} {role}')


def test_versions_agree_on_everything_but_codec_noise():
  config = sample_lib.SampleConfig(image_size=64, augment=False)
  a, b = (datasets.load_dataset('aloha', root(v), config, data_format='lerobot') for v in VERSIONS)
  x, y = a.sample(5, np.random.default_rng(0)), b.sample(5, np.random.default_rng(0))
  for key in ('actions', 'proprio', 'value_function_return'):
    np.testing.assert_array_equal(x[key], y[key], err_msg=key)
  slot = 2 + a.config.layout.cameras.index('image')
  frames = fixture.frames(0, 0)[5].astype(int)  # what was encoded: H.264 and AV1 both stay close to it
  for got in (x, y):
    assert np.abs(got['video'][slot].astype(int) - frames).mean() < 6


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  """The tiny training programs are the same in every data-format test: one persistent cache per session."""
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.getbasetemp() / 'jax_cache_tiny_training'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  yield
  jax.config.update('jax_compilation_cache_dir', old[0])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', old[1])


@pytest.mark.parametrize('version', VERSIONS)
def test_tiny_training_on_lerobot(version, tmp_path, compilation_cache):
  del compilation_cache
  c = aloha_config.get_config('tiny')
  c.total_steps = 2
  c.checkpoint.every_steps = 2
  c.checkpoint.async_save = False
  c.log.image_every_steps = 0
  c.data.format = 'lerobot'
  c.data.dataset_dir = root(version)
  c.data.text_store = str(bundled.text_store_dir('aloha'))
  result = trainer.train(c, str(tmp_path / 'run'))
  assert sorted(result.losses) == [1, 2] and all(np.isfinite(v) for v in result.losses.values())
  assert not os.path.exists(os.path.join(root(version), 'dataset_statistics.json'))


def copy_of(version, tmp_path):
  out = tmp_path / version
  shutil.copytree(root(version), out)
  return out


def test_missing_camera_is_named(tmp_path):
  features = {'cameras': {'image': 'observation.images.front', 'wrist_image': 'observation.images.left_wrist',
                          'wrist_image2': 'observation.images.right_wrist'}}
  with pytest.raises(ValueError, match=r"info.json: camera 'observation.images.front' \(camera role 'image'\) is "
                                       r"not a feature"):
    datasets.load_dataset('aloha', root('v2.1'), data_format='lerobot', features=features)
  data = copy_of('v2.1', tmp_path)
  os.remove(data / 'videos/chunk-000/observation.images.top/episode_000001.mp4')
  with pytest.raises(FileNotFoundError, match=r"episode_000001.mp4: video of episode 1, camera "
                                              r"'observation.images.top' does not exist"):
    datasets.load_dataset('aloha', str(data), data_format='lerobot')


def test_mismatched_frame_count_is_named(tmp_path):
  data = copy_of('v2.1', tmp_path)
  video = data / 'videos/chunk-000/observation.images.left_wrist/episode_000000.mp4'
  fixture.write_video(str(video), fixture.frames(0, 1)[:-3], 'libx264')
  with pytest.raises(EpisodeLengthError, match=r"episode_000000.mp4: episode 0, camera 'observation.images.left_wrist'"
                                               r" has 21 frames .* the episode has 24 steps"):
    datasets.load_dataset('aloha', str(data), data_format='lerobot')
  data = copy_of('v3.0', tmp_path)
  info = json.loads((data / 'meta/info.json').read_text())
  info['fps'] = 20  # metadata disagreeing with the video: its 10 fps frames fill only every other 20 fps step
  (data / 'meta/info.json').write_text(json.dumps(info))
  with pytest.raises(EpisodeLengthError, match=r"file-000.mp4: episode 0, camera 'observation.images.top' has 12 frames .* 24 steps"):
    datasets.load_dataset('aloha', str(data), data_format='lerobot')


def test_undecodable_video_is_named(tmp_path):
  data = copy_of('v3.0', tmp_path)
  (data / 'videos/observation.images.right_wrist/chunk-000/file-000.mp4').write_bytes(b'not a video' * 100)
  with pytest.raises(ValueError, match=r"file-000.mp4: video of episode 0, camera 'observation.images.right_wrist' "
                                       r"is not decodable"):
    datasets.load_dataset('aloha', str(data), data_format='lerobot')
  with pytest.raises(ValueError, match="codebase_version 'v1.6' is not supported"):
    info = json.loads((data / 'meta/info.json').read_text())
    (data / 'meta/info.json').write_text(json.dumps({**info, 'codebase_version': 'v1.6'}))
    lerobot.read_info(str(data))
