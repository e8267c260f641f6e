"""Per-sample targets and the epoch structure of the training mixture (official
cosmos_policy/datasets/dataset_common.py: compute_monte_carlo_returns, get_action_chunk_with_padding,
calculate_epoch_structure, determine_sample_type).

Everything here is plain integer/numpy bookkeeping, shared by every benchmark's reader:

* `value_returns`: v(t) = 2 * gamma^(T-1-t) - 1 for successes (any terminal reward > 0), -1 for failures.
* `future_step`: t' = min(t + chunk, T - 1); `action_chunk`: actions[t:t+chunk], padded by repeating the last
  action of the episode.
* `EpochStructure`: the index space [demos | success rollouts | failure rollouts], each section upsampled by
  modulo, with the official balancing arithmetic (`calculate_epoch_structure`).
* `sample_kind`: which section an index falls in, and for rollout items the fair world-model-vs-value coin.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np


def value_returns(num_steps: int, terminal_reward: float, gamma: float) -> np.ndarray:
  """Monte-Carlo returns of a sparse terminal reward rescaled to [-1, 1], float32 as the official code.

  The recursion G_t = r_t + gamma * G_{t+1} runs in float32 storage with a Python-float accumulator, the same
  arithmetic as `dataset_common.compute_monte_carlo_returns`, so the values are bit-identical.
  """
  if num_steps <= 0:
    raise ValueError(f'value_returns: episode must have at least one step, got {num_steps}')
  rewards = np.zeros(num_steps, np.float32)
  rewards[-1] = terminal_reward
  returns = np.zeros_like(rewards)
  running = 0.0
  for t in range(num_steps - 1, -1, -1):
    running = rewards[t] + gamma * running
    returns[t] = running
  if terminal_reward > 0:
    return 2 * returns / terminal_reward - 1
  return 2 * returns - 1


def future_step(step: int, chunk_size: int, num_steps: int) -> int:
  """t' = min(t + chunk, T - 1): the step whose images, proprio and value are the targets."""
  return min(step + chunk_size, num_steps - 1)


def action_chunk(actions: np.ndarray, step: int, chunk_size: int) -> np.ndarray:
  """actions[t : t + chunk] padded to `chunk` rows by repeating the episode's last action."""
  chunk = actions[step:step + chunk_size]
  missing = chunk_size - chunk.shape[0]
  if missing > 0:
    chunk = np.concatenate([chunk, np.repeat(actions[-1:], missing, axis=0)], axis=0)
  return chunk


class SampleType(enum.IntEnum):
  DEMO = 0
  SUCCESS_ROLLOUT = 1
  FAILURE_ROLLOUT = 2


@dataclasses.dataclass(frozen=True)
class EpochStructure:
  """Section sizes of one epoch: [demo_count | success_count | failure_count]."""

  demo_count: int
  success_count: int
  failure_count: int

  @property
  def length(self) -> int:
    return self.demo_count + self.success_count + self.failure_count

  @classmethod
  def balance(cls, demo_steps: int, success_steps: int, failure_steps: int, demonstration_sampling_prob: float,
              success_rollout_sampling_prob: float) -> 'EpochStructure':
    """The official balancing (dataset_common.py:calculate_epoch_structure): success vs failure first, then demos
    vs rollouts."""
    p_d, p_s = demonstration_sampling_prob, success_rollout_sampling_prob
    if success_steps + failure_steps == 0:
      return cls(demo_steps, 0, 0)
    if p_s == 0 or success_steps == 0:
      success, failure, p_s = 0, failure_steps, 0
    elif p_s == 1 or failure_steps == 0:
      success, failure, p_s = success_steps, 0, 1
    else:
      s_new = int(failure_steps * p_s / (1 - p_s))
      f_new = int(success_steps * (1 - p_s) / p_s)
      success, failure = (s_new, failure_steps) if success_steps < s_new else (success_steps, f_new)
    if p_d == 0 or demo_steps == 0:
      return cls(0, success, failure)
    if p_d == 1:
      return cls(demo_steps, 0, 0)
    d_new = int((success + failure) * p_d / (1 - p_d))
    if demo_steps < d_new:
      return cls(d_new, success, failure)
    r_new = int(demo_steps * (1 - p_d) / p_d)
    return cls(demo_steps, int(r_new * p_s), int(r_new * (1 - p_s)))

  def locate(self, index: int, demo_steps: int, success_steps: int, failure_steps: int) -> tuple[SampleType, int]:
    """Epoch index -> (section, global step index inside that section's data, wrapped by modulo)."""
    if not 0 <= index < self.length:
      raise IndexError(f'epoch index {index} out of range [0, {self.length})')
    if index < self.demo_count:
      return SampleType.DEMO, index % demo_steps
    index -= self.demo_count
    if index < self.success_count:
      return SampleType.SUCCESS_ROLLOUT, index % max(1, success_steps)
    index -= self.success_count
    return SampleType.FAILURE_ROLLOUT, index % max(1, failure_steps)


def world_model_coin(rng: np.random.Generator, p_world_model: float = 0.5) -> bool:
  """The per-rollout-item coin: True -> world-model sample, False -> value sample (official p = 0.5)."""
  return bool(rng.random() < p_world_model)


def step_index(num_steps_per_episode) -> np.ndarray:
  """(total_steps, 2) int64 table of (episode, step) in episode order: the official step-to-episode map."""
  lengths = np.asarray(list(num_steps_per_episode), np.int64)
  episodes = np.repeat(np.arange(lengths.size), lengths)
  starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
  return np.stack([episodes, np.arange(lengths.sum()) - starts], axis=1)
