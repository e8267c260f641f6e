"""vae_rules.standardise_latents: the folded VAE's normalised latents are the original's standardised per channel,
and its decoder reads them back as the original decoder reads the original latents."""

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from cosmos_jax.convert import vae_rules
from cosmos_jax.nn import vae


def test_folded_vae_standardises_its_latents_and_decodes_them_back():
  cfg = vae.VAEConfig(base_dim=8)
  original = load_file(str(vae.TINY_VAE_PATH))
  mean = np.linspace(-0.5, 0.5, 16).astype(np.float32)
  std = np.linspace(0.1, 0.3, 16).astype(np.float32)
  folded = vae_rules.standardise_latents(original, mean, std)
  assert sorted(folded) == sorted(original) and all(v.dtype == np.float32 for v in folded.values())
  params = vae_rules.load_official(cfg, {k: np.asarray(v, np.float32) for k, v in original.items()})
  folded_params = vae_rules.load_official(cfg, folded)
  video = jax.random.uniform(jax.random.key(0), (1, 5, 16, 16, 3), minval=-1.0, maxval=1.0)
  with jax.default_matmul_precision('highest'):
    z = np.asarray(vae.encode(params, cfg, video))
    z_folded = np.asarray(vae.encode(folded_params, cfg, video))
    expected = (z - mean) / std
    err = np.abs(z_folded - expected).max()
    assert err < 1e-4, f'standardised latent: max abs error {err:.3g} (relative {err / np.abs(expected).max():.3g})'
    decoded = np.asarray(vae.decode(params, cfg, z))
    decoded_folded = np.asarray(vae.decode(folded_params, cfg, z_folded))
  err = np.abs(decoded_folded - decoded).max()
  assert err < 1e-4, f'decoded video: max abs error {err:.3g} (relative {err / np.abs(decoded).max():.3g})'


def test_standardise_latents_rejects_bad_statistics():
  original = load_file(str(vae.TINY_VAE_PATH))
  with pytest.raises(ValueError, match=r'must be \(16,\) with std > 0'):
    vae_rules.standardise_latents(original, np.zeros(8), np.ones(8))
  with pytest.raises(ValueError, match='std > 0'):
    vae_rules.standardise_latents(original, np.zeros(16), np.zeros(16))
