"""What a LIBERO evaluation of the released policy costs on this machine: the policy query's parts at the LIBERO
shapes, measured, and the whole official evaluation extrapolated from them (labelled as such).

Rows (random weights of the real shapes; the timing does not depend on the values):
  dit 2B fp32         one 2B DiT forward at the LIBERO latent shape (B=1, 9 latent frames of 28x28, 512 text
                      tokens); a query without planning runs `action_steps` (5) of them.
  vae encode / decode the Wan2.1 VAE (base_dim 96) on the LIBERO policy sequence (33 pixel frames -> 9 latents) and
                      the decode of the future images: FLOPs from XLA at 224 px; time measured at --vae-size (64 by
                      default on CPU: the 224 px encode takes many minutes here) and scaled by FLOPs to 224 px.
  sim step            one LIBERO simulator step with two cameras at --resolution (when $COSMOS_JAX_LIBERO_PYTHON is
                      set), the median over --sim-steps.
The table ends with the estimate of one query, one libero_spatial episode (220 steps, 14 queries of 16 actions)
and the full four-suite evaluation (2,000 episodes).

Usage: python benchmarks/libero_eval_cost.py [--out benchmarks/results/libero_eval_cost.json] [--vae-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import dit_forward  # noqa: E402  pylint: disable=g-import-not-at-top
import vae as vae_bench  # noqa: E402  pylint: disable=g-import-not-at-top
from cosmos_jax.nn import dit  # noqa: E402  pylint: disable=g-import-not-at-top
from cosmos_jax.nn import vae  # noqa: E402  pylint: disable=g-import-not-at-top

LIBERO_FRAMES = 33  # blank + 8 slots x 4
LIBERO_LATENT = (1, 9, 28, 28)
ACTION_STEPS = 5  # official num_denoising_steps_action
EPISODES = 4 * 10 * 50
# Official maximum steps + the 10 wait steps; queries = ceil(max_steps / 16) for an episode that runs to the end.
SUITE_STEPS = {'libero_spatial': 220, 'libero_object': 280, 'libero_goal': 300, 'libero_10': 520}


def sim_step_seconds(resolution: int, steps: int) -> float | None:
  from cosmos_jax.eval import libero_sim_env  # pylint: disable=g-import-not-at-top
  if not os.environ.get(libero_sim_env.PYTHON_ENV_VAR):
    return None
  with libero_sim_env.LiberoSim() as sim:
    sim.make('libero_spatial', 0, resolution=resolution)
    sim.reset(0)
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      sim.step([0.0] * 6 + [-1.0])
      times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='benchmarks/results/libero_eval_cost.json')
  parser.add_argument('--vae-size', type=int, default=64)
  parser.add_argument('--resolution', type=int, default=256)
  parser.add_argument('--sim-steps', type=int, default=20)
  args = parser.parse_args()

  rows = {}
  cfg = dit.DiTConfig.preset('2B')
  rows['dit'] = dit_forward.bench('2B fp32', cfg, LIBERO_LATENT, 512, repeats=2)
  vae_cfg = vae.VAEConfig()
  full = vae_bench.run(vae_cfg, LIBERO_FRAMES, 224, 1, 1, compile_only=True)
  small = vae_bench.run(vae_cfg, LIBERO_FRAMES, args.vae_size, 1, 2, compile_only=False)
  vae_rows = {}
  for big, measured in zip(full, small):
    scale = big['gflop'] / measured['gflop']
    vae_rows[big['name']] = dict(gflop_224=big['gflop'], measured_size=args.vae_size,
                                 measured_s=measured['median_s'], estimated_224_s=measured['median_s'] * scale)
  rows['vae'] = vae_rows
  rows['sim_step_s'] = sim_step_seconds(args.resolution, args.sim_steps)

  dit_s = rows['dit']['median_s']
  encode_s = vae_rows['encode policy sequence']['estimated_224_s']
  decode_s = vae_rows.get('decode latents up to last future slot', vae_rows['decode all latents (policy)'])[
      'estimated_224_s']
  query_s = ACTION_STEPS * dit_s + encode_s + decode_s
  sim_s = rows['sim_step_s'] or 0.0
  episode = {suite: (-(-steps // 16)) * query_s + (steps + 10) * sim_s for suite, steps in SUITE_STEPS.items()}
  full_eval_s = sum(500 * s for s in episode.values())
  rows['estimate'] = dict(query_s=query_s, episode_s=episode, full_evaluation_hours=full_eval_s / 3600,
                          note='episodes that run to the suite maximum (failures); successes end earlier')

  print(f'device {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}), backend '
        f'{jax.default_backend()}')
  print(f"{'part':<44}{'seconds':>12}")
  print('-' * 56)
  print(f"{'2B DiT forward fp32, LIBERO shape (measured)':<44}{dit_s:>12.1f}")
  print(f"{'VAE encode 33x224 (FLOP-scaled from ' + str(args.vae_size) + ' px)':<44}{encode_s:>12.1f}")
  print(f"{'VAE decode future images (FLOP-scaled)':<44}{decode_s:>12.1f}")
  print(f"{'sim step, 2 cameras ' + str(args.resolution) + ' px (measured)':<44}{sim_s:>12.2f}")
  print(f"{'one query: 5 DiT steps + encode + decode':<44}{query_s:>12.1f}")
  for suite, seconds in episode.items():
    print(f"{'one failing ' + suite + ' episode (estimate)':<44}{seconds:>12.0f}")
  print(f"{'full 4-suite evaluation, hours (estimate)':<44}{full_eval_s / 3600:>12.0f}")
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  with open(args.out, 'w', encoding='utf-8') as f:
    json.dump(rows, f, indent=2, default=float)


if __name__ == '__main__':
  main()
