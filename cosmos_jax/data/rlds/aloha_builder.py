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

`load_policy_dataset` turns an RLDS split (this layout, or any RLDS dataset with the same step keys, mapped by
`camera_keys` / `state_key`) into `Episode`s and the usual `PolicyDataset`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from cosmos_jax.data import aloha, decode, readers
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data.episodes import Episode, check_episode

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


def _column(steps, key: str, path: str) -> np.ndarray:
  *groups, leaf = key.split('/')
  values = []
  for t in range(len(steps)):
    node = steps[t]
    for name in groups + [leaf]:
      if name not in node:
        raise ValueError(f'{path}: RLDS step {t} has no {key!r} (keys at that level: {sorted(node)})')
      node = node[name]
    values.append(node)
  return np.stack([np.asarray(v) for v in values])


def rlds_to_episode(example: Mapping, *, name: str, camera_keys: Mapping[str, str] | None = None,
                    state_key: str = 'observation/state', action_key: str = 'action') -> Episode:
  """One RLDS example (as `tfds.data_source` returns it) -> an `Episode` with frames by camera role.

  `camera_keys` maps a camera role to a step key (default: this builder's ALOHA camera observations).
  """
  camera_keys = camera_keys or {role: f'observation/{cam}' for cam, role in aloha.CAMERA_ROLES.items()}
  steps = [example['steps'][t] for t in range(len(example['steps']))]  # decode every step once
  if not steps:
    raise ValueError(f'{name}: RLDS episode has no steps')
  actions = _column(steps, action_key, name).astype(np.float32)
  proprio = _column(steps, state_key, name).astype(np.float32)
  frames = {role: _column(steps, key, name) for role, key in camera_keys.items()}
  for key, images in zip(camera_keys.values(), frames.values()):
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f'{name}: {key!r} must hold (H, W, 3) uint8 images, got {images.shape[1:]} {images.dtype}')
  check_episode(name, proprio, actions, {k: len(v) for k, v in zip(camera_keys.values(), frames.values())},
                proprio_key=state_key, action_key=action_key)
  instructions = {str(_as_text(steps[t]['language_instruction'])) for t in range(len(steps))}
  if len(instructions) != 1:
    raise ValueError(f'{name}: expected one language_instruction per episode, got {sorted(instructions)}')
  meta = example.get('episode_metadata', {})
  success = bool(meta.get('success', True))
  score = float(meta.get('success_score', 1.0 if success else 0.0))
  return Episode(path=name, command=instructions.pop(), proprio=proprio, actions=actions, success=success,
                 terminal_reward=score, frames=frames)


def _as_text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_policy_dataset(builder_dir: str, config=None, *, split: str = 'train', rollout_split: str | None = None,
                        stats_path: str | None = None, run_copy: stats_lib.RunCopy | None = None, tasks=None,
                        **episode_kwargs):
  """A `PolicyDataset` from an RLDS directory (`<data_dir>/<name>/<config>/<version>`): demos from `split`,
  rollouts from `rollout_split`. Statistics: `stats_path`, else `<builder_dir>/dataset_statistics.json`, else
  computed from the demos (see `stats.resolve_statistics`; a training run passes its `run_copy`)."""
  from cosmos_jax.data import sample as sample_lib  # pylint: disable=g-import-not-at-top

  config = config or sample_lib.SampleConfig.for_layout('aloha')
  builder = tfds.builder_from_directory(builder_dir)

  def episodes(split_name):
    if split_name not in builder.info.splits:
      raise ValueError(f'{builder_dir}: no split {split_name!r}; splits are {sorted(builder.info.splits)}')
    source = builder.as_data_source(split=split_name)
    out = []
    for i in range(len(source)):
      example = source[i]
      name = f'{builder_dir}[{split_name}][{i}]:{_as_text(example["episode_metadata"]["file_path"])}'
      episode = rlds_to_episode(example, name=name, **episode_kwargs)
      if episode.frames[config.layout.cameras[0]].shape[1] != config.image_size:
        episode.frames = {r: decode.resize_square(v, config.image_size) for r, v in episode.frames.items()}
      out.append(episode)
    return out

  demos = episodes(split)
  rollouts = episodes(rollout_split) if rollout_split else []
  return readers.build_dataset(builder_dir, demos, config, rollouts=rollouts, stats_path=stats_path,
                               run_copy=run_copy, tasks=tasks)
