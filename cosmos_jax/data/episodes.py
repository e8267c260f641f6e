"""The in-memory episode record shared by every reader, and the checks every reader applies.

An `Episode` holds raw (un-normalised) proprio and actions, the task string, success/terminal reward and, per
camera role, either decoded frames at the training size or a loader that decodes them on demand (MP4 episodes of
the released datasets are far too large to keep decoded in RAM). Camera roles name the slot a camera feeds:
`wrist_image`, `wrist_image2`, `image` (primary), `image2` (secondary): the `cameras` of the policy layout
(cosmos_jax.policy.layout.LAYOUTS), whose `camera_sources` name the dataset cameras.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import numpy as np


@dataclasses.dataclass
class Episode:
  """One demonstration or rollout. `frames[role]` is (T, S, S, 3) uint8, or produced by `frame_loader()`."""

  path: str
  command: str
  proprio: np.ndarray
  actions: np.ndarray
  success: bool = True
  terminal_reward: float = 1.0
  frames: Mapping[str, np.ndarray] | None = None
  frame_loader: Callable[[], Mapping[str, np.ndarray]] | None = None

  @property
  def num_steps(self) -> int:
    return int(self.actions.shape[0])

  def load_frames(self) -> Mapping[str, np.ndarray]:
    if self.frames is not None:
      return self.frames
    if self.frame_loader is None:
      raise ValueError(f'{self.path}: episode has neither frames nor a frame loader')
    return self.frame_loader()


class EpisodeLengthError(ValueError):
  """A camera's frame count differs from the action count (the official reader skips such rollouts)."""


def check_episode(path: str, proprio: np.ndarray, actions: np.ndarray, frame_counts: Mapping[str, int],
                  *, proprio_key: str, action_key: str) -> None:
  """Length and shape checks; messages name the file and the offending key."""
  if actions.ndim != 2:
    raise ValueError(f'{path}: {action_key!r} must be (T, D), got shape {actions.shape}')
  if proprio.ndim != 2:
    raise ValueError(f'{path}: {proprio_key!r} must be (T, D), got shape {proprio.shape}')
  if actions.shape[0] == 0:
    raise ValueError(f'{path}: empty episode ({action_key!r} has 0 steps)')
  if proprio.shape[0] != actions.shape[0]:
    raise ValueError(f'{path}: {proprio_key!r} has {proprio.shape[0]} steps but {action_key!r} has '
                     f'{actions.shape[0]}; they must match')
  for key, count in frame_counts.items():
    if count != actions.shape[0]:
      raise EpisodeLengthError(f'{path}: {key} has {count} frames but {action_key!r} has {actions.shape[0]} steps; '
                       'they must match')


def require_keys(path: str, group, keys) -> None:
  """Raises ValueError naming the file and the first missing HDF5 key."""
  for key in keys:
    if key not in group:
      where = getattr(group, 'name', '/')
      raise ValueError(f'{path}: missing key {key!r} in HDF5 group {where!r}')


class EpisodeFrameCache:
  """A small per-process LRU of decoded episodes (frames of lazily loaded MP4/JPEG episodes)."""

  def __init__(self, max_episodes: int = 8):
    self._get = functools.lru_cache(maxsize=max_episodes)(self._load)
    self._episodes: dict[int, Episode] = {}

  def _load(self, key: int):
    return self._episodes[key].load_frames()

  def frames(self, key: int, episode: Episode) -> Mapping[str, np.ndarray]:
    if episode.frames is not None:
      return episode.frames
    self._episodes[key] = episode
    return self._get(key)

  def __getstate__(self):
    return {'max_episodes': self._get.cache_info().maxsize}

  def __setstate__(self, state):
    self.__init__(state['max_episodes'])
