"""The Wan2.1 VAE's official weights: the rule table between official `WanVAE_` state_dict names
(cosmos_policy/_src/predict2/tokenizers/wan2pt1.py:WanVAE_; `Wan2.1_VAE.pth`, 194 tensors) and our `nn.vae`
params, and the loader built on it. Conv3d/Conv2d weights are transposed to [k..., I, O]; the [C,1,1(,1)] norm
gains are flattened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np

from cosmos_jax.convert import rules as rules_lib
from cosmos_jax.nn import vae

Array = jax.Array


def _conv_rules(torch_prefix: str, path: str, transform: str = 'conv3d') -> list[rules_lib.Rule]:
  return [rules_lib.Rule(f'{torch_prefix}.weight', f'{path}/kernel', transform),
          rules_lib.Rule(f'{torch_prefix}.bias', f'{path}/bias')]


def _gamma_rule(torch_name: str, path: str, channels: int, images: bool = False) -> rules_lib.Rule:
  shape = (channels, 1, 1) if images else (channels, 1, 1, 1)
  return rules_lib.Rule(torch_name, path, 'reshape', shape)


def _residual_rules(torch_prefix: str, path: str, in_dim: int, out_dim: int) -> list[rules_lib.Rule]:
  out = [_gamma_rule(f'{torch_prefix}.residual.0.gamma', f'{path}/norm_a/gamma', in_dim),
         *_conv_rules(f'{torch_prefix}.residual.2', f'{path}/conv_a'),
         _gamma_rule(f'{torch_prefix}.residual.3.gamma', f'{path}/norm_b/gamma', out_dim),
         *_conv_rules(f'{torch_prefix}.residual.6', f'{path}/conv_b')]
  if in_dim != out_dim:
    out += _conv_rules(f'{torch_prefix}.shortcut', f'{path}/shortcut')
  return out


def _attention_rules(torch_prefix: str, path: str, channels: int) -> list[rules_lib.Rule]:
  return [_gamma_rule(f'{torch_prefix}.norm.gamma', f'{path}/gamma', channels, images=True),
          rules_lib.Rule(f'{torch_prefix}.to_qkv.weight', f'{path}/qkv_kernel', 'conv2d'),
          rules_lib.Rule(f'{torch_prefix}.to_qkv.bias', f'{path}/qkv_bias'),
          rules_lib.Rule(f'{torch_prefix}.proj.weight', f'{path}/proj_kernel', 'conv2d'),
          rules_lib.Rule(f'{torch_prefix}.proj.bias', f'{path}/proj_bias')]


def _resample_rules(torch_prefix: str, path: str, mode: str) -> list[rules_lib.Rule]:
  out = [rules_lib.Rule(f'{torch_prefix}.resample.1.weight', f'{path}/spatial_kernel', 'conv2d'),
         rules_lib.Rule(f'{torch_prefix}.resample.1.bias', f'{path}/spatial_bias')]
  if mode.endswith('3d'):
    out += [rules_lib.Rule(f'{torch_prefix}.time_conv.weight', f'{path}/time_kernel', 'conv3d'),
            rules_lib.Rule(f'{torch_prefix}.time_conv.bias', f'{path}/time_bias')]
  return out


def _middle_rules(side: str, width: int) -> list[rules_lib.Rule]:
  return [*_residual_rules(f'{side}.middle.0', f'{side}/middle_0', width, width),
          *_attention_rules(f'{side}.middle.1', f'{side}/middle_1', width),
          *_residual_rules(f'{side}.middle.2', f'{side}/middle_2', width, width)]


def rules(cfg: vae.VAEConfig) -> list[rules_lib.Rule]:
  """Official `WanVAE_` state_dict names <-> our params paths (see cosmos_jax/convert/rules.py)."""
  table = _conv_rules('encoder.conv1', 'encoder/conv1')
  width = cfg.encoder_dims[0]
  for index, (kind, arg) in enumerate(vae.encoder_layout(cfg)):
    prefix, path = f'encoder.downsamples.{index}', f'encoder/downsamples_{index}'
    if kind == 'res':
      table += _residual_rules(prefix, path, width, arg)
      width = arg
    else:
      table += _resample_rules(prefix, path, arg)
  table += _middle_rules('encoder', width)
  table += [_gamma_rule('encoder.head.0.gamma', 'encoder/head_norm/gamma', width),
            *_conv_rules('encoder.head.2', 'encoder/head_conv')]
  table += _conv_rules('conv1', 'conv1') + _conv_rules('conv2', 'conv2')
  width = cfg.decoder_dims[0]
  table += _conv_rules('decoder.conv1', 'decoder/conv1')
  table += _middle_rules('decoder', width)
  for index, (kind, arg) in enumerate(vae.decoder_layout(cfg)):
    prefix, path = f'decoder.upsamples.{index}', f'decoder/upsamples_{index}'
    if kind == 'res':
      table += _residual_rules(prefix, path, width, arg)
      width = arg
    else:
      table += _resample_rules(prefix, path, arg)
      width //= 2
  table += [_gamma_rule('decoder.head.0.gamma', 'decoder/head_norm/gamma', width),
            *_conv_rules('decoder.head.2', 'decoder/head_conv')]
  return table


def load_official(cfg: vae.VAEConfig, state_dict: Mapping[str, Array], *, ignore: Sequence[str] = (),
                  where: str = 'Wan2.1 VAE') -> dict:
  """Params from an official `WanVAE_` state_dict (e.g. Wan2.1_VAE.pth / tokenizer.pth), cast to cfg.dtype.

  The official file is a flat dict of exactly the 194 parameter names: no prefix, no buffers, so nothing is ignored
  by default. Raises rules.WeightLoadingError listing every missing, unexpected and mis-shaped key.
  """
  tree = rules_lib.load_state_dict(rules(cfg), state_dict, vae.abstract_params(cfg), ignore=ignore, where=where)
  return jax.device_put(tree)  # one transfer per leaf; jnp.asarray would compile a program per leaf shape


def official_shapes(cfg: vae.VAEConfig) -> dict[str, tuple[int, ...]]:
  """The official state_dict (name -> shape) of this config, derived without allocating."""
  return rules_lib.official_shapes(rules(cfg), vae.abstract_params(cfg))


def standardise_latents(state_dict: Mapping[str, Array], mean, std) -> dict[str, np.ndarray]:
  """An official Wan2.1 VAE state_dict whose normalised latent (`vae.normalize_latent`) is (z - mean) / std per
  channel, z being this VAE's, and whose decoder reads that latent back as this one reads z.

  Wan2.1's latent statistics (vae.LATENT_MEAN / LATENT_STD) describe the released tokenizer's latents; another VAE
  (the random-weight tiny one) needs its own, and folding them into the weights keeps every reader of the VAE
  (trainer, server, checkpoints) unchanged. The affine map goes into the mu half of the 1x1x1 `conv1` after the
  encoder and the 1x1x1 `conv2` before the decoder; the other weights are returned as they are, in float32.
  """
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  out = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  z_dim = int(out['conv2.weight'].shape[0])
  if mean.shape != (z_dim,) or std.shape != (z_dim,) or not np.all(std > 0):
    raise ValueError(f'mean and std must be ({z_dim},) with std > 0, got {mean.shape} and {std.shape} '
                     f'(min std {std.min() if std.size else None})')
  k_mean = np.asarray(vae.LATENT_MEAN, np.float64)
  k_std = np.asarray(vae.LATENT_STD, np.float64)
  # mu' = k_mean + (mu - k_mean - mean * k_std) / std gives (mu' - k_mean) / k_std = (z - mean) / std.
  w1, b1 = out['conv1.weight'].astype(np.float64), out['conv1.bias'].astype(np.float64)
  w1[:z_dim] /= std.reshape(-1, 1, 1, 1, 1)
  b1[:z_dim] = (b1[:z_dim] - k_mean - mean * k_std) / std + k_mean
  # The decoder's conv2 sees mu = std * mu' + shift again.
  shift = k_mean * (1 - std) + mean * k_std
  w2, b2 = out['conv2.weight'].astype(np.float64), out['conv2.bias'].astype(np.float64)
  b2 = b2 + w2[:, :, 0, 0, 0] @ shift
  w2 = w2 * std.reshape(1, -1, 1, 1, 1)
  out.update({'conv1.weight': w1.astype(np.float32), 'conv1.bias': b1.astype(np.float32),
              'conv2.weight': w2.astype(np.float32), 'conv2.bias': b2.astype(np.float32)})
  return out
