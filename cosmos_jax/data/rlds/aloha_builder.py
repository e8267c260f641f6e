"""ALOHA-format episodes as an RLDS dataset (TFDS), and RLDS episodes back into a `PolicyDataset`.

Build (no TensorFlow needed: TFDS writes ArrayRecord files and reads them back with `tfds.data_source`):

    builder = AlohaRlds(source_dir='<aloha data dir>', rollout_dir=None, data_dir='<tfds dir>',
                        config='size224')
    builder.download_and_prepare()
    source = tfds.data_source('aloha_rlds/size224', data_dir='<tfds dir>', split='train')  # random access

Episode layout (RLDS conventions): `steps` is a sequence of
  observation: {cam_high, cam_left_wrist, cam_right_wrist: (S, S, 3) uint8, state: (14,) float32 qpos},
  action: (14,) float32 (absolute joint targets), reward: float32 (the terminal reward on the last step, else 0),
  discount: 1.0, is_first / is_last / is_terminal: bool, language_instruction: the task string;
and `episode_metadata` is {file_path, success, success_score}. Splits: `train` and `val` (demos under folders of
that name), `rollouts` (every HDF5 under `rollout_dir`).

Images are stored as zlib-compressed uint8 tensors, losslessly, at the config's size (PIL bicubic resize, the
official reader's). TFDS's `Image` feature (PNG/JPEG) needs TensorFlow to encode, and TensorFlow is not a
dependency here, so the files are ArrayRecord (TFRecord writing also needs TensorFlow). With TensorFlow installed,
`tfds.builder_from_directory(dir).as_dataset(...)` can read them too.

Reading RLDS back for training (this layout or Open-X style ones, through a feature map) is `reader.py`
(`datasets.load_dataset(..., data_format='rlds')`); that side needs no builder class.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from cosmos_jax.data import aloha, readers
from cosmos_jax.data.episodes import Episode

NAME = 'aloha_rlds'
STATE_DIM = 14


class AlohaRldsConfig(tfds.core.BuilderConfig):
  """One stored image size."""

  def __init__(self, *, image_size: int, **kwargs):
    super().__init__(**kwargs)
    self.image_size = image_size


class AlohaRlds(tfds.core.GeneratorBasedBuilder):
  """ALOHA demonstrations (and rollouts) -> RLDS episodes (module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'ALOHA-format HDF5/MP4/JPEG episodes as RLDS.'}
  BUILDER_CONFIGS = [
      AlohaRldsConfig(name='size224', image_size=224, description='training size'),
      AlohaRldsConfig(name='size256', image_size=256, description='the released MP4 size'),
      AlohaRldsConfig(name='size64', image_size=64, description='tiny runs and tests'),
  ]

  # TFDS locates a builder's module through the `importlib_resources` backport, which its installed dependencies
  # lack here; the module file is known, so name it directly (TFDS looks for an optional checksums.tsv beside it).
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, *, source_dir: str | None = None, rollout_dir: str | None = None, **kwargs):
    self._source_dir, self._rollout_dir = source_dir, rollout_dir
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    image = tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8, encoding='zlib')
    vector = tfds.features.Tensor(shape=(STATE_DIM,), dtype=np.float32)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split('\n')[0],
        features=tfds.features.FeaturesDict({
            'steps': tfds.features.Dataset({
                'observation': tfds.features.FeaturesDict({**{cam: image for cam in aloha.CAMERAS},
                                                           'state': vector}),
                'action': vector,
                'reward': np.float32,
                'discount': np.float32,
                'is_first': np.bool_,
                'is_last': np.bool_,
                'is_terminal': np.bool_,
                'language_instruction': tfds.features.Text(),
            }),
            'episode_metadata': tfds.features.FeaturesDict({
                'file_path': tfds.features.Text(),
                'success': np.bool_,
                'success_score': np.float32,
            }),
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self._source_dir:
      raise ValueError(f'{NAME}: pass source_dir= (the ALOHA data directory) to build the dataset')
    splits = {}
    for split in ('train', 'val'):
      files = readers.find_episode_files(self._source_dir, split)
      if files:
        splits[split] = self._generate_examples(files, rollouts=False)
    if not splits.get('train'):
      raise FileNotFoundError(f'no HDF5 episodes with a train path component under {self._source_dir}')
    if self._rollout_dir:
      splits['rollouts'] = self._generate_examples(readers.find_episode_files(self._rollout_dir, None), rollouts=True)
    return splits

  def _generate_examples(self, files, *, rollouts: bool):
    size = self.builder_config.image_size
    for path in files:
      episode = (aloha.read_rollout if rollouts else aloha.read_demo)(path, size)
      key = os.path.relpath(path, self._rollout_dir if rollouts else self._source_dir)
      yield key, episode_to_rlds(episode, relative_path=key)


def episode_to_rlds(episode: Episode, relative_path: str) -> dict:
  """An ALOHA `Episode` -> one RLDS example (nested dict of numpy values)."""
  frames = episode.load_frames()
  roles = aloha.CAMERA_ROLES
  n = episode.num_steps
  steps = []
  for t in range(n):
    last = t == n - 1
    steps.append({
        'observation': {**{cam: frames[role][t] for cam, role in roles.items()},
                        'state': episode.proprio[t].astype(np.float32)},
        'action': episode.actions[t].astype(np.float32),
        'reward': np.float32(episode.terminal_reward if last else 0.0),
        'discount': np.float32(1.0),
        'is_first': t == 0, 'is_last': last, 'is_terminal': last,
        'language_instruction': episode.command,
    })
  return {'steps': steps, 'episode_metadata': {'file_path': relative_path, 'success': bool(episode.success),
                                               'success_score': np.float32(episode.terminal_reward)}}


