"""The GPU suite: the figures issue 17 asks for, on one H100/H200, in one run and one JSON (`benchmarks/gpu_suite.sh`).

Sections (each timed, each failure recorded without stopping the others):
  dit_forward    the 2B DiT forward in bf16 at the ALOHA shape (B=1, 11 latent frames of 28x28, 512 text tokens),
                 XLA attention against cuDNN flash attention (benchmarks/dit_forward.py's measurement).
  action_query   one ALOHA action query end to end through the policy runner (224 px images, VAE encode of the
                 41-frame sequence, 10 DiT sampler passes, readout), with and without the future-image decode;
                 random weights of the real shapes (the time does not depend on the values), bf16.
  planning       best-of-N planning with the main ALOHA planning command (N=8, steps 10/5/5, ensembles 3 x 5), all
                 candidates batched on the one GPU.
  train_step     the 2B ALOHA train step (bf16 compute, fp32 masters, the config's remat) at the largest per-device
                 batch that fits: memory is affine in the batch, so two compile-only probes (nothing allocated)
                 predict the largest candidate under 90% of the device memory and a third confirms it; then
                 benchmarks/train_step.py's timing, TFLOP/s and MFU (3 x the DiT forward FLOPs, dense bf16 peak).
  vae_encode     the Wan2.1 VAE encode of the 41x224x224 policy sequence in bf16, chunked and whole-sequence
                 (benchmarks/vae.py's case: time and XLA memory analysis), outputs compared.
Targets (issue 17): action query <= 200 ms, N=8 planning <= 12 s, training >= 45% MFU; the JSON says which are met.

The whole suite is meant to finish within 8 minutes on one H100/H200 (`--budget-s`, default 480: a section that
would start after the budget is spent is skipped and listed as such). JAX's persistent compilation cache is on
in a fresh temporary directory, so a program compiled twice (the runners share programs; the train-step probe
and the timed step) compiles once.

--dry-run runs every section through the same code at tiny shapes on the CPU (tiny DiT and width-8 VAE, 64 px
images, 2 planning candidates, the tiny train config, 9 frames of 16 px for the VAE) in about a minute; the
default test suite runs it and checks the JSON.

Usage: benchmarks/gpu_suite.sh [--dry-run] [--out benchmarks/results/gpu_suite.json] [--budget-s 480]
                               [--sections dit_forward,action_query,planning,train_step,vae_encode]
                               [--train-batch N] [--attention cudnn]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))

SECTIONS = ('dit_forward', 'action_query', 'planning', 'train_step', 'vae_encode')
TARGETS = {'action_query_ms': ('<=', 200.0), 'planning_s': ('<=', 12.0), 'train_mfu': ('>=', 0.45)}
ALOHA_LATENT = (1, 11, 28, 28)  # B, T', H', W' of the ALOHA policy sequence at 224 px
TEXT_TOKENS = 512


def _observation(runner, seed: int) -> dict:
  import numpy as np
  rng = np.random.default_rng(seed)
  protocol = runner.protocol
  size = protocol.image_size
  obs = {f: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for f in protocol.image_fields}
  lo, hi = protocol.statistics['proprio_min'], protocol.statistics['proprio_max']
  obs['proprio'] = (lo + rng.uniform(0.2, 0.8, lo.shape) * (hi - lo)).astype(np.float32)
  obs['task_description'] = protocol.tasks[0]
  return obs


def _time_requests(runner, repeats: int) -> dict:
  """Warm-up (compilation) then `repeats` requests with fresh random observations: wall per request and the
  runner's per-stage timing (medians)."""
  compile_s = runner.warmup()
  times, stages = [], []
  for i in range(repeats):
    obs = _observation(runner, i)
    start = time.perf_counter()
    response = runner.act(obs)
    times.append(time.perf_counter() - start)
    stages.append(response['timing'])
  keys = [k for k in stages[0] if all(k in s for s in stages)]
  return dict(warmup_s=compile_s, median_s=statistics.median(times), min_s=min(times), repeats=repeats,
              stage_median_s={k: statistics.median(s[k] for s in stages) for k in keys})


class Suite:

  def __init__(self, args):
    self.args = args
    self.dry = args.dry_run
    self._models = None

  # Models ---------------------------------------------------------------------------------------------------------

  def models(self):
    """The random-weight 2B policy (bf16) with the real VAE and the bundled ALOHA statistics and text store."""
    if self._models is None:
      import common
      from cosmos_jax.data import bundled
      from cosmos_jax.data import stats as stats_lib
      from cosmos_jax.data import text as text_lib
      from cosmos_jax.nn import dit as dit_lib
      from cosmos_jax.nn import vae as vae_lib
      from cosmos_jax.serve import factory
      dit_cfg = dit_lib.DiTConfig.preset('2B', dtype='bfloat16', param_dtype='bfloat16', attention=self.args.attention)
      vae_cfg = vae_lib.VAEConfig.policy()
      sample = bundled.sample_dir('aloha')
      self._models = factory.PolicyModels(
          dit_cfg=dit_cfg, dit_params=common.random_params(dit_lib.abstract_params(dit_cfg), 0),
          vae_cfg=vae_cfg, vae_params=common.random_params(vae_lib.abstract_params(vae_cfg), 1),
          statistics=stats_lib.load_statistics(sample / stats_lib.STATISTICS_FILENAME),
          text_store=text_lib.TextStore.load(bundled.text_store_dir('aloha')), name='random-weight 2B policy')
    return self._models

  def runner(self, **kwargs):
    from cosmos_jax.serve import runner as runner_lib
    if self.dry:
      return runner_lib.PolicyRunner.tiny(image_size=64, action_steps=10, **kwargs)
    kwargs.pop('with_planning_model', None)  # the policy weights stand in for the planning model
    return runner_lib.PolicyRunner.build(self.models(), image_size=224, action_steps=10, **kwargs)

  # Sections -------------------------------------------------------------------------------------------------------

  def dit_forward(self) -> dict:
    import dit_forward as bench_lib
    from cosmos_jax.nn import dit as dit_lib
    rows = []
    for requested in ('xla', 'cudnn'):
      used = 'xla' if self.dry else requested  # cuDNN needs a GPU: the dry run times XLA twice
      cfg = dit_lib.DiTConfig.preset('tiny' if self.dry else '2B', dtype='bfloat16', param_dtype='bfloat16',
                                     attention=used)
      shape = (1, 3, 8, 8) if self.dry else ALOHA_LATENT
      row = bench_lib.bench(f'DiT forward bf16, {requested} attention', cfg, shape, 8 if self.dry else TEXT_TOKENS,
                            1 if self.dry else 10)
      rows.append(dict(row, attention_requested=requested))
    return dict(rows=rows, xla_ms=rows[0]['median_s'] * 1e3, cudnn_ms=rows[1]['median_s'] * 1e3,
                cudnn_speedup=rows[0]['median_s'] / rows[1]['median_s'])

  def action_query(self) -> dict:
    repeats = 1 if self.dry else 10
    with_decode = _time_requests(self.runner(decode_future_images=True), repeats)
    without = _time_requests(self.runner(decode_future_images=False), repeats)
    return dict(with_future_image_decode=with_decode, without_future_image_decode=without,
                action_query_ms=without['median_s'] * 1e3,
                action_query_with_decode_ms=with_decode['median_s'] * 1e3)

  def planning(self) -> dict:
    from cosmos_jax.policy import planning as planning_lib
    config = planning_lib.PlanningConfig.main_command()
    if self.dry:
      config = planning_lib.PlanningConfig.main_command(num_candidates=2, action_steps=2, future_steps=(1,),
                                                        value_steps=(1,))
    timing = _time_requests(self.runner(planning=config, with_planning_model=True), 1 if self.dry else 3)
    return dict(timing, num_candidates=config.num_candidates, planning_s=timing['median_s'],
                config=dict(action_steps=config.action_steps, future_steps=list(config.future_steps),
                            value_steps=list(config.value_steps), aggregation=config.aggregation))

  def train_step(self) -> dict:
    import jax
    import train_step as bench_lib
    from configs import aloha
    config = aloha.get_config('tiny' if self.dry else None)
    config.mesh.fsdp = 1
    if not self.dry:
      config.model.attention = self.args.attention
    stats = jax.devices()[0].memory_stats() or {}
    # The dry run's CPU has no device memory figure: a small stand-in limit exercises the same search.
    limit_gib = stats['bytes_limit'] / 2**30 if 'bytes_limit' in stats else self.args.dry_memory_gib
    budget_gib = 0.9 * limit_gib
    candidates = sorted({int(b) for b in self.args.train_batches.split(',')})
    probes = {}

    def probe(batch):
      if batch not in probes:
        probes[batch] = bench_lib.compiled_memory_gib(config, batch)
      return probes[batch]

    if self.args.train_batch:
      batch = self.args.train_batch
    else:
      small, large = candidates[0], candidates[min(1, len(candidates) - 1)]
      per_sample = (probe(large) - probe(small)) / max(large - small, 1)
      fixed = probe(small) - per_sample * small
      fitting = [b for b in candidates if fixed + per_sample * b <= budget_gib] or [candidates[0]]
      batch = fitting[-1]
      while probe(batch) > budget_gib and batch != candidates[0]:
        batch = max(b for b in candidates if b < batch)
    row = bench_lib.run('aloha 2B bf16' if not self.dry else 'aloha tiny', config, batch, 1 if self.dry else 5)
    return dict(row, per_device_batch=batch, memory_limit_gib=limit_gib, memory_budget_gib=budget_gib,
                probe_memory_gib={str(k): v for k, v in sorted(probes.items())}, train_mfu=row['mfu'],
                remat_policy=config.model.remat_policy, attention=config.model.attention)

  def vae_encode(self) -> dict:
    import vae as bench_lib
    rows = {}
    with tempfile.TemporaryDirectory(prefix='gpu_suite_vae_') as tmp:
      for path in ('chunked', 'whole'):
        case = dict(op='encode', path=path, frames=9 if self.dry else 41, size=16 if self.dry else 224,
                    base_dim=8 if self.dry else 96, batch=1, dtype='bfloat16', repeats=1 if self.dry else 3,
                    compile_only=False, out_file=f'{tmp}/{path}.npz')
        rows[path] = bench_lib.run_case(case)
      rows['chunked_vs_whole'] = bench_lib.compare(f'{tmp}/chunked.npz', f'{tmp}/whole.npz')
    return dict(rows, vae_encode_s=rows['chunked']['median_s'], vae_encode_whole_s=rows['whole']['median_s'])


def summarise(sections: dict) -> dict:
  pick = {'dit_forward': ('xla_ms', 'cudnn_ms', 'cudnn_speedup'),
          'action_query': ('action_query_ms', 'action_query_with_decode_ms'), 'planning': ('planning_s',),
          'train_step': ('train_mfu', 'per_device_batch', 'median_step_s'),
          'vae_encode': ('vae_encode_s', 'vae_encode_whole_s')}
  summary = {}
  for section, keys in pick.items():
    result = sections.get(section, {})
    for key in keys:
      if key in result:
        summary[f'{section}.{key}' if key in ('median_step_s', 'per_device_batch') else key] = result[key]
  met = {}
  for key, (op, target) in TARGETS.items():
    value = summary.get(key)
    met[key] = None if value is None else (value <= target if op == '<=' else value >= target)
  return dict(figures=summary, targets={k: f'{op} {v}' for k, (op, v) in TARGETS.items()}, target_met=met)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dry-run', action='store_true', help='tiny shapes on the CPU, same code path')
  parser.add_argument('--out', default='benchmarks/results/gpu_suite.json')
  parser.add_argument('--budget-s', type=float, default=480.0)
  parser.add_argument('--sections', default=','.join(SECTIONS))
  parser.add_argument('--attention', default='cudnn', choices=['xla', 'cudnn'],
                      help='attention of the 2B policy and training rows')
  parser.add_argument('--train-batch', type=int, default=0, help='per-device training batch (skips the search)')
  parser.add_argument('--train-batches', default=None, help='candidate per-device batches for the search')
  parser.add_argument('--dry-memory-gib', type=float, default=1.0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.train_batches is None:
    args.train_batches = '1,2' if args.dry_run else '1,2,4,6,8,12,16,24,32,48,64'
  wanted = [s for s in args.sections.split(',') if s]
  unknown = sorted(set(wanted) - set(SECTIONS))
  if unknown:
    parser.error(f'unknown sections {unknown}; known: {list(SECTIONS)}')

  from cosmos_jax import host_memory
  host_memory.retain_freed_memory()  # as the commands run (before JAX starts its CPU client)
  import jax
  from cosmos_jax import compilation_cache
  if not args.dry_run and jax.default_backend() != 'gpu':
    print(f'no GPU visible (backend {jax.default_backend()}); run with --dry-run for the CPU check', file=sys.stderr)
    return 2
  start = time.perf_counter()
  result = dict(suite='gpu_suite', dry_run=args.dry_run, command=' '.join(['benchmarks/gpu_suite.sh', *(argv or
                sys.argv[1:])]), device=jax.devices()[0].device_kind, backend=jax.default_backend(),
                devices=jax.device_count(), jax=jax.__version__, host=platform.node(), budget_s=args.budget_s,
                load_average=os.getloadavg()[0], sections={})
  suite = Suite(args)
  with tempfile.TemporaryDirectory(prefix='gpu_suite_cache_') as cache_dir:
    compilation_cache.enable(cache_dir)
    for name in SECTIONS:
      if name not in wanted:
        continue
      elapsed = time.perf_counter() - start
      if elapsed > args.budget_s:
        result['sections'][name] = dict(status='skipped', reason=f'budget of {args.budget_s:.0f} s spent')
        continue
      section_start = time.perf_counter()
      try:
        out = dict(getattr(suite, name)(), status='ok')
      except Exception as e:  # one failing section must not lose the others' figures
        out = dict(status='error', error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc()[-4000:])
      out['elapsed_s'] = time.perf_counter() - section_start
      result['sections'][name] = out
      print(f"{name:14s} {out['status']:6s} {out['elapsed_s']:7.1f} s", flush=True)
  result['elapsed_s'] = time.perf_counter() - start
  result.update(summarise(result['sections']))
  for key, value in result['figures'].items():
    print(f'  {key:32s} {value:.4g}' if isinstance(value, float) else f'  {key:32s} {value}')
  for key, met in result['target_met'].items():
    print(f'  target {key} {result["targets"][key]}: {"met" if met else "not met" if met is not None else "n/a"}')
  print(f"total {result['elapsed_s']:.1f} s")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1, default=str))
  print(f'wrote {out}')
  return 0 if all(s.get('status') == 'ok' for s in result['sections'].values()) else 1


if __name__ == '__main__':
  sys.exit(main())
