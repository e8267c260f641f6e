"""A synthetic `EpisodeResult` (smooth frames, random states) for the writers' tests."""

import numpy as np

from cosmos_jax.data import simulator
from cosmos_jax.eval import episode as episode_lib


def episode(num_steps: int, success: bool, size: int = 32) -> episode_lib.EpisodeResult:
  rng = np.random.default_rng(3)
  yy, xx = np.mgrid[:size, :size]
  smooth = np.stack([(xx * 255 // size), (yy * 255 // size), np.full_like(xx, 90)], -1).astype(np.uint8)
  frames = {cam: np.stack([np.roll(smooth, t + k, axis=1) for t in range(num_steps)])
            for k, cam in enumerate(simulator.SIM_CAMERAS)}
  rewards = np.zeros(num_steps)
  if success:
    rewards[-3:] = [2, 3, 4]
  return episode_lib.EpisodeResult(
      task_description='transfer cube', seed=5, frames=frames, qpos=rng.normal(size=(num_steps, 14)),
      qvel=rng.normal(size=(num_steps, 14)), actions=rng.normal(size=(num_steps, 14)), rewards=rewards,
      query_steps=np.arange(0, num_steps, 4), values=rng.uniform(size=(num_steps + 3) // 4),
      future_images=[None] * ((num_steps + 3) // 4), max_reward=4.0, query_seconds=[0.0], policy_timings=[],
      render_seconds=0.0, sim_seconds=0.0, wall_seconds=0.0)
