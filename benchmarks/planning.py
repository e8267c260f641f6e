"""Best-of-N planning throughput: the batched planner (all candidates in one program) vs a serial loop over
candidates through the single-query functions, and the DiT passes a planning query costs.

Model: the tiny random DiT (tests/policy/planning_fixture.py: 64 wide, 2 blocks, ALOHA layout, 8x8 latent per slot,
8 text tokens), as policy and planning model. Setting: the main ALOHA planning command (N = 8, action 10 steps,
future ensemble (1, 3, 5), value ensemble (1..5) per future sample, majority_mean, V(s') masking).

Reported: candidates per second (after compilation; median of --repeats) for both paths and their ratio; DiT passes
per candidate (counted at run time with a counting stand-in network: rows processed / N) and the number of
sequential batched DiT invocations per query (the latency-relevant count: ensemble members that share a sampler
schedule run in one invocation).

Usage: python benchmarks/planning.py [--out benchmarks/results/planning.json] [--repeats 3] [--candidates 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cosmos_jax.policy import planning  # pylint: disable=g-import-not-at-top
from benchmarks import planning_fixture as fx  # pylint: disable=g-import-not-at-top


def count_passes(cfg: planning.PlanningConfig) -> tuple[float, int]:
  """(DiT passes per candidate, sequential batched DiT invocations per query), counted at run time."""
  rows = []

  def counting_net(params, x, timesteps, context, condition_mask):
    jax.debug.callback(lambda b: rows.append(int(b)), x.shape[0])
    return jnp.tanh(x * params)

  context, latent, proprio = fx.observation()
  out = planning.make_planner(counting_net, counting_net, fx.LAYOUT, cfg)(
      jnp.float32(0.5), jnp.float32(0.3), context, latent, proprio, planning.noise_bank(cfg, fx.LATENT_SHAPE))
  jax.block_until_ready(out)
  return sum(rows) / cfg.num_candidates, len(rows)


def timed(fn, repeats: int) -> tuple[float, list[float]]:
  t0 = time.perf_counter()
  jax.block_until_ready(fn())  # compile + warm-up
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, times


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='benchmarks/results/planning.json')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--candidates', type=int, default=8)
  args = parser.parse_args()

  cfg = planning.PlanningConfig.main_command(num_candidates=args.candidates)
  policy_net, policy_params = fx.tiny_model(0)
  planning_net, planning_params = fx.tiny_model(1)
  context, latent, proprio = fx.observation()
  noise = planning.noise_bank(cfg, fx.LATENT_SHAPE)
  planner = planning.make_planner(policy_net, planning_net, fx.LAYOUT, cfg)

  batched_first, batched = timed(lambda: planner(policy_params, planning_params, context, latent, proprio, noise),
                                 args.repeats)
  serial_first, serial = timed(lambda: planning.plan_serially(
      policy_net, policy_params, planning_net, planning_params, context, latent, proprio, noise, layout=fx.LAYOUT,
      cfg=cfg)['scores'], args.repeats)
  passes_per_candidate, invocations = count_passes(cfg)

  n = cfg.num_candidates
  batched_s, serial_s = statistics.median(batched), statistics.median(serial)
  result = dict(
      config=dict(dataclasses.asdict(cfg), model='tiny DiT (64 wide, 2 blocks), ALOHA layout, latent 11x8x8x16',
                  sampler=dataclasses.asdict(cfg.sampler)),
      batched=dict(seconds_per_query=batched_s, candidates_per_second=n / batched_s, first_call_seconds=batched_first,
                   all_seconds=batched),
      serial=dict(seconds_per_query=serial_s, candidates_per_second=n / serial_s, first_call_seconds=serial_first,
                  all_seconds=serial),
      speedup_batched_over_serial=serial_s / batched_s,
      dit_passes_per_candidate=passes_per_candidate,
      dit_passes_per_candidate_formula=cfg.dit_passes_per_candidate(),
      dit_passes_per_query=passes_per_candidate * n,
      sequential_batched_dit_invocations_per_query=invocations,
      host=platform.node(), backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
      jax=jax.__version__,
  )
  print(f'best-of-{n} planning, tiny model, {jax.default_backend()} ({len(jax.devices())} device(s))')
  print(f'{"path":<10} {"s/query":>9} {"cand/s":>8} {"first call s":>13}')
  print(f'{"batched":<10} {batched_s:9.3f} {n / batched_s:8.2f} {batched_first:13.1f}')
  print(f'{"serial":<10} {serial_s:9.3f} {n / serial_s:8.2f} {serial_first:13.1f}')
  print(f'batched / serial throughput ratio: {serial_s / batched_s:.2f}x')
  print(f'DiT passes per candidate: {passes_per_candidate:g} (formula {cfg.dit_passes_per_candidate()}); per query '
        f'{passes_per_candidate * n:g}; sequential batched DiT invocations per query: {invocations}')
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
