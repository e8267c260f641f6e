"""RLDS / TFDS datasets as a training source: our builder's output (aloha_builder.py) and Open X-Embodiment style
datasets (`steps/observation/...`), mapped to the policy layout by a feature map, read through `tfds.data_source`
(ArrayRecord random access, no TensorFlow).

Feature map (`FeatureMap`, `config.data.features` in a training config): camera role -> step key, and the step keys
of proprio, actions and the instruction; keys are '/'-separated paths inside a step, with an optional leading
`steps/` (the Open-X spelling). Defaults are this repository's ALOHA builder layout:

    cameras = {'image': 'observation/cam_high', 'wrist_image': 'observation/cam_left_wrist', ...}
    proprio = 'observation/state', actions = 'action', instruction = 'language_instruction'

An Open-X dataset (e.g. one with `steps/observation/image`, `steps/observation/wrist_image`, `steps/observation/state`)
maps its own keys. Episode metadata `success` / `success_score` are used when present (demos default to success).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from cosmos_jax.data import decode, readers
from cosmos_jax.data import sample as sample_lib
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data.episodes import Episode, check_episode

# The step keys this repository's ALOHA builder writes (aloha_builder.py), by camera role of the ALOHA layout.
ALOHA_BUILDER_CAMERAS = {'image': 'observation/cam_high', 'wrist_image': 'observation/cam_left_wrist',
                         'wrist_image2': 'observation/cam_right_wrist'}


@dataclasses.dataclass(frozen=True)
class FeatureMap(readers.FeatureMap):
  """Which step keys feed which part of the layout (module docstring)."""

  cameras: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(ALOHA_BUILDER_CAMERAS))
  proprio: str = 'observation/state'
  actions: str = 'action'
  instruction: str = 'language_instruction'


def _step_path(key: str) -> list[str]:
  parts = key.split('/')
  return parts[1:] if parts[0] == 'steps' else parts


def _column(steps, key: str, name: str) -> np.ndarray:
  path = _step_path(key)
  values = []
  for t, step in enumerate(steps):
    node = step
    for part in path:
      if not isinstance(node, Mapping) or part not in node:
        where = sorted(node) if isinstance(node, Mapping) else type(node).__name__
        raise ValueError(f'{name}: RLDS step {t} has no {key!r} (keys at that level: {where})')
      node = node[part]
    values.append(np.asarray(node))
  return np.stack(values)


def _as_text(value) -> str:
  value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def rlds_to_episode(example: Mapping, *, name: str, features: FeatureMap | None = None) -> Episode:
  """One RLDS example (as `tfds.data_source` returns it) -> an `Episode` with frames by camera role."""
  features = features or FeatureMap()
  steps = [example['steps'][t] for t in range(len(example['steps']))]  # decode every step once
  if not steps:
    raise ValueError(f'{name}: RLDS episode has no steps')
  actions = _column(steps, features.actions, name).astype(np.float32)
  proprio = _column(steps, features.proprio, name).astype(np.float32)
  frames = {role: _column(steps, key, name) for role, key in features.cameras.items()}
  for key, images in zip(features.cameras.values(), frames.values()):
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f'{name}: {key!r} must hold (H, W, 3) uint8 images, got {images.shape[1:]} {images.dtype}')
  check_episode(name, proprio, actions, {k: len(v) for k, v in zip(features.cameras.values(), frames.values())},
                proprio_key=features.proprio, action_key=features.actions)
  instructions = {_as_text(v) for v in _column(steps, features.instruction, name)}
  if len(instructions) != 1:
    raise ValueError(f'{name}: expected one {features.instruction!r} per episode, got {sorted(instructions)}')
  meta = example.get('episode_metadata', {})
  success = bool(meta.get('success', True))
  score = float(meta.get('success_score', 1.0 if success else 0.0))
  return Episode(path=name, command=instructions.pop(), proprio=proprio, actions=actions, success=success,
                 terminal_reward=score, frames=frames)


def read_episodes(builder_dir: str, split: str, features: FeatureMap, image_size: int) -> list[Episode]:
  """Every episode of `split` of the TFDS dataset in `builder_dir` (`<data_dir>/<name>/<config>/<version>`)."""
  # tensorflow-datasets is an optional extra (pip install cosmos_jax[rlds]); only RLDS sources need it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder_from_directory(builder_dir)
  if split not in builder.info.splits:
    raise ValueError(f'{builder_dir}: no split {split!r}; splits are {sorted(builder.info.splits)}')
  source = builder.as_data_source(split=split)
  episodes = []
  for i in range(len(source)):
    example = source[i]
    path = example.get('episode_metadata', {}).get('file_path', i)
    episode = rlds_to_episode(example, name=f'{builder_dir}[{split}][{i}]:{_as_text(path)}', features=features)
    episode.frames = {role: decode.resize_square(v, image_size) for role, v in episode.frames.items()}
    episodes.append(episode)
  return episodes


def load_policy_dataset(builder_dir: str, config=None, *, split: str = 'train', rollout_split: str | None = None,
                        features: FeatureMap | Mapping | None = None, stats_path: str | None = None,
                        run_copy: stats_lib.RunCopy | None = None, tasks=None):
  """A `PolicyDataset` from an RLDS directory: demos from `split`, rollouts from `rollout_split`. Statistics:
  `stats_path`, else `<builder_dir>/dataset_statistics.json`, else computed from the demos (a training run passes its
  `run_copy`; see `stats.resolve_statistics`)."""
  config = config or sample_lib.SampleConfig.for_layout('aloha')
  if not isinstance(features, FeatureMap):
    features = FeatureMap.from_config(features)
  missing = sorted(set(config.layout.cameras) - set(features.cameras))
  if missing:
    raise ValueError(f'{builder_dir}: the feature map names no step key for camera roles {missing} of the '
                     f'{config.layout.name} layout (it maps {dict(features.cameras)})')
  demos = read_episodes(builder_dir, split, features, config.image_size)
  rollouts = read_episodes(builder_dir, rollout_split, features, config.image_size) if rollout_split else []
  return readers.build_dataset(builder_dir, demos, config, rollouts=rollouts, stats_path=stats_path,
                               run_copy=run_copy, tasks=tasks)
