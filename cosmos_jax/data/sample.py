"""Training samples: slot frames, targets and masks for one (episode, step), and the mixture dataset over them.

A sample is channels-last and un-duplicated: `video` holds ONE frame per latent slot, (state_t, S, S, 3) uint8
(slot 0 blank, proprio/action/value slots black, camera slots the images at t and t'); the trainer expands it
to the 1 + 4 (state_t - 1) pixel frames the VAE encodes (cosmos_jax.policy.video). `to_official_video` gives the
official channels-first (3, T, S, S) `video` of a sample (the boundary with the official layout).

Vectors are float32 (the official float64 normalised values, cast once; the trainer casts them to bf16 anyway).
Randomness (the world-model/value coin and the augmentation draw) comes from the `rng` passed per sample, so a
pipeline seeded per (seed, index) is deterministic; the official code uses global numpy/torch RNGs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from cosmos_jax.data import mixture, transforms
from cosmos_jax.data.episodes import Episode, EpisodeFrameCache
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import normalization
from cosmos_jax.policy import video as video_lib

# Slot layouts come from the policy's one table (cosmos_jax.policy.layout.LAYOUTS): a layout's `cameras` are the
# camera roles (the keys of `Episode.frames`), `camera_sources` the dataset cameras feeding them.
INDEX_NAMES = tuple(layout_lib.LAYOUTS['aloha'].latent_indices())


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """Dataset knobs with the official ALOHA main values as defaults. The action chunk size and the discount of
  the value target are the layout's (`layout.chunk_size`, `layout.gamma`)."""

  layout: layout_lib.SlotLayout = layout_lib.LAYOUTS['aloha']
  image_size: int = 224
  augment: bool = True
  stronger_augment: bool = True
  demonstration_sampling_prob: float = 0.5
  success_rollout_sampling_prob: float = 0.5
  treat_demos_as_success_rollouts: bool = True
  treat_success_rollouts_as_demos: bool = False
  p_world_model: float = 0.5
  # Not in the official recipe: each demo step before `episode_start_steps` appears `episode_start_repeats` times
  # per epoch as a policy sample. Where every episode starts from the same pose, only the cameras tell the first
  # steps' action chunks apart, and they are a tiny share of the steps (see configs/aloha.py:small).
  episode_start_steps: int = 0
  episode_start_repeats: int = 1

  def __post_init__(self):
    for name in ('demonstration_sampling_prob', 'success_rollout_sampling_prob', 'p_world_model'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f'SampleConfig.{name} must be in [0, 1], got {getattr(self, name)}')
    if self.episode_start_steps < 0 or self.episode_start_repeats < 1:
      raise ValueError(f'SampleConfig.episode_start_steps must be >= 0 and episode_start_repeats >= 1, got '
                       f'{self.episode_start_steps} and {self.episode_start_repeats}')

  @classmethod
  def for_layout(cls, name: str, **changes) -> 'SampleConfig':
    """The main-run defaults of benchmark `name` ('aloha', 'libero', 'robocasa'): its layout; only ALOHA copies
    the demos as success rollouts (LIBERO and RoboCasa train on their rollout sets)."""
    return cls(**{'layout': layout_lib.get_layout(name), 'treat_demos_as_success_rollouts': name == 'aloha',
                  **changes})


def to_official_video(video: np.ndarray) -> np.ndarray:
  """(state_t, S, S, 3) slot frames -> the official channels-first (3, 1 + 4 (state_t - 1), S, S) `video`."""
  return np.ascontiguousarray(np.moveaxis(np.asarray(video_lib.slot_frames_to_video(video)), -1, 0))


@dataclasses.dataclass
class _Prepared:
  episode: Episode
  proprio: np.ndarray  # normalised, float64 (official arithmetic)
  actions: np.ndarray
  returns: np.ndarray  # float32
  key: int = -1  # frame-cache key, unique per episode (stable across pickling to worker processes)


def repeat_episode_starts(step_table: np.ndarray, start_steps: int, repeats: int) -> np.ndarray:
  """An (episode, step) table with the rows of steps < start_steps appended repeats - 1 more times."""
  starts = step_table[step_table[:, 1] < start_steps]
  return np.concatenate([step_table, *[starts] * (repeats - 1)]) if repeats > 1 and len(starts) else step_table


class PolicyDataset:
  """Random-access training samples over demonstrations and rollouts with the official epoch structure.

  `demos` (plus the successful rollouts when `treat_success_rollouts_as_demos`) are policy samples; `rollouts`
  (plus the given demos themselves when `treat_demos_as_success_rollouts`) are
  split into success and failure sections, and every rollout item is a world-model sample with probability
  `p_world_model`, else a value sample. Proprio and actions are min-max normalised with `stats` (computed from the demos by the caller).
  `tasks` lists the task strings; a sample's `text_index` indexes it. Picklable (grain worker processes).
  """

  def __init__(self, demos: Sequence[Episode], stats: Mapping[str, np.ndarray], config: SampleConfig,
               rollouts: Sequence[Episode] = (), tasks: Sequence[str] | None = None, frame_cache_episodes: int = 8):
    if not demos and not rollouts:
      raise ValueError('PolicyDataset: no episodes')
    self.config = config
    self.stats = dict(stats)
    prepared_demos = [self._prepare(e) for e in demos]
    rollout_list = [self._prepare(e) for e in rollouts]
    success = ([p for p in prepared_demos] if config.treat_demos_as_success_rollouts else [])
    if config.treat_success_rollouts_as_demos:  # after the copy above, as the official dataset (no double copy)
      prepared_demos = prepared_demos + [p for p in rollout_list if p.episode.success]
    # Sections split on the `success` flag alone, as the official step mapping does; the value curve comes from
    # the terminal reward (success_score), so a success with score 0 is a success item with returns of -1.
    success += [p for p in rollout_list if p.episode.success]
    failure = [p for p in rollout_list if not p.episode.success]
    self.sections = (prepared_demos, success, failure)
    self.step_tables = tuple(mixture.step_index(p.episode.num_steps for p in s) if s else np.zeros((0, 2), np.int64)
                             for s in self.sections)
    self.step_tables = (repeat_episode_starts(self.step_tables[0], config.episode_start_steps,
                                              config.episode_start_repeats), *self.step_tables[1:])
    self.epoch = mixture.EpochStructure.balance(
        len(self.step_tables[0]), len(self.step_tables[1]), len(self.step_tables[2]),
        config.demonstration_sampling_prob, config.success_rollout_sampling_prob)
    commands = sorted({p.episode.command for s in self.sections for p in s})
    if tasks is None:
      tasks = commands
    missing = [c for c in commands if c not in tasks]
    if missing:
      raise ValueError(f'task strings {missing} of the episodes are not among the known tasks {list(tasks)}')
    self.tasks = tuple(tasks)
    # Demos reused as success rollouts are the same _Prepared objects, so they share a key and cached frames.
    for key, prepared in enumerate({id(p): p for s in self.sections for p in s}.values()):
      prepared.key = key
    self._cache = EpisodeFrameCache(frame_cache_episodes)

  def with_config(self, **changes) -> 'PolicyDataset':
    """A shallow copy sharing the episodes, with sampling knobs (augment, p_world_model, ...) replaced."""
    copy = object.__new__(PolicyDataset)
    copy.__dict__.update(self.__dict__)
    copy.config = dataclasses.replace(self.config, **changes)
    return copy

  def _prepare(self, episode: Episode) -> _Prepared:
    proprio = normalization.normalize(episode.proprio, self.stats, 'proprio')
    actions = normalization.normalize(episode.actions, self.stats, 'actions')
    returns = mixture.value_returns(episode.num_steps, episode.terminal_reward, self.config.layout.gamma)
    return _Prepared(episode, proprio, actions, returns)

  def __len__(self) -> int:
    return self.epoch.length

  def locate(self, index: int) -> tuple[mixture.SampleType, int, int, int]:
    """Epoch index -> (sample type, global step inside the section, episode index inside the section, step)."""
    counts = [len(t) for t in self.step_tables]
    kind, global_step = self.epoch.locate(int(index), *counts)
    episode, step = self.step_tables[kind][global_step]
    return kind, global_step, int(episode), int(step)

  def sample(self, index: int, rng: np.random.Generator | None = None, *, world_model: bool | None = None,
             augment_params: transforms.AugmentParams | None = None) -> dict[str, np.ndarray]:
    """The training sample at epoch `index`. `rng` drives the coin and the augmentation unless they are given."""
    cfg = self.config
    kind, global_step, episode_index, step = self.locate(index)
    prepared = self.sections[kind][episode_index]
    episode = prepared.episode
    is_rollout = kind != mixture.SampleType.DEMO
    if is_rollout and world_model is None:
      if rng is None:
        raise ValueError('PolicyDataset.sample: a rollout item needs an rng (or world_model=) for its coin')
      world_model = mixture.world_model_coin(rng, cfg.p_world_model)
    num_steps = episode.num_steps
    chunk_size = cfg.layout.chunk_size
    future = mixture.future_step(step, chunk_size, num_steps)
    next_step = mixture.future_step(step, chunk_size, num_steps)
    next_future = mixture.future_step(next_step, chunk_size, num_steps)

    frames = self._cache.frames(prepared.key, episode)
    layout = cfg.layout
    n = len(layout.cameras)
    size = frames[layout.cameras[0]].shape[1]
    camera_frames = np.stack([frames[r][step] for r in layout.cameras] + [frames[r][future] for r in layout.cameras])
    if cfg.augment:
      if augment_params is None:
        if rng is None:
          raise ValueError('PolicyDataset.sample: augmentation needs an rng (or augment_params=)')
        augment_params = transforms.draw_augment_params(rng, size, cfg.stronger_augment)
      camera_frames = transforms.augment(camera_frames, augment_params)
    video = np.zeros((layout.state_t, size, size, 3), np.uint8)
    video[2:2 + n] = camera_frames[:n]
    video[4 + n:4 + 2 * n] = camera_frames[n:]

    out = {
        'video': video,
        'actions': mixture.action_chunk(prepared.actions, step, chunk_size).astype(np.float32),
        'proprio': prepared.proprio[step].astype(np.float32),
        'future_proprio': prepared.proprio[future].astype(np.float32),
        'value_function_return': np.float32(prepared.returns[future]),
        'next_action_chunk': mixture.action_chunk(prepared.actions, next_step, chunk_size).astype(np.float32),
        'next_value_function_return': np.float32(prepared.returns[next_future]),
        'rollout_data_mask': np.int32(is_rollout),
        'rollout_data_success_mask': np.int32(kind == mixture.SampleType.SUCCESS_ROLLOUT),
        'world_model_sample_mask': np.int32(is_rollout and bool(world_model)),
        'value_function_sample_mask': np.int32(is_rollout and not world_model),
        'global_rollout_idx': np.int32(global_step if is_rollout else -1),
        'text_index': np.int32(self.tasks.index(episode.command)),
        'index': np.int64(index),
        'step': np.int32(step),
        'future_step': np.int32(future),
    }
    out.update({name: np.int32(value) for name, value in layout.latent_indices().items()})
    return out
