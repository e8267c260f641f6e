"""Training-step time, TFLOP/s and MFU of the jitted, sharded train step (the trainer's own `jit_train_step`).

CPU: the tiny ALOHA config (configs/aloha.py:tiny, 64×64 images, batch 2). GPU (when one is visible): the 2B ALOHA
config in bf16 compute on fp32 masters with `--per_device_batch` samples per device (official: 25), FSDP over all
local devices. Inputs are synthetic (random uint8 frames, random normalised targets, a mix of sample types), so the
figure is the model step alone; compare with benchmarks/data.py to see whether the loader keeps up.

FLOPs per step: 3 × the DiT forward (`cosmos_jax.nn.dit.forward_flops`) over the global batch; the frozen VAE encode
is not counted (MFU convention). MFU uses the device's dense bf16 peak (`cosmos_jax.train.metrics`).

Usage: python benchmarks/train_step.py [--steps 10] [--per_device_batch 1] [--out benchmarks/results/train_step.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root, for configs/
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position
from configs import aloha  # pylint: disable=wrong-import-position
from cosmos_jax import host_memory
from cosmos_jax.nn import dit as dit_lib
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.train import metrics as metrics_lib
from cosmos_jax.train import optim
from cosmos_jax.train import sharding as sharding_lib
from cosmos_jax.train import state as state_lib
from cosmos_jax.train import trainer


def synthetic_batch(cfg, global_batch: int, image_size: int, text_tokens: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  layout = cfg.layout
  g = global_batch
  rollout = (np.arange(g) % 3 != 0).astype(np.int32)  # a third demos, the rest world-model / value samples
  world = (rollout & (np.arange(g) % 2)).astype(np.int32)
  return {
      'video': rng.integers(0, 256, (g, layout.state_t, image_size, image_size, 3), dtype=np.uint8),
      't5_text_embeddings': rng.normal(0, 0.2, (g, text_tokens, cfg.dit.crossattn_emb_channels)).astype(jnp.bfloat16),
      'actions': rng.uniform(-1, 1, (g, layout.chunk_size, layout.action_dim)).astype(np.float32),
      'proprio': rng.uniform(-1, 1, (g, layout.proprio_dim)).astype(np.float32),
      'future_proprio': rng.uniform(-1, 1, (g, layout.proprio_dim)).astype(np.float32),
      'value_function_return': rng.uniform(-1, 1, (g,)).astype(np.float32),
      'rollout_data_mask': rollout,
      'world_model_sample_mask': world,
      'value_function_sample_mask': (rollout & (1 - world)).astype(np.int32),
  }


def compiled_memory_gib(config, global_batch: int) -> float:
  """Per-device memory (arguments + outputs + temporaries - aliased) of the compiled train step at this global
  batch, from abstract shapes: nothing is allocated, so a size that does not fit costs one compilation only."""
  cfg = trainer.step_config(config)
  tx = optim.make_optimizer(config.optim)
  mesh = sharding_lib.make_mesh(-1, min(config.mesh.fsdp, jax.device_count()))
  state = jax.eval_shape(lambda p: state_lib.init_state(p, tx, 0), dit_lib.abstract_params(cfg.dit))
  vae_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, cfg.vae.dtype), vae_lib.abstract_params(cfg.vae))
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct((global_batch, *x.shape[1:]), x.dtype),
                       synthetic_batch(cfg, 1, config.data.image_size, 512))
  step, _ = state_lib.jit_train_step(cfg, tx, mesh, state, vae_params, batch)
  m = step.lower(state, vae_params, batch).compile().memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes) / 2**30


def run(name: str, config, global_batch: int, steps: int, text_tokens: int = 512,
        cached_latents: bool = False) -> dict:
  """`text_tokens` < 512: the context trimmed to its leading tokens (data.trim_text_padding); `cached_latents`: the
  batch carries the VAE latents (data.latent_cache), so the step runs the DiT alone."""
  cfg = trainer.step_config(config)
  tx = optim.make_optimizer(config.optim)
  mesh = sharding_lib.make_mesh(-1, min(config.mesh.fsdp, jax.device_count()))
  params = common.random_params(dit_lib.abstract_params(cfg.dit))
  vae_params = jax.tree.map(lambda x: jnp.zeros(x.shape, cfg.vae.dtype), vae_lib.abstract_params(cfg.vae))
  state = state_lib.init_state(params, tx, 0)
  batch = synthetic_batch(cfg, global_batch, config.data.image_size, text_tokens)
  if cached_latents:
    s = config.data.image_size // 8
    batch['latent'] = np.random.default_rng(1).normal(
        0, 1, (global_batch, cfg.layout.state_t, s, s, cfg.vae.z_dim)).astype(np.float32)
  abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  step, state_shardings = state_lib.jit_train_step(cfg, tx, mesh, jax.eval_shape(lambda s: s, state),
                                                   jax.eval_shape(lambda v: v, vae_params), abstract_batch)
  state = jax.device_put(state, state_shardings)
  batch = {k: jax.device_put(v, sharding_lib.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
  t0 = time.perf_counter()
  state, m = step(state, vae_params, batch)
  jax.block_until_ready(m)
  first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, vae_params, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  s = config.data.image_size // 8
  flops = 3.0 * dit_lib.forward_flops(cfg.dit, global_batch, cfg.layout.state_t, s, s, text_tokens)
  peak = metrics_lib.device_peak_tflops() * 1e12 * jax.device_count()
  return dict(name=name, device=jax.devices()[0].device_kind, devices=jax.device_count(), global_batch=global_batch,
              first_step_s=first, median_step_s=median, steps=steps, tflop_per_step=flops / 1e12,
              tflops_per_s=flops / median / 1e12, mfu=flops / median / peak if np.isfinite(peak) else None)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--per_device_batch', type=int, default=1)
  parser.add_argument('--out', default='benchmarks/results/train_step.json')
  args = parser.parse_args()
  host_memory.retain_freed_memory()  # as the commands run (before JAX starts its CPU client)
  rows = [run('aloha tiny (CPU config)', aloha.get_config('tiny'), 2, args.steps)]
  # The learn_sim config as it trains (latents cached): the full 512-token text context, against the context
  # trimmed to the stand-in store's 8 leading non-zero tokens (data.trim_text_padding; the same result).
  small = aloha.get_config('small')
  rows.append(run('aloha small, 512 text', small, small.batch_size, args.steps, cached_latents=True))
  rows.append(run('aloha small, 8 text', small, small.batch_size, args.steps, text_tokens=8, cached_latents=True))
  if jax.default_backend() == 'gpu':
    config = aloha.get_config()
    config.mesh.fsdp = jax.device_count()
    rows.append(run('aloha 2B bf16', config, args.per_device_batch * jax.device_count(), args.steps))
  else:
    print(f'(no GPU visible, backend {jax.default_backend()}: the 2B row needs one)')
  header = f"{'run':<26}{'device':<14}{'batch':>6}{'first s':>9}{'median ms':>11}{'TFLOP/step':>12}{'TFLOP/s':>10}{'MFU':>8}"
  print(header)
  print('-' * len(header))
  for r in rows:
    mfu = f"{r['mfu']:.1%}" if r['mfu'] is not None else 'n/a'
    print(f"{r['name']:<26}{r['device'][:13]:<14}{r['global_batch']:>6}{r['first_step_s']:>9.1f}"
          f"{r['median_step_s'] * 1e3:>11.1f}{r['tflop_per_step']:>12.4g}{r['tflops_per_s']:>10.3g}{mfu:>8}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(backend=jax.default_backend(), rows=rows), indent=2))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
