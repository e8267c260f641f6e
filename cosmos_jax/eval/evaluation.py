"""An evaluation run: episodes over seeds, each written out, and a summary.

Per episode i (seed s_i):
  <out>/videos/episode_<i>.mp4         left wrist | right wrist | cam_high (| predicted future cam_high)
  <out>/plots/episode_<i>_value.png    predicted value at every query against reward / max reward
  <out>/rollouts/episode_<i>.hdf5      the ALOHA rollout format (planning-model training data)
and <out>/summary.json: success rate, mean highest reward, per-episode success / return / length / values /
timings, and per episode the steps at which the official real-robot client would have paused for safety (an arm
joint target more than 0.15 rad above the current position): a policy that evaluates well here but jumps like that
would stall on the robot.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping

import numpy as np

from cosmos_jax.data import simulator
from cosmos_jax.eval import episode as episode_lib
from cosmos_jax.eval import policies
from cosmos_jax.eval import report
from cosmos_jax.eval import rollout

SUMMARY_FILENAME = 'summary.json'


def _finite_or_none(x: float):
  return float(x) if np.isfinite(x) else None


def episode_summary(episode: episode_lib.EpisodeResult, index: int, files: Mapping[str, str]) -> dict:
  return {
      'index': index,
      'seed': episode.seed,
      'success': episode.success,
      'return': episode.episode_return,
      'highest_reward': episode.highest_reward,
      'length': episode.length,
      'num_queries': len(episode.query_steps),
      'safety_pause_steps': episode.safety_pause_steps,
      'query_steps': episode.query_steps.tolist(),
      'values': [_finite_or_none(v) for v in episode.values],
      'timings': {
          'wall_seconds': episode.wall_seconds,
          'query_seconds': episode.query_seconds,
          'policy_timings': episode.policy_timings,
          'render_seconds': episode.render_seconds,
          'sim_seconds': episode.sim_seconds,
      },
      **files,
  }


def episode_seeds(config) -> list[int]:
  """config.seeds when given, else seed, seed + 1, ... (config.episodes of them)."""
  if config.seeds:
    return [int(s) for s in config.seeds]
  if config.episodes < 1:
    raise ValueError(f'episodes must be >= 1, got {config.episodes}')
  return list(range(config.seed, config.seed + config.episodes))


def evaluate(policy: episode_lib.Policy, config, *, policy_name: str = '',
             log: Callable[[str], None] | None = print) -> dict:
  """Runs one episode per seed of `config` (configs/eval/aloha.py), writes the per-episode files under
  `config.out` and returns (and writes) the summary."""
  if not config.out:
    raise ValueError('config.out (the output directory) is required')
  out_dir = config.out
  task_description = config.task_description or simulator.task_description(config.task)
  sim = simulator.AlohaSim(config.task, config.control_hz)
  render_size = (config.render_height, config.render_width)
  seeds = episode_seeds(config)
  start = time.perf_counter()
  per_episode = []
  for i, seed in enumerate(seeds):
    episode = episode_lib.run_episode(
        sim, policy, task_description=task_description, seed=seed, max_steps=config.max_steps,
        num_open_loop_steps=config.num_open_loop_steps, render_size=render_size,
        preprocess_size=config.preprocess_size, image_size=config.image_size)
    outcome = 'success' if episode.success else 'failure'
    files = {
        'video': report.write_video(os.path.join(out_dir, 'videos', f'episode_{i}.mp4'), episode,
                                    config.control_hz),
        'value_plot': report.write_plot(os.path.join(out_dir, 'plots', f'episode_{i}_value.png'), episode,
                                        f'{config.task} episode {i} (seed {seed}): {outcome}'),
        'rollout': rollout.save_rollout(os.path.join(out_dir, 'rollouts', f'episode_{i}.hdf5'), episode,
                                        policy_name=policy_name, control_hz=config.control_hz),
    }
    per_episode.append(episode_summary(episode, i, {k: os.path.relpath(v, out_dir) for k, v in files.items()}))
    if log:
      log(f'episode {i} (seed {seed}): success={episode.success} highest reward={episode.highest_reward:g} '
          f'length={episode.length} queries={len(episode.query_steps)} wall={episode.wall_seconds:.1f}s')
  queries = [s for e in per_episode for s in e['timings']['query_seconds']]
  summary = {
      'task': config.task,
      'task_description': task_description,
      'policy': policy_name,
      'episodes': len(seeds),
      'seeds': seeds,
      'success_rate': float(np.mean([e['success'] for e in per_episode])),
      'mean_highest_reward': float(np.mean([e['highest_reward'] for e in per_episode])),
      'max_reward': sim.max_reward,
      'mean_return': float(np.mean([e['return'] for e in per_episode])),
      'mean_length': float(np.mean([e['length'] for e in per_episode])),
      'config': config.to_dict(),
      'timings': {
          'wall_seconds': time.perf_counter() - start,
          'num_queries': len(queries),
          'first_query_seconds': queries[0] if queries else None,  # includes compilation for an in-process policy
          'mean_query_seconds_after_first': float(np.mean(queries[1:])) if len(queries) > 1 else None,
      },
      'per_episode': per_episode,
  }
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, SUMMARY_FILENAME), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2)
  return summary


def run(config) -> dict:
  """`python -m cosmos_jax.eval.aloha_sim` as a function: the policy of `config.policy` evaluated, the success
  rate printed."""
  policy, name = policies.make_policy(config)
  summary = evaluate(policy, config, policy_name=name)
  print(f'success rate {summary["success_rate"]:.3f}, mean highest reward {summary["mean_highest_reward"]:.2f} '
        f'over {summary["episodes"]} episodes; summary in {os.path.join(config.out, SUMMARY_FILENAME)}')
  return summary
