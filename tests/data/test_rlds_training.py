"""RLDS in training: `load_dataset(data_format='rlds')` on our builder's output and on an Open X-Embodiment style
dataset mapped by a feature map, a tiny training run from an RLDS directory, and the default install without
tensorflow-datasets."""

import io
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from configs import aloha as aloha_config
from cosmos_jax.data import bundled, datasets
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data.rlds import aloha_builder
from cosmos_jax.train import trainer

SAMPLE = bundled.sample_dir('aloha')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPISODE = 'transfer_cube_scripted/train/episode_0'
OPENX_STEPS, OPENX_SIZE = 60, 32


class PngImage(tfds.features.Image):
  """An Image feature (the Open-X datasets' camera feature) whose PNG encoding uses PIL: TFDS encodes with TensorFlow,
  which is not installed; reading back (tfds.data_source) decodes with OpenCV/PIL either way."""

  def encode_example(self, image_or_path_or_fobj):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image_or_path_or_fobj, np.uint8)).save(buffer, format='PNG')
    return buffer.getvalue()


class OpenXStyle(tfds.core.GeneratorBasedBuilder):
  """Two short episodes with Open-X key names (`observation/image` a PNG Image feature, `observation/wrist_image`,
  ...)."""

  VERSION = tfds.core.Version('1.0.0')

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, **kwargs):
    super().__init__(file_format='array_record', **kwargs)

  def _info(self):
    image = tfds.features.Tensor(shape=(OPENX_SIZE, OPENX_SIZE, 3), dtype=np.uint8)
    png = PngImage(shape=(OPENX_SIZE, OPENX_SIZE, 3), encoding_format='png')
    vector = tfds.features.Tensor(shape=(14,), dtype=np.float32)
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({'steps': tfds.features.Dataset({
        'observation': {'image': png, 'wrist_image': image, 'right_wrist_image': image, 'joint_state': vector},
        'action': vector, 'language_instruction': tfds.features.Text()})}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for index, task in enumerate(('pick the cube', 'open the drawer')):
      steps = []
      for t in range(OPENX_STEPS):
        cameras = {name: openx_image(index, t, k) for k, name in
                   enumerate(('image', 'wrist_image', 'right_wrist_image'))}
        steps.append({'observation': {**cameras, 'joint_state': openx_vector(index, t, 0.0)},
                      'action': openx_vector(index, t, 1.0), 'language_instruction': task})
      yield f'episode_{index}', {'steps': steps}


def openx_image(episode, t, camera):
  return np.full((OPENX_SIZE, OPENX_SIZE, 3), (episode * 50 + t * 3 + camera * 7) % 256, np.uint8)


def openx_vector(episode, t, offset):
  return (np.arange(14, dtype=np.float32) * 0.1 + t * 0.01 + episode + offset).astype(np.float32)


OPENX_FEATURES = {'cameras': {'image': 'steps/observation/image', 'wrist_image': 'steps/observation/wrist_image',
                              'wrist_image2': 'steps/observation/right_wrist_image'},
                  'proprio': 'steps/observation/joint_state', 'actions': 'steps/action',
                  'instruction': 'steps/language_instruction'}


@pytest.fixture(scope='module')
def aloha_rlds(tmp_path_factory):
  root = tmp_path_factory.mktemp('rlds_train')
  source = root / 'aloha' / 'transfer_cube_scripted' / 'train'
  source.mkdir(parents=True)
  for suffix in ('.hdf5', '_cam_high.mp4', '_cam_left_wrist.mp4', '_cam_right_wrist.mp4'):
    shutil.copy(f'{SAMPLE}/{EPISODE}{suffix}', source / os.path.basename(f'{EPISODE}{suffix}'))
  builder = aloha_builder.AlohaRlds(source_dir=str(root / 'aloha'), data_dir=str(root / 'tfds'), config='size64')
  builder.download_and_prepare()
  return root / 'aloha', str(builder.data_dir)


def test_load_dataset_reads_our_builder_output(aloha_rlds):
  source, builder_dir = aloha_rlds
  config = sample_lib.SampleConfig(image_size=64, augment=False)
  from_rlds = datasets.load_dataset('aloha', builder_dir, config, data_format='rlds')
  from_hdf5 = datasets.load_dataset('aloha', str(source), config)
  assert len(from_rlds) == len(from_hdf5) and tuple(from_rlds.tasks) == tuple(from_hdf5.tasks) == ('transfer cube',)
  for key in ('actions_min', 'actions_max', 'proprio_min', 'proprio_max'):
    np.testing.assert_array_equal(from_rlds.stats[key], from_hdf5.stats[key], err_msg=key)
  for index in (0, 123):
    want, got = from_hdf5.sample(index, np.random.default_rng(index)), from_rlds.sample(index, np.random.default_rng(index))
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=f'{index}: {key}')


def test_open_x_style_dataset_through_a_feature_map(tmp_path):
  builder = OpenXStyle(data_dir=str(tmp_path))
  builder.download_and_prepare()
  config = sample_lib.SampleConfig(image_size=64, augment=False)
  dataset = datasets.load_dataset('aloha', str(builder.data_dir), config, data_format='rlds',
                                  features=OPENX_FEATURES)
  assert sorted(dataset.tasks) == ['open the drawer', 'pick the cube']
  demos = {p.episode.command: p.episode for p in dataset.sections[0]}
  episode = demos['open the drawer']
  np.testing.assert_array_equal(episode.actions, np.stack([openx_vector(1, t, 1.0) for t in range(OPENX_STEPS)]))
  np.testing.assert_array_equal(episode.proprio, np.stack([openx_vector(1, t, 0.0) for t in range(OPENX_STEPS)]))
  # Constant frames stay constant through the bicubic resize to 64 px.
  np.testing.assert_array_equal(episode.frames['wrist_image2'][5], np.full((64, 64, 3), (50 + 15 + 14) % 256))
  np.testing.assert_array_equal(episode.frames['image'][7], np.full((64, 64, 3), (50 + 21) % 256))  # PNG feature
  lo = np.minimum(openx_vector(0, 0, 1.0), openx_vector(1, 0, 1.0))
  np.testing.assert_allclose(dataset.stats['actions_min'], lo, rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match=r"RLDS step 0 has no 'steps/observation/state'.*joint_state"):
    datasets.load_dataset('aloha', str(builder.data_dir), config, data_format='rlds',
                          features={**OPENX_FEATURES, 'proprio': 'steps/observation/state'})
  with pytest.raises(ValueError, match="unknown data format 'parquet'"):
    datasets.load_dataset('aloha', str(builder.data_dir), config, data_format='parquet')


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  """The tiny training programs are the same in every data-format test: one persistent cache per session."""
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.getbasetemp() / 'jax_cache_tiny_training'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  yield
  jax.config.update('jax_compilation_cache_dir', old[0])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', old[1])


def test_tiny_training_from_rlds(aloha_rlds, tmp_path, compilation_cache):
  del compilation_cache
  _, builder_dir = aloha_rlds
  c = aloha_config.get_config('tiny')
  c.total_steps = 2
  c.checkpoint.every_steps = 2
  c.checkpoint.async_save = False
  c.log.image_every_steps = 0
  c.data.format = 'rlds'
  c.data.dataset_dir = builder_dir
  c.data.text_store = str(bundled.text_store_dir('aloha'))
  result = trainer.train(c, str(tmp_path / 'run'))
  assert sorted(result.losses) == [1, 2] and all(np.isfinite(v) for v in result.losses.values())
  # Statistics were computed from the RLDS demos into the run's assets, not into the TFDS directory.
  assert os.path.exists(tmp_path / 'run' / 'assets' / 'dataset_statistics.json')
  assert not os.path.exists(os.path.join(builder_dir, 'dataset_statistics.json'))


def test_default_install_needs_no_tensorflow_datasets():
  code = ('import sys; sys.modules["tensorflow_datasets"] = None; sys.modules["tensorflow"] = None\n'
          'from cosmos_jax.data import datasets, sample\n'
          'from cosmos_jax.train import data\n'
          'd = datasets.load_dataset("aloha", sys.argv[1], sample.SampleConfig(image_size=64), lazy=True)\n'
          'print(len(d))\n')
  out = subprocess.run([sys.executable, '-c', code, str(bundled.sample_dir('aloha'))], capture_output=True,
                       text=True, cwd=REPO, env={**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'}, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert int(out.stdout.split()[-1]) > 0
