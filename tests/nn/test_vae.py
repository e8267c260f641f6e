"""Wan2.1 VAE: parity with the official code (golden vae_* folders), the real-size weight manifest, frame rules,
weight-loading errors and the bf16 mode (the policy's pixel sequence: tests/policy/test_video.py).

Golden arrays are channels-first (B, C, T, H, W); they are moved to our channels-last layout here, at the boundary.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from cosmos_jax.convert import rules
from cosmos_jax.convert import vae_rules
from cosmos_jax.nn import vae
from tests import parity

MANIFEST = pathlib.Path(__file__).resolve().parents[2] / 'third_party' / 'wan2.1_vae_manifest.json'
NON_CASE_PREFIXES = ('scale_',)


def to_ours(array: np.ndarray) -> np.ndarray:
  """Official (B, C, T, H, W) -> ours (B, T, H, W, C)."""
  return np.transpose(array, (0, 2, 3, 4, 1))


def case_names(folder: pathlib.Path) -> list[str]:
  with np.load(folder / 'io.npz') as arrays:
    keys = arrays.files
  return sorted({k.split('__')[0] for k in keys if '__' in k and not k.startswith(NON_CASE_PREFIXES)})


def golden_case_params(kind: str | None = None) -> list:
  """One param per (vae_* folder, case in its io.npz), id '<folder>-<case>'; `kind` filters config case_definitions."""
  out = []
  for param in parity.golden_cases('vae_'):
    folder = param.values[0]
    names = case_names(folder)
    if kind is not None:
      kinds = {d['name']: d.get('kind') for d in parity.load_config(folder).get('case_definitions', [])}
      names = [n for n in names if kinds.get(n) == kind]
    out.extend(pytest.param(folder, name, id=f'{folder.name}-{name}') for name in names)
  if not out:
    raise FileNotFoundError(f'no vae_* golden cases{f" of kind {kind!r}" if kind else ""} found')
  return out


@functools.lru_cache(maxsize=None)
def golden_model(folder: pathlib.Path, dtype=jnp.float32, latent_stats: str = 'fp32'):
  config = parity.load_config(folder)
  cfg = vae.VAEConfig.from_official(config['constructor_args'], dtype=dtype, latent_stats=latent_stats)
  # Stored as float16 (the exact weights of the fp32 run); load_official upcasts to cfg.dtype.
  params = vae_rules.load_official(cfg, load_file(str(folder / 'state_dict.safetensors')), where=str(folder))
  return cfg, params


def our_module_path(official: str) -> tuple[str, ...]:
  """'encoder.middle.2' -> ('encoder', 'middle_2'): our modules keep the official Sequential indices."""
  out: list[str] = []
  for token in official.split('.'):
    if token.isdigit() and out:
      out[-1] = f'{out[-1]}_{token}'
    else:
      out.append(token)
  return tuple(out)


def intermediate(state, path: tuple[str, ...]):
  node = state['intermediates']
  for name in path:
    if name not in node:
      raise KeyError(f'no captured intermediate {"/".join(path)} (have {sorted(node)})')
    node = node[name]
  return node['__call__'][0]


@functools.partial(jax.jit, static_argnums=(1,))
def capture_intermediates(params, cfg, video, mu):
  """Every submodule's output (flax capture_intermediates) for one encode and one decode."""
  model = vae.WanVAE(cfg)
  _, enc_state = model.apply({'params': params}, video, method=vae.WanVAE.encode_moments,
                             capture_intermediates=True, mutable=['intermediates'])
  _, dec_state = model.apply({'params': params}, mu, method=vae.WanVAE.decode_unnormalized,
                             capture_intermediates=True, mutable=['intermediates'])
  return enc_state, dec_state


# ----------------------------------------------------------------------------------------------------------------
# Golden parity (fp32, highest precision).


@pytest.mark.parametrize('folder,case', golden_case_params())
def test_golden_parity(folder, case):
  cfg, params = golden_model(folder)
  with np.load(folder / 'io.npz') as arrays:
    golden = {k.split('__', 1)[1]: arrays[k] for k in arrays.files if k.startswith(f'{case}__')}
  video = to_ours(golden['video'])
  with jax.default_matmul_precision('highest'):
    mu = vae.encode_mean(params, cfg, video)
    z = vae.encode(params, cfg, video)
    recon = vae.decode(params, cfg, z)
    recon_from_mu = vae.decode_mean(params, cfg, mu)  # the official decode with an identity scale
    # One compiled program per shape: encode_mean and encode share the encoder; a repeat call compiles nothing.
    programs = vae._encode_mean._cache_size(), vae._decode_mean._cache_size()
    vae.encode(params, cfg, video)
    vae.decode(params, cfg, z)
    assert (vae._encode_mean._cache_size(), vae._decode_mean._cache_size()) == programs
    parity.assert_close(mu, to_ours(golden['mu']), name=f'{case} mu')
    parity.assert_close(z, to_ours(golden['z_norm']), name=f'{case} z_norm')
    parity.assert_close(recon, to_ours(golden['recon']), name=f'{case} recon')
    parity.assert_close(recon_from_mu, to_ours(golden['recon_from_mu']), name=f'{case} recon_from_mu')


@pytest.mark.parametrize('folder,case', golden_case_params())
def test_golden_intermediates(folder, case):
  """The stored official submodule outputs (the golden's bisection points), captured during the same calls."""
  cfg, params = golden_model(folder)
  with np.load(folder / 'io.npz') as arrays:
    video = to_ours(arrays[f'{case}__video'])
    z = to_ours(arrays[f'{case}__z_norm'])
    prefix = f'{case}__act__'
    activations = {k[len(prefix):]: arrays[k] for k in arrays.files if k.startswith(prefix)}
  assert activations, f'{case}: no stored intermediates'
  with jax.default_matmul_precision('highest'):
    enc_state, dec_state = capture_intermediates(params, cfg, video, vae.denormalize_latent(z, cfg))
    for official_name, expected in sorted(activations.items()):
      path = our_module_path(official_name)
      state = enc_state if path[0] == 'encoder' else dec_state
      parity.assert_close(intermediate(state, path), to_ours(expected), name=f'{case} {official_name}')


@pytest.mark.parametrize('folder', parity.golden_cases('vae_'))
def test_latent_statistics_match_golden(folder):
  with np.load(folder / 'io.npz') as arrays:
    for stats, suffix in (('fp32', ''), ('bf16', '_bf16_as_policy')):
      mean, inv_std = vae.latent_statistics(vae.VAEConfig(latent_stats=stats))
      np.testing.assert_array_equal(mean, arrays[f'scale_mean{suffix}'], err_msg=f'{stats} mean')
      np.testing.assert_array_equal(inv_std, arrays[f'scale_inv_std{suffix}'], err_msg=f'{stats} inv_std')


@pytest.mark.parametrize('folder', parity.golden_cases('vae_'))
def test_export_reproduces_official_state_dict(folder):
  cfg, params = golden_model(folder)
  official = load_file(str(folder / 'state_dict.safetensors'))
  exported = rules.export_state_dict(vae_rules.rules(cfg), params)
  assert sorted(exported) == sorted(official)
  for name, value in official.items():
    np.testing.assert_array_equal(exported[name], value.astype(np.float32), err_msg=name)


# ----------------------------------------------------------------------------------------------------------------
# Real size (never allocated).


def test_real_size_matches_official_manifest():
  manifest = json.loads(MANIFEST.read_text())
  cfg = vae.VAEConfig.wan21()
  abstract = vae.abstract_params(cfg)
  ours = rules.official_shapes(vae_rules.rules(cfg), abstract)
  expected = {t['name']: tuple(t['shape']) for t in manifest['tensors']}
  assert len(expected) == manifest['num_tensors'] == 194
  assert sorted(set(ours) ^ set(expected)) == []
  mismatched = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
  assert not mismatched, mismatched
  assert vae.param_count(abstract) == manifest['num_params'] == 126_892_531
  encoder_side = sum(int(np.prod(s)) for k, s in ours.items() if k.startswith(('encoder.', 'conv1.')))
  assert encoder_side == 53_596_928


def test_reduced_width_matches_manifest_dim8_column():
  # A golden case's own widths are checked by loading its state dict (golden_model); this is the manifest's column.
  manifest = json.loads(MANIFEST.read_text())
  expected = {t['name']: tuple(t['shape_dim8']) for t in manifest['tensors']}
  assert vae_rules.official_shapes(vae.VAEConfig.wan21(base_dim=8)) == expected


def test_real_size_shapes_through_eval_shape():
  cfg = vae.VAEConfig.policy()
  abstract = vae.abstract_params(cfg)
  assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.bfloat16)}
  video = jax.ShapeDtypeStruct((1, 41, 224, 224, 3), jnp.bfloat16)
  latent = jax.eval_shape(functools.partial(vae.encode, cfg=cfg), abstract, video=video)
  assert latent.shape == (1, 11, 28, 28, 16) and latent.dtype == jnp.float32
  recon = jax.eval_shape(functools.partial(vae.decode, cfg=cfg), abstract, latent=latent)
  assert recon.shape == (1, 41, 224, 224, 3)


# ----------------------------------------------------------------------------------------------------------------
# Frame rule and input errors.


@pytest.mark.parametrize('frames', [0, 2, 3, 4, 6, 8, 40])
def test_frame_rule_rejects_other_counts(frames):
  with pytest.raises(ValueError, match=r'1 \+ 4k pixel frames'):
    vae.latent_frames(frames)
  cfg = vae.VAEConfig(base_dim=8)
  abstract = vae.abstract_params(cfg)
  with pytest.raises(ValueError, match=rf'1 \+ 4k pixel frames.*T={frames}'):
    jax.eval_shape(functools.partial(vae.encode, cfg=cfg), abstract,
                   video=jax.ShapeDtypeStruct((1, frames, 16, 16, 3), jnp.float32))


def test_frame_rule_counts():
  assert [vae.latent_frames(t) for t in (1, 5, 9, 33, 41)] == [1, 2, 3, 9, 11]
  assert [vae.pixel_frames(n) for n in (1, 2, 9, 11)] == [1, 5, 33, 41]


def test_shape_errors():
  cfg = vae.VAEConfig(base_dim=8)
  abstract = vae.abstract_params(cfg)
  encode = functools.partial(vae.encode, cfg=cfg)
  with pytest.raises(ValueError, match='multiples of 8, got 20x16'):
    jax.eval_shape(encode, abstract, video=jax.ShapeDtypeStruct((1, 5, 20, 16, 3), jnp.float32))
  with pytest.raises(ValueError, match=r'channels-last \[B, T, H, W, 3\]'):
    jax.eval_shape(encode, abstract, video=jax.ShapeDtypeStruct((1, 3, 5, 16, 16), jnp.float32))
  with pytest.raises(ValueError, match='floating point in \\[-1, 1\\], got dtype uint8'):
    jax.eval_shape(encode, abstract, video=jax.ShapeDtypeStruct((1, 5, 16, 16, 3), jnp.uint8))
  with pytest.raises(ValueError, match=r'\[B, T, H, W, 16\]'):
    jax.eval_shape(functools.partial(vae.decode, cfg=cfg), abstract,
                   latent=jax.ShapeDtypeStruct((1, 16, 2, 2, 2), jnp.float32))


def test_config_from_official_rejects_unknown_or_unsupported():
  with pytest.raises(ValueError, match='unknown WanVAE_ constructor arguments'):
    vae.VAEConfig.from_official({'dim': 8, 'bogus': 1})
  with pytest.raises(ValueError, match='attn_scales'):
    vae.VAEConfig.from_official({'dim': 8, 'attn_scales': [0.5]})
  with pytest.raises(ValueError, match='latent_stats'):
    vae.VAEConfig(latent_stats='fp16')


# ----------------------------------------------------------------------------------------------------------------
# Weight loading errors.


@pytest.mark.parametrize('folder', parity.golden_cases('vae_'))
def test_load_reports_missing_unexpected_and_misshaped_keys(folder):
  cfg, _ = golden_model(folder)
  state_dict = dict(load_file(str(folder / 'state_dict.safetensors')))
  # The expected shapes are the case's own (golden cases may differ in width).
  gamma_shape, conv1_shape = state_dict['encoder.head.0.gamma'].shape, state_dict['conv1.weight'].shape
  del state_dict['decoder.middle.1.proj.bias']
  state_dict['encoder.extra.weight'] = np.zeros((1,), np.float32)
  state_dict['encoder.head.0.gamma'] = np.zeros((7, 1, 1, 1), np.float32)
  state_dict['conv1.weight'] = np.zeros(conv1_shape[:-1], np.float32)  # one axis short
  with pytest.raises(rules.WeightLoadingError) as error:
    vae_rules.load_official(cfg, state_dict)
  message = str(error.value)
  assert error.value.missing == ['decoder.middle.1.proj.bias']
  assert error.value.unexpected == ['encoder.extra.weight']
  assert len(error.value.misshaped) == 2
  assert f'encoder.head.0.gamma: got (7, 1, 1, 1), expected {gamma_shape}' in message
  assert f'conv1.weight: got {conv1_shape[:-1]}, expected {conv1_shape}' in message
  # An explicit ignore pattern drops the extra key.
  del state_dict['encoder.head.0.gamma'], state_dict['conv1.weight']
  with pytest.raises(rules.WeightLoadingError) as error:
    vae_rules.load_official(cfg, state_dict, ignore=[r'encoder\.extra\..*'])
  assert error.value.unexpected == []
  assert sorted(error.value.missing) == ['conv1.weight', 'decoder.middle.1.proj.bias', 'encoder.head.0.gamma']


# ----------------------------------------------------------------------------------------------------------------
# bf16, as the policy runs it.


def bf16_reference_folders() -> list:
  out = [p for p in parity.golden_cases('vae_') if (p.values[0] / 'io_bf16_reference.npz').exists()]
  if not out:
    raise FileNotFoundError('no vae_* golden folder has io_bf16_reference.npz')
  return out


@pytest.mark.parametrize('folder', bf16_reference_folders())
def test_bf16_mode_against_official_bf16_reference(folder):
  reference_path = folder / 'io_bf16_reference.npz'
  cfg, params = golden_model(folder, jnp.bfloat16, 'bf16')
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  with np.load(reference_path) as reference:
    cases = sorted({k.split('__')[0] for k in reference.files if '__' in k})
    for case in cases:
      video = to_ours(reference[f'{case}__video'])
      z = np.asarray(vae.encode(params, cfg, video))
      # The policy's latents are bf16 values (then cast to float32).
      np.testing.assert_array_equal(z, z.astype(jnp.bfloat16).astype(np.float32))
      # CPU bf16 is a tolerance reference, not a bit target: the official bf16 run itself differs from its fp32
      # run by a relative L2 of about 8.5e-3 on z_norm; we allow 2e-2 and 0.05 absolute (values reach ~3).
      parity.assert_close(z, to_ours(reference[f'{case}__z_norm']), name=f'{case} bf16 z_norm', rel_l2=2e-2,
                          max_abs=5e-2)
      recon = vae.decode(params, cfg, to_ours(reference[f'{case}__z_norm']))
      parity.assert_close(recon, to_ours(reference[f'{case}__recon']), name=f'{case} bf16 recon', rel_l2=5e-2,
                          max_abs=0.2)


def test_rms_norm_is_l2_normalize_with_clamp_not_eps():
  """F.normalize semantics: scale-invariant down to tiny norms (no eps inside a sqrt), zero vectors stay zero."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
  gamma = (1 + 0.2 * rng.standard_normal(6)).astype(np.float32)
  expected = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12) * np.sqrt(6) * gamma
  for scale in (1.0, 1e-4, 1e-8):
    got = np.asarray(vae.rms_norm(jnp.asarray(x * scale), jnp.asarray(gamma)))
    parity.assert_close(got, expected, name=f'rms_norm at input scale {scale}', rel_l2=1e-6)
  assert not np.asarray(vae.rms_norm(jnp.zeros((1, 1, 1, 1, 6)), jnp.asarray(gamma))).any()
