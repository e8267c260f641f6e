"""Training-run checkpoints written without training: the layout the trainer writes (params, optional ema_params,
assets naming the VAE, layout, statistics and text store), for tests of the commands that read it."""

from __future__ import annotations

import shutil

from cosmos_jax.convert import checkpoint
from cosmos_jax.data import bundled
from cosmos_jax.nn import vae


def write_step(workdir, step: int, params, dit_cfg, *, ema_params=None, layout: str | None = 'aloha',
               policy_assets: bool = True, vae_checkpoint=vae.TINY_VAE_PATH, vae_config=None):
  """<workdir>/checkpoints/<step>/ as the trainer writes it (the training state items are left out: nothing here
  reads them). Returns the step directory."""
  root = workdir / checkpoint.WORKDIR_CHECKPOINTS
  root.mkdir(parents=True, exist_ok=True)
  description = checkpoint.describe(
      'dit', dit_cfg, layout=layout, vae_checkpoint=str(vae_checkpoint) if vae_checkpoint else None,
      vae_config=vae_config or vae.VAEConfig(base_dim=8), step=step, ema=ema_params is not None,
      train_config={'layout': layout, 'seed': 0})
  files = {}
  if policy_assets:
    files = {checkpoint.STATISTICS_ASSET: bundled.sample_dir('aloha') / checkpoint.STATISTICS_ASSET,
             checkpoint.TEXT_STORE_ASSET: bundled.text_store_dir('aloha')}
  dest = checkpoint.save_params(root / str(step), params, description, files)
  if ema_params is not None:
    scratch = checkpoint.save_params(root / f'.ema{step}', ema_params, {})
    shutil.move(scratch / checkpoint.PARAMS, dest / checkpoint.EMA_PARAMS)
    shutil.rmtree(scratch)
  return dest
