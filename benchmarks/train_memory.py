"""Compiled per-device memory of the 2B ALOHA train step on a mesh of 8 fake CPU devices: full fine-tuning against
LoRA (configs/aloha.py:lora: rank-24 adapters, frozen bf16 base), for fsdp = 1, 2, 8.

Nothing real is allocated: the state, VAE parameters and batch are `jax.eval_shape` abstractions; the step is
lowered and compiled with the trainer's shardings, and `compiled.memory_analysis()` reports the per-device buffers
(arguments, outputs, temporaries). The CPU backend's numbers show how FSDP divides parameters and optimizer state;
GPU/TPU temporaries differ (fusion, bf16 kernels), so treat them as a sharding check, not an HBM budget.

With --fit (default on), each setting is also compiled at per-device batches 4 and 8: the growth per sample between
them predicts the largest per-device batch whose compiled total fits 80 GB and 24 GB, and that batch is compiled to
confirm it (stepping down while it does not fit). Small batches do not give the slope: the peak of the step is the
larger of the activations' peak and the optimizer update's, and at fsdp 1 the latter hides the former up to several
samples.

Usage: python benchmarks/train_memory.py [--modes full lora] [--fsdp 1 2 8] [--per_device_batch 1] [--no-fit]
                                        [--remat dots_no_batch full] [--out benchmarks/results/train_memory.json]
"""

from __future__ import annotations

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root, for configs/
from configs import aloha  # pylint: disable=wrong-import-position
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.train import sharding as sharding_lib
from cosmos_jax.train import state as state_lib
from cosmos_jax.train import trainer


def abstract_batch(layout, global_batch: int, image_size: int = 224, text_tokens: int = 512) -> dict:
  s, g = image_size, global_batch
  return {
      'video': jax.ShapeDtypeStruct((g, layout.state_t, s, s, 3), jnp.uint8),
      't5_text_embeddings': jax.ShapeDtypeStruct((g, text_tokens, 1024), jnp.bfloat16),
      'actions': jax.ShapeDtypeStruct((g, layout.chunk_size, layout.action_dim), jnp.float32),
      'proprio': jax.ShapeDtypeStruct((g, layout.proprio_dim), jnp.float32),
      'future_proprio': jax.ShapeDtypeStruct((g, layout.proprio_dim), jnp.float32),
      'value_function_return': jax.ShapeDtypeStruct((g,), jnp.float32),
      'rollout_data_mask': jax.ShapeDtypeStruct((g,), jnp.int32),
      'world_model_sample_mask': jax.ShapeDtypeStruct((g,), jnp.int32),
      'value_function_sample_mask': jax.ShapeDtypeStruct((g,), jnp.int32),
  }


MODES = ('full', 'lora')
BUDGETS_GB = (80, 24)


def measure(fsdp: int, per_device_batch: int, remat: str, mode: str = 'full') -> dict:
  config = aloha.get_config('lora' if mode == 'lora' else None)
  config.mesh.fsdp = fsdp
  config.model.remat_policy = remat
  cfg = trainer.step_config(config)
  tx = trainer.make_optimizer(config)
  mesh = sharding_lib.make_mesh(-1, fsdp)
  state = trainer.abstract_train_state(config, cfg, tx)
  trained = state_lib.trained_params(state.params)
  vae_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, cfg.vae.dtype), vae_lib.abstract_params(cfg.vae))
  batch = abstract_batch(cfg.layout, per_device_batch * jax.device_count())
  step, _ = state_lib.jit_train_step(cfg, tx, mesh, state, vae_params, batch)
  t0 = time.perf_counter()
  compiled = step.lower(state, vae_params, batch).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  gib = lambda n: n / 2**30
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  return dict(mode=mode, fsdp=fsdp, data=jax.device_count() // fsdp, per_device_batch=per_device_batch, remat=remat,
              compile_s=compile_s, trained_params=sum(x.size for x in jax.tree.leaves(trained)),
              params_gib=gib(nbytes(state.params)), opt_state_gib=gib(nbytes(state.opt_state)),
              argument_gib=gib(mem.argument_size_in_bytes), output_gib=gib(mem.output_size_in_bytes),
              temp_gib=gib(mem.temp_size_in_bytes), alias_gib=gib(mem.alias_size_in_bytes),
              total_gib=gib(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                            - mem.alias_size_in_bytes))


FIT_BATCHES = (4, 8)


def largest_batches(total_at, smallest_total: float) -> dict:
  """Largest per-device batch under each budget: predicted from the compiled totals at FIT_BATCHES, then compiled
  (`total_at(b)` -> GiB) and stepped down until it fits. `smallest_total`: the total at batch 1."""
  b1, b2 = FIT_BATCHES
  t1, t2 = total_at(b1), total_at(b2)
  per_sample = (t2 - t1) / (b2 - b1)
  fixed = t2 - per_sample * b2
  out = {'per_sample_gib': per_sample, 'fixed_gib': fixed, 'fit_totals_gib': {b1: t1, b2: t2}}
  for budget in BUDGETS_GB:
    limit = budget * 1e9 / 2**30
    batch, total = 0, None
    if smallest_total <= limit and per_sample > 0:
      batch = max(1, int((limit - fixed) // per_sample))
      total = total_at(batch)
      while batch > 1 and total > limit:
        batch -= 1
        total = total_at(batch)
      if total > limit:
        batch = 0
    out[f'max_batch_{budget}gb'] = batch
    out[f'total_gib_at_max_{budget}gb'] = total
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--modes', nargs='+', default=list(MODES), choices=MODES)
  parser.add_argument('--fit', action=argparse.BooleanOptionalAction, default=True,
                      help='also compile at twice the batch, for the largest batch under 80 and 24 GB')
  parser.add_argument('--fsdp', type=int, nargs='+', default=[1, 2, 8])
  parser.add_argument('--per_device_batch', type=int, default=1)
  parser.add_argument('--remat', nargs='+', default=[aloha.get_config().model.remat_policy],
                      help='remat policies to compare (cosmos_jax.nn.dit.REMAT_POLICIES)')
  parser.add_argument('--out', default='benchmarks/results/train_memory.json')
  args = parser.parse_args()
  rows = []
  for mode in args.modes:
    for r in args.remat:
      for f in args.fsdp:
        row = measure(f, args.per_device_batch, r, mode)
        if args.fit:
          row.update(largest_batches(lambda b: measure(f, b, r, mode)['total_gib'], row['total_gib']))
        rows.append(row)
        print(f'measured {mode} remat={r} fsdp={f}', flush=True)
  header = (f"{'mode':>5}{'remat':>8}{'fsdp':>5}{'data':>5}{'batch/dev':>10}{'trained':>9}{'params GiB':>11}"
            f"{'opt GiB':>8}{'args GiB':>9}{'temp GiB':>9}{'total GiB':>10}{'GiB/sample':>11}{'max b 80GB':>11}"
            f"{'max b 24GB':>11}{'compile s':>10}")
  print(header)
  print('-' * len(header))
  for r in rows:
    fit = (f"{r['per_sample_gib']:>11.2f}{r['max_batch_80gb']:>11}{r['max_batch_24gb']:>11}" if 'per_sample_gib' in r
           else f"{'-':>11}{'-':>11}{'-':>11}")
    print(f"{r['mode']:>5}{r['remat']:>8}{r['fsdp']:>5}{r['data']:>5}{r['per_device_batch']:>10}"
          f"{r['trained_params'] / 1e6:>8.1f}M{r['params_gib']:>11.2f}{r['opt_state_gib']:>8.2f}{r['argument_gib']:>9.2f}"
          f"{r['temp_gib']:>9.2f}{r['total_gib']:>10.2f}{fit}{r['compile_s']:>10.1f}")
  print('params/opt GiB: the whole (global) train state; args/temp/total: per device, compiled (CPU backend). '
        f'max b: largest per-device batch whose compiled total fits the budget (predicted from batches {FIT_BATCHES}, '
        'then compiled); GiB/sample: the growth between those batches.')
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(devices=jax.device_count(), backend=jax.default_backend(), budgets_gb=BUDGETS_GB,
                                 rows=rows), indent=2))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
