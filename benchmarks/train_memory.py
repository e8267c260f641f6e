"""Compiled per-device memory of the 2B ALOHA train step on a mesh of 8 fake CPU devices, for fsdp = 1, 2, 8.

Nothing real is allocated: the state, VAE parameters and batch are `jax.eval_shape` abstractions; the step is
lowered and compiled with the trainer's shardings, and `compiled.memory_analysis()` reports the per-device buffers
(arguments, outputs, temporaries). The CPU backend's numbers show how FSDP divides parameters and optimizer state;
GPU/TPU temporaries differ (fusion, bf16 kernels), so treat them as a sharding check, not an HBM budget.

Usage: python benchmarks/train_memory.py [--fsdp 1 2 8] [--per_device_batch 1] [--remat dots_no_batch full]
                                        [--out benchmarks/results/train_memory.json]
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
from cosmos_jax.nn import dit as dit_lib
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.train import optim
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


def measure(fsdp: int, per_device_batch: int, remat: str) -> dict:
  config = aloha.get_config()
  config.mesh.fsdp = fsdp
  config.model.remat_policy = remat
  cfg = trainer.step_config(config)
  tx = optim.make_optimizer(config.optim)
  mesh = sharding_lib.make_mesh(-1, fsdp)
  params = dit_lib.abstract_params(cfg.dit)
  state = jax.eval_shape(lambda p: state_lib.init_state(p, tx, 0), params)
  vae_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, cfg.vae.dtype), vae_lib.abstract_params(cfg.vae))
  batch = abstract_batch(cfg.layout, per_device_batch * jax.device_count())
  step, _ = state_lib.jit_train_step(cfg, tx, mesh, state, vae_params, batch)
  t0 = time.perf_counter()
  compiled = step.lower(state, vae_params, batch).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  gib = lambda n: n / 2**30
  return dict(fsdp=fsdp, data=jax.device_count() // fsdp, per_device_batch=per_device_batch, remat=remat,
              compile_s=compile_s,
              argument_gib=gib(mem.argument_size_in_bytes), output_gib=gib(mem.output_size_in_bytes),
              temp_gib=gib(mem.temp_size_in_bytes), alias_gib=gib(mem.alias_size_in_bytes),
              total_gib=gib(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                            - mem.alias_size_in_bytes))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--fsdp', type=int, nargs='+', default=[1, 2, 8])
  parser.add_argument('--per_device_batch', type=int, default=1)
  parser.add_argument('--remat', nargs='+', default=[aloha.get_config().model.remat_policy],
                      help='remat policies to compare (cosmos_jax.nn.dit.REMAT_POLICIES)')
  parser.add_argument('--out', default='benchmarks/results/train_memory.json')
  args = parser.parse_args()
  rows = [measure(f, args.per_device_batch, r) for r in args.remat for f in args.fsdp]
  header = f"{'remat':>14}{'fsdp':>5}{'data':>6}{'batch/dev':>10}{'args GiB':>10}{'out GiB':>9}{'temp GiB':>10}{'total GiB':>11}{'compile s':>11}"
  print(header)
  print('-' * len(header))
  for r in rows:
    print(f"{r['remat']:>14}{r['fsdp']:>5}{r['data']:>6}{r['per_device_batch']:>10}{r['argument_gib']:>10.2f}{r['output_gib']:>9.2f}"
          f"{r['temp_gib']:>10.2f}{r['total_gib']:>11.2f}{r['compile_s']:>11.1f}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(devices=jax.device_count(), backend=jax.default_backend(), rows=rows), indent=2))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
