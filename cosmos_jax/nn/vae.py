"""The Wan2.1 causal video VAE (the Cosmos Policy tokenizer) in Flax, numerically equal to the official PyTorch code.

Layouts at the boundaries:
  * Videos and latents are channels-last here: video [B, T, H, W, 3] in [-1, 1], latent [B, T', H/8, W/8, 16].
    The official code is channels-first ([B, C, T, H, W]); transpose with (0, 2, 3, 4, 1) to come here and
    (0, 4, 1, 2, 3) to go back. Only the golden tests and callers holding official tensors do that.
  * Weights are loaded from the official state_dict names (`Wan2.1_VAE.pth`, 194 tensors) through the rule table
    in cosmos_jax/convert/vae_rules.py.

Time is handled two ways, with the same result:
  * the causal chunked pass (default, `VAEConfig.chunk_latents` >= 1), the official scheme (official
    cosmos_policy/_src/predict2/tokenizers/wan2pt1.py:WanVAE_.encode/decode): frame 0 alone, then
    4 pixel frames (1 latent) per chunk when encoding and 1 latent frame per chunk when decoding (k times that with
    chunk_latents=k), inside one `lax.scan` whose carry is each causal layer's cache: the last 2 input frames of
    every 3x3x3 conv (zeros before the start), the last input frame of each time down-sampling, and the time
    up-sampling conv's last 2 input frames. Memory is bounded by the chunk, not the sequence length.
  * the whole-sequence pass (`chunk_latents=0`): every 3x3x3 conv sees two zero frames in front of the full
    sequence, the encoder's time down-sampling passes frame 0 through and runs a VALID stride-2 conv over the rest,
    and the decoder's time up-sampling passes frame 0 through and runs a causal conv over frames 1.. that never sees
    frame 0. Every frame's activations are live at once.
The modules run either way: applied with the mutable collection `CACHE` they process one chunk and update the
cache; without it they see the whole sequence. Either way one static program per input shape under `jax.jit`.

Frame rule: T = 1 + 4k pixel frames <-> 1 + k latent frames; H and W multiples of 8.

The policy runs everything in bfloat16 (weights, activations, input, normalisation constants); `VAEConfig.policy()`
is that mode. Convolutions and matmuls accumulate in float32 and round once, as the PyTorch bf16 kernels do. XLA may
keep float32 precision through fused bf16 elementwise chains (`xla_allow_excess_precision`, on by default); the
latent normalisation pins its bf16 roundings with `round_to`, so latents are bf16 values as in the policy. CPU bf16
is a tolerance reference, not a bit target.

Memory: the whole-sequence form keeps every frame's activations; the 41x224x224 ALOHA sequence at real width needs
about 3.4 GB of XLA temporaries in float32, the chunked pass a fraction of that, independent of the frame count
(benchmarks/vae.py reports both).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


Array = Any

# The 16 per-channel latent statistics of Wan2.1 (official `WanVAE.__init__`); z = (mu - mean) * (1 / std).
LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
               0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

# The official-code width-8 Wan2.1 VAE with random weights (from the golden vectors), used by the tiny configs,
# the tiny policy runner and their tests; see assets/README.md. Not a trained tokenizer.
TINY_VAE_PATH = pathlib.Path(__file__).resolve().parent / 'assets' / 'wan21_vae_width8.safetensors'

TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 8
# The RMS norm is F.normalize: the L2 norm is clamped from below, there is no epsilon inside a square root.
_NORM_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Constructor arguments of the official `WanVAE_` plus how we run it.

  base_dim: the official `dim` (96 for the real model; the golden vae_small uses 8).
  temporal_downsample: the official (mis-spelt) `temperal_downsample`, per encoder down step; the decoder uses the
    reverse for its up steps.
  dtype: compute and parameter dtype (float32, or bfloat16 as the policy runs it).
  latent_stats: 'fp32' uses mean and float32(1/std) (official fp32 wrapper); 'bf16' uses bf16(mean) and
    bf16(1/bf16(std)), the values the policy's bf16 wrapper actually applies.
  chunk_latents: how `encode`/`decode` walk time. k >= 1: the causal chunked pass (frame 0 alone, then k latent
    frames = 4k pixel frames per step of a `lax.scan` that carries each causal layer's last input frames), whose
    memory is bounded by the chunk; 0: the whole sequence in one pass (memory grows with the frames). Both give the
    same result (benchmarks/vae.py compares time and memory).
  """

  base_dim: int = 96
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  temporal_downsample: tuple[bool, ...] = (False, True, True)
  dtype: Any = jnp.float32
  latent_stats: str = 'fp32'
  chunk_latents: int = 1

  def __post_init__(self):
    if not isinstance(self.chunk_latents, int) or self.chunk_latents < 0:
      raise ValueError(f'VAEConfig.chunk_latents must be an int >= 0 (0: whole sequence), got {self.chunk_latents!r}')
    if self.latent_stats not in ('fp32', 'bf16'):
      raise ValueError(f"VAEConfig.latent_stats must be 'fp32' or 'bf16', got {self.latent_stats!r}")
    if len(self.temporal_downsample) != len(self.dim_mult) - 1:
      raise ValueError(f'VAEConfig.temporal_downsample needs len(dim_mult) - 1 = {len(self.dim_mult) - 1} entries, '
                       f'got {self.temporal_downsample}')
    if self.z_dim != len(LATENT_MEAN):
      raise ValueError(f'VAEConfig.z_dim must be {len(LATENT_MEAN)} (the latent statistics have that many channels), '
                       f'got {self.z_dim}')

  @classmethod
  def wan21(cls, **overrides) -> 'VAEConfig':
    """The real Wan2.1 VAE (126,892,531 parameters), float32."""
    return cls(**overrides)

  @classmethod
  def policy(cls, **overrides) -> 'VAEConfig':
    """The real VAE as Cosmos Policy runs it: bfloat16 everywhere, bf16-rounded latent statistics."""
    return cls(**{'dtype': jnp.bfloat16, 'latent_stats': 'bf16', **overrides})

  @classmethod
  def from_official(cls, kwargs: Mapping[str, Any], **overrides) -> 'VAEConfig':
    """From the official `WanVAE_` constructor kwargs (e.g. the golden config.json's `constructor_args`)."""
    known = {'dim', 'z_dim', 'dim_mult', 'num_res_blocks', 'attn_scales', 'temperal_downsample', 'dropout',
             'temporal_window'}
    unknown = sorted(set(kwargs) - known)
    if unknown:
      raise ValueError(f'unknown WanVAE_ constructor arguments {unknown}; known: {sorted(known)}')
    if list(kwargs.get('attn_scales', [])):
      raise ValueError(f'attn_scales={kwargs["attn_scales"]} is not supported (Wan2.1 uses [])')
    # dropout only matters in training mode, which the tokenizer never uses; temporal_window only sets the
    # official chunk size, which does not change the result.
    fields = {}
    if 'dim' in kwargs:
      fields['base_dim'] = int(kwargs['dim'])
    if 'z_dim' in kwargs:
      fields['z_dim'] = int(kwargs['z_dim'])
    if 'dim_mult' in kwargs:
      fields['dim_mult'] = tuple(int(m) for m in kwargs['dim_mult'])
    if 'num_res_blocks' in kwargs:
      fields['num_res_blocks'] = int(kwargs['num_res_blocks'])
    if 'temperal_downsample' in kwargs:
      fields['temporal_downsample'] = tuple(bool(b) for b in kwargs['temperal_downsample'])
    return cls(**{**fields, **overrides})

  @property
  def encoder_dims(self) -> list[int]:
    return [self.base_dim * m for m in (1,) + tuple(self.dim_mult)]

  @property
  def decoder_dims(self) -> list[int]:
    return [self.base_dim * m for m in (self.dim_mult[-1],) + tuple(self.dim_mult[::-1])]


# --------------------------------------------------------------------------------------------------------------
# Pure math (channels-last).


def _conv(x: Array, kernel: Array, bias: Array | None, *, strides: Sequence[int],
          padding: Sequence[tuple[int, int]]) -> Array:
  """3D cross-correlation [B,T,H,W,I] x [kt,kh,kw,I,O]; accumulates in float32, adds the bias, rounds once.

  On CPU it is the sum over the kt temporal taps of 2-D convolutions with the frames folded into the batch: XLA:CPU
  runs 3-D convolutions 2-4x slower than that (3x3x3 over 6 frames of 64x64x96: 80 ms against 35 ms; the tiny
  policy's VAE encode + decode 0.87 s against 0.30 s), at the cost of more temporaries (float32 partial sums).
  Same products, float32 sums in another order. Elsewhere (cuDNN) the native 3-D convolution.
  """
  if jax.default_backend() == 'cpu':
    out = _conv_by_temporal_taps(x, kernel, strides=strides, padding=padding)
  else:
    out = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=tuple(strides), padding=tuple(padding),
        dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'), preferred_element_type=jnp.float32)
  if bias is not None:
    out = out + bias.astype(jnp.float32)
  return out.astype(x.dtype)


def _conv_by_temporal_taps(x: Array, kernel: Array, *, strides: Sequence[int],
                           padding: Sequence[tuple[int, int]]) -> Array:
  """The float32 3-D cross-correlation as a sum over temporal taps of 2-D ones (frames folded into the batch)."""
  (front, back), (stride_t, *stride_hw) = padding[0], strides
  if front or back:
    x = jnp.pad(x, ((0, 0), (front, back), (0, 0), (0, 0), (0, 0)))
  b, t, h, w, c = x.shape
  frames_out = (t - kernel.shape[0]) // stride_t + 1
  out = None
  for tap in range(kernel.shape[0]):
    frames = x[:, tap:tap + stride_t * (frames_out - 1) + 1:stride_t].reshape(b * frames_out, h, w, c)
    partial = jax.lax.conv_general_dilated(
        frames, kernel[tap].astype(x.dtype), window_strides=tuple(stride_hw), padding=tuple(padding[1:]),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), preferred_element_type=jnp.float32)
    out = partial if out is None else out + partial
  return out.reshape(b, frames_out, *out.shape[1:])


def causal_conv3d(x: Array, kernel: Array, bias: Array) -> Array:
  """Stride-1 causal conv: 2*(kt//2) zero frames in front, none behind; symmetric spatial padding."""
  kt, kh, kw = kernel.shape[:3]
  padding = ((2 * (kt // 2), 0), (kh // 2, kh // 2), (kw // 2, kw // 2))
  return _conv(x, kernel, bias, strides=(1, 1, 1), padding=padding)


def rms_norm(x: Array, gamma: Array) -> Array:
  """x / max(||x||_2 over channels, 1e-12) * sqrt(C) * gamma, rounding where the official bf16 path rounds."""
  channels = x.shape[-1]
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
  norm = jnp.maximum(norm.astype(x.dtype), jnp.asarray(_NORM_FLOOR, x.dtype))
  unit = (x / norm).astype(x.dtype)
  scaled = (unit.astype(jnp.float32) * math.sqrt(channels)).astype(x.dtype)
  return scaled * gamma.astype(x.dtype)


def spatial_downsample(x: Array, kernel: Array, bias: Array) -> Array:
  """Per frame: zero-pad right and bottom by 1 (not left/top), then a VALID 3x3 stride-2 conv. kernel [3,3,I,O]."""
  return _conv(x, kernel[None], bias, strides=(1, 2, 2), padding=((0, 0), (0, 1), (0, 1)))


def spatial_upsample(x: Array, kernel: Array, bias: Array) -> Array:
  """Per frame: nearest x2 (an exact 2x2 repeat), then a 3x3 conv with padding 1. kernel [3,3,I,O]."""
  x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
  return _conv(x, kernel[None], bias, strides=(1, 1, 1), padding=((0, 0), (1, 1), (1, 1)))


def temporal_downsample(x: Array, kernel: Array, bias: Array) -> Array:
  """Frames x_0..x_2m -> x_0, conv(x_0,x_1,x_2), conv(x_2,x_3,x_4), ...: frame 0 passes through untouched."""
  if x.shape[1] == 1:
    return x
  rest = _conv(x, kernel, bias, strides=(2, 1, 1), padding=((0, 0), (0, 0), (0, 0)))
  return jnp.concatenate([x[:, :1], rest], axis=1)


def temporal_upsample(x: Array, kernel: Array, bias: Array) -> Array:
  """Frames a_0..a_n -> a_0, b_1, b'_1, ..., b_n, b'_n (1 + 2n frames).

  b_j / b'_j are the first / second channel halves of a causal conv over a_1..a_n (zero history: a_0 is never seen).
  """
  if x.shape[1] == 1:
    return x
  doubled = causal_conv3d(x[:, 1:], kernel, bias)
  return jnp.concatenate([x[:, :1], _interleave_halves(doubled, x.shape[-1])], axis=1)


def causal_conv3d_step(x: Array, kernel: Array, bias: Array, history: Array) -> tuple[Array, Array]:
  """`causal_conv3d` on one chunk of a longer sequence: `history` holds the 2*(kt//2) input frames before the chunk
  (zeros at the start, which is the whole-sequence padding). Returns (output frames, the history for the next)."""
  kh, kw = kernel.shape[1:3]
  joined = jnp.concatenate([history, x], axis=1)
  out = _conv(joined, kernel, bias, strides=(1, 1, 1), padding=((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
  return out, joined[:, joined.shape[1] - history.shape[1]:]


def temporal_downsample_step(x: Array, kernel: Array, bias: Array, previous: Array) -> Array:
  """`temporal_downsample` on a later chunk (an even number of frames) whose preceding frame is `previous`:
  conv(previous, x_0, x_1), conv(x_1, x_2, x_3), ..."""
  return _conv(jnp.concatenate([previous, x], axis=1), kernel, bias, strides=(2, 1, 1),
               padding=((0, 0), (0, 0), (0, 0)))


def _interleave_halves(doubled: Array, channels: int) -> Array:
  """[B, n, H, W, 2C] -> [B, 2n, H, W, C]: each frame's first channel half, then its second."""
  b, n, h, w, _ = doubled.shape
  pairs = jnp.stack([doubled[..., :channels], doubled[..., channels:]], axis=2)
  return pairs.reshape(b, 2 * n, h, w, channels)


def frame_attention(x: Array, gamma: Array, qkv_kernel: Array, qkv_bias: Array, proj_kernel: Array,
                    proj_bias: Array) -> Array:
  """Single-head self-attention over the H*W positions of each frame (no mixing across time), plus the input.

  qkv_kernel [1,1,C,3C] (q, k, v are the contiguous channel thirds), proj_kernel [1,1,C,C] (1x1 Conv2d layouts).
  """
  b, t, h, w, c = x.shape
  dtype = x.dtype
  normed = rms_norm(x, gamma).reshape(b * t, h * w, c)
  qkv = jnp.einsum('bnc,cd->bnd', normed, qkv_kernel.reshape(c, 3 * c).astype(dtype),
                   preferred_element_type=jnp.float32)
  qkv = (qkv + qkv_bias.astype(jnp.float32)).astype(dtype)
  q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
  logits = jnp.einsum('bqc,bkc->bqk', q, k, preferred_element_type=jnp.float32) / math.sqrt(c)
  weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
  attended = jnp.einsum('bqk,bkc->bqc', weights, v, preferred_element_type=jnp.float32).astype(dtype)
  out = jnp.einsum('bnc,cd->bnd', attended, proj_kernel.reshape(c, c).astype(dtype),
                   preferred_element_type=jnp.float32)
  out = (out + proj_bias.astype(jnp.float32)).astype(dtype)
  return out.reshape(b, t, h, w, c) + x


# --------------------------------------------------------------------------------------------------------------
# Modules (hold the parameters; the math is the functions above).

# PyTorch's default Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Only matters for training from scratch.
_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

# The chunked pass: applied with `mutable=[CACHE]`, each causal layer keeps the input frames the next chunk needs
# in this collection (created on the first chunk, carried by the scan). Without it a call is the whole sequence.
CACHE = 'cache'


class CausalConv3d(nn.Module):
  features: int
  kernel_size: tuple[int, int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', _kernel_init, (*self.kernel_size, x.shape[-1], self.features), self.dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.dtype)
    frames = 2 * (self.kernel_size[0] // 2)
    if not frames or not self.is_mutable_collection(CACHE):
      return causal_conv3d(x, kernel, bias)
    b, _, h, w, c = x.shape
    history = self.variable(CACHE, 'history', jnp.zeros, (b, frames, h, w, c), x.dtype)
    out, history.value = causal_conv3d_step(x, kernel, bias, history.value)
    return out


class RMSNorm(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return rms_norm(x, self.param('gamma', nn.initializers.ones, (x.shape[-1],), self.dtype))


class ResidualBlock(nn.Module):
  """Pre-activation block: conv_b(silu(norm_b(conv_a(silu(norm_a(x)))))) + shortcut(x)."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    shortcut = x
    if x.shape[-1] != self.features:
      shortcut = CausalConv3d(self.features, (1, 1, 1), self.dtype, name='shortcut')(x)
    h = nn.silu(RMSNorm(self.dtype, name='norm_a')(x))
    h = CausalConv3d(self.features, (3, 3, 3), self.dtype, name='conv_a')(h)
    h = nn.silu(RMSNorm(self.dtype, name='norm_b')(h))
    h = CausalConv3d(self.features, (3, 3, 3), self.dtype, name='conv_b')(h)
    return h + shortcut


class AttentionBlock(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    gamma = self.param('gamma', nn.initializers.ones, (c,), self.dtype)
    qkv_kernel = self.param('qkv_kernel', _kernel_init, (1, 1, c, 3 * c), self.dtype)
    qkv_bias = self.param('qkv_bias', nn.initializers.zeros, (3 * c,), self.dtype)
    # Zero-initialised output projection (as upstream), so a fresh block is the identity.
    proj_kernel = self.param('proj_kernel', nn.initializers.zeros, (1, 1, c, c), self.dtype)
    proj_bias = self.param('proj_bias', nn.initializers.zeros, (c,), self.dtype)
    return frame_attention(x, gamma, qkv_kernel, qkv_bias, proj_kernel, proj_bias)


class Resample(nn.Module):
  """mode: 'downsample2d' | 'downsample3d' (encoder) or 'upsample2d' | 'upsample3d' (decoder, halves channels)."""

  mode: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]

    def conv_params(name, shape):
      return (self.param(f'{name}_kernel', _kernel_init, shape, self.dtype),
              self.param(f'{name}_bias', nn.initializers.zeros, (shape[-1],), self.dtype))

    if self.mode in ('downsample2d', 'downsample3d'):
      x = spatial_downsample(x, *conv_params('spatial', (3, 3, c, c)))
      if self.mode == 'downsample3d':
        x = self._time_down(x, *conv_params('time', (3, 1, 1, c, c)))
      return x
    if self.mode in ('upsample2d', 'upsample3d'):
      if self.mode == 'upsample3d':
        x = self._time_up(x, *conv_params('time', (3, 1, 1, c, 2 * c)))
      return spatial_upsample(x, *conv_params('spatial', (3, 3, c, c // 2)))
    raise ValueError(f'unknown Resample mode {self.mode!r}')

  def _time_down(self, x, kernel, bias):
    if not self.is_mutable_collection(CACHE):
      return temporal_downsample(x, kernel, bias)
    if self.has_variable(CACHE, 'previous_frame'):
      out = temporal_downsample_step(x, kernel, bias, self.get_variable(CACHE, 'previous_frame'))
    else:  # the first chunk: frame 0 passes through
      out = temporal_downsample(x, kernel, bias)
    self.put_variable(CACHE, 'previous_frame', x[:, -1:])
    return out

  def _time_up(self, x, kernel, bias):
    if not self.is_mutable_collection(CACHE):
      return temporal_upsample(x, kernel, bias)
    if self.has_variable(CACHE, 'history'):
      doubled, history = causal_conv3d_step(x, kernel, bias, self.get_variable(CACHE, 'history'))
      out = _interleave_halves(doubled, x.shape[-1])
    else:  # the first chunk: frame 0 passes through, the conv starts at frame 1 with zero history
      out = temporal_upsample(x, kernel, bias)
      b, _, h, w, c = x.shape
      history = jnp.concatenate([jnp.zeros((b, 2, h, w, c), x.dtype), x[:, 1:]], axis=1)[:, -2:]
    self.put_variable(CACHE, 'history', history)
    return out


def encoder_layout(cfg: VAEConfig) -> list[tuple[str, Any]]:
  """The official `encoder.downsamples` Sequential: ('res', out_dim) or ('resample', mode), by index."""
  layout = []
  dims = cfg.encoder_dims
  for stage, out_dim in enumerate(dims[1:]):
    layout.extend(('res', out_dim) for _ in range(cfg.num_res_blocks))
    if stage != len(cfg.dim_mult) - 1:
      layout.append(('resample', 'downsample3d' if cfg.temporal_downsample[stage] else 'downsample2d'))
  return layout


def decoder_layout(cfg: VAEConfig) -> list[tuple[str, Any]]:
  """The official `decoder.upsamples` Sequential (num_res_blocks + 1 blocks per stage)."""
  layout = []
  temporal_upsample_flags = cfg.temporal_downsample[::-1]
  for stage, out_dim in enumerate(cfg.decoder_dims[1:]):
    layout.extend(('res', out_dim) for _ in range(cfg.num_res_blocks + 1))
    if stage != len(cfg.dim_mult) - 1:
      layout.append(('resample', 'upsample3d' if temporal_upsample_flags[stage] else 'upsample2d'))
  return layout


def _block(kind: str, arg: Any, dtype: Any, name: str) -> nn.Module:
  return ResidualBlock(arg, dtype, name=name) if kind == 'res' else Resample(arg, dtype, name=name)


class Encoder3d(nn.Module):
  cfg: VAEConfig

  @nn.compact
  def __call__(self, video):
    cfg, dtype = self.cfg, self.cfg.dtype
    x = CausalConv3d(cfg.encoder_dims[0], (3, 3, 3), dtype, name='conv1')(video)
    for index, (kind, arg) in enumerate(encoder_layout(cfg)):
      x = _block(kind, arg, dtype, f'downsamples_{index}')(x)
    width = x.shape[-1]
    x = ResidualBlock(width, dtype, name='middle_0')(x)
    x = AttentionBlock(dtype, name='middle_1')(x)
    x = ResidualBlock(width, dtype, name='middle_2')(x)
    x = nn.silu(RMSNorm(dtype, name='head_norm')(x))
    return CausalConv3d(2 * cfg.z_dim, (3, 3, 3), dtype, name='head_conv')(x)


class Decoder3d(nn.Module):
  cfg: VAEConfig

  @nn.compact
  def __call__(self, z):
    cfg, dtype = self.cfg, self.cfg.dtype
    width = cfg.decoder_dims[0]
    x = CausalConv3d(width, (3, 3, 3), dtype, name='conv1')(z)
    x = ResidualBlock(width, dtype, name='middle_0')(x)
    x = AttentionBlock(dtype, name='middle_1')(x)
    x = ResidualBlock(width, dtype, name='middle_2')(x)
    for index, (kind, arg) in enumerate(decoder_layout(cfg)):
      x = _block(kind, arg, dtype, f'upsamples_{index}')(x)
    x = nn.silu(RMSNorm(dtype, name='head_norm')(x))
    return CausalConv3d(3, (3, 3, 3), dtype, name='head_conv')(x)


class WanVAE(nn.Module):
  """`WanVAE_`: Encoder3d + 1x1x1 `conv1` (mean | logvar) and 1x1x1 `conv2` + Decoder3d. No latent normalisation."""

  cfg: VAEConfig

  def setup(self):
    cfg = self.cfg
    self.encoder = Encoder3d(cfg)
    self.conv1 = CausalConv3d(2 * cfg.z_dim, (1, 1, 1), cfg.dtype)
    self.conv2 = CausalConv3d(cfg.z_dim, (1, 1, 1), cfg.dtype)
    self.decoder = Decoder3d(cfg)

  def encode_moments(self, video):
    """[B,T,H,W,3] -> [B,T',H/8,W/8,2*z_dim]: posterior mean (first z_dim channels) and log-variance."""
    return self.conv1(self.encoder(video))

  def decode_unnormalized(self, mu):
    return self.decoder(self.conv2(mu))

  def __call__(self, video):
    return self.decode_unnormalized(self.encode_moments(video)[..., :self.cfg.z_dim])


# --------------------------------------------------------------------------------------------------------------
# Public functions.


def latent_frames(num_pixel_frames: int) -> int:
  """1 + 4k pixel frames -> 1 + k latent frames; anything else is an error (the official code crashes too)."""
  if num_pixel_frames < 1 or (num_pixel_frames - 1) % TEMPORAL_COMPRESSION:
    raise ValueError(f'the Wan2.1 VAE needs 1 + 4k pixel frames (1, 5, 9, ..., 33, 41), got T={num_pixel_frames}')
  return 1 + (num_pixel_frames - 1) // TEMPORAL_COMPRESSION


def pixel_frames(num_latent_frames: int) -> int:
  if num_latent_frames < 1:
    raise ValueError(f'need at least 1 latent frame, got {num_latent_frames}')
  return 1 + TEMPORAL_COMPRESSION * (num_latent_frames - 1)


def _check_video(video: Array) -> None:
  if video.ndim != 5 or video.shape[-1] != 3:
    raise ValueError(f'video must be channels-last [B, T, H, W, 3], got shape {tuple(video.shape)}')
  if not jnp.issubdtype(video.dtype, jnp.floating):
    raise ValueError(f'video must be floating point in [-1, 1], got dtype {video.dtype} '
                     '(convert uint8 pixels with cosmos_jax.policy.video.pixels_to_unit)')
  latent_frames(video.shape[1])
  height, width = video.shape[2:4]
  if height % SPATIAL_COMPRESSION or width % SPATIAL_COMPRESSION:
    raise ValueError(f'video height and width must be multiples of {SPATIAL_COMPRESSION}, got {height}x{width}')


def _check_latent(latent: Array, cfg: VAEConfig) -> None:
  if latent.ndim != 5 or latent.shape[-1] != cfg.z_dim:
    raise ValueError(f'latent must be channels-last [B, T, H, W, {cfg.z_dim}], got shape {tuple(latent.shape)}')


def latent_statistics(cfg: VAEConfig) -> tuple[np.ndarray, np.ndarray]:
  """(mean, 1/std) as float32 arrays holding the values the chosen variant applies (see VAEConfig.latent_stats)."""
  mean = np.asarray(LATENT_MEAN, np.float32)
  std = np.asarray(LATENT_STD, np.float32)
  if cfg.latent_stats == 'fp32':
    return mean, (np.float32(1.0) / std).astype(np.float32)
  bf16 = jnp.bfloat16
  mean_bf16 = mean.astype(bf16)
  # The wrapper computes 1.0 / std on a bf16 tensor: exact float reciprocal of bf16(std), rounded to bf16.
  inv_std_bf16 = (np.float32(1.0) / std.astype(bf16).astype(np.float32)).astype(bf16)
  return mean_bf16.astype(np.float32), inv_std_bf16.astype(np.float32)


def round_to(x: Array, dtype: Any) -> Array:
  """x rounded to `dtype`, kept even inside fusions.

  XLA's default `xla_allow_excess_precision` lets fused bf16 arithmetic skip intermediate roundings (so a bf16
  result may carry float32 bits); reduce_precision pins the rounding where the official bf16 path rounds.
  """
  x = x.astype(dtype)
  info = jnp.finfo(dtype)
  if info.bits < 32:
    x = jax.lax.reduce_precision(x, exponent_bits=info.nexp, mantissa_bits=info.nmant)
  return x


def normalize_latent(mu: Array, cfg: VAEConfig) -> Array:
  """z = (mu - mean) * inv_std (a product with the stored reciprocal, as upstream), each step rounded to cfg.dtype."""
  mean, inv_std = (jnp.asarray(s, cfg.dtype) for s in latent_statistics(cfg))
  centred = round_to(round_to(mu, cfg.dtype) - mean, cfg.dtype)
  return round_to(centred * inv_std, cfg.dtype)


def denormalize_latent(z: Array, cfg: VAEConfig) -> Array:
  """mu = z / inv_std + mean (a division by the stored reciprocal, not z * std: they differ in bf16).

  Float division on XLA may be off by one unit in the last float32 place (it is not correctly rounded on CPU).
  """
  mean, inv_std = (jnp.asarray(s, cfg.dtype) for s in latent_statistics(cfg))
  scaled = round_to(round_to(z, cfg.dtype) / inv_std, cfg.dtype)
  return round_to(scaled + mean, cfg.dtype)


def init_params(cfg: VAEConfig, key: Array) -> dict:
  """Freshly initialised parameters (plain nested dict, leaves in cfg.dtype)."""
  dummy = jnp.zeros((1, 1, SPATIAL_COMPRESSION, SPATIAL_COMPRESSION, 3), cfg.dtype)
  return WanVAE(cfg).init(key, dummy)['params']


def abstract_params(cfg: VAEConfig) -> dict:
  """The parameter tree as `jax.ShapeDtypeStruct`s, without allocating (works for the real size)."""
  return jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))


def param_count(params) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def _chunked(params, cfg: VAEConfig, method, x: Array, frames_per_latent: int) -> Array:
  """`method` over x [B, T, ...] chunk by chunk (frame 0, then cfg.chunk_latents latents' worth of frames per scan
  step, then any remainder), carrying the causal layers' cache; outputs joined along time."""
  model = WanVAE(cfg)

  def apply(cache, chunk):
    out, variables = model.apply({'params': params, **cache}, chunk, method=method, mutable=[CACHE])
    return out, variables

  first, cache = apply({}, x[:, :1])
  outputs = [first]
  step_frames = cfg.chunk_latents * frames_per_latent
  steps, remainder = divmod(x.shape[1] - 1, step_frames)
  if steps:
    rest = x[:, 1:1 + steps * step_frames]
    chunks = jnp.moveaxis(rest.reshape(rest.shape[0], steps, step_frames, *rest.shape[2:]), 1, 0)

    def step(carry, chunk):
      out, carry = apply(carry, chunk)
      return carry, out

    cache, stacked = jax.lax.scan(step, cache, chunks)
    outputs.append(jnp.moveaxis(stacked, 0, 1).reshape(stacked.shape[1], -1, *stacked.shape[3:]))
  if remainder:
    outputs.append(apply(cache, x[:, x.shape[1] - remainder:])[0])
  return jnp.concatenate(outputs, axis=1)


@functools.partial(jax.jit, static_argnums=(1,))
def _encode_mean(params, cfg: VAEConfig, video):
  video = video.astype(cfg.dtype)
  if cfg.chunk_latents:
    moments = _chunked(params, cfg, WanVAE.encode_moments, video, TEMPORAL_COMPRESSION)
  else:
    moments = WanVAE(cfg).apply({'params': params}, video, method=WanVAE.encode_moments)
  return moments[..., :cfg.z_dim]


@functools.partial(jax.jit, static_argnums=(1,))
def _normalize(mu, cfg: VAEConfig):
  return normalize_latent(mu, cfg).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(1,))
def _denormalize(latent, cfg: VAEConfig):
  return denormalize_latent(latent, cfg)


@functools.partial(jax.jit, static_argnums=(1,))
def _decode_mean(params, cfg: VAEConfig, mu):
  mu = mu.astype(cfg.dtype)
  if cfg.chunk_latents:
    video = _chunked(params, cfg, WanVAE.decode_unnormalized, mu, 1)
  else:
    video = WanVAE(cfg).apply({'params': params}, mu, method=WanVAE.decode_unnormalized)
  return video.astype(jnp.float32)


def encode_mean(params, cfg: VAEConfig, video: Array) -> Array:
  """Raw posterior mean mu [B, 1+(T-1)//4, H/8, W/8, z_dim] (float32) of video [B, T, H, W, 3] in [-1, 1]."""
  _check_video(video)
  return _encode_mean(params, cfg, video).astype(jnp.float32)


def encode(params, cfg: VAEConfig, video: Array) -> Array:
  """The tokenizer latent: video [B, T, H, W, 3] in [-1, 1] (T = 1+4k) -> [B, 1+(T-1)//4, H/8, W/8, z_dim].

  Posterior mean only, normalised per channel; computed in cfg.dtype and returned as float32 (as the policy's
  `DiffusionModel.encode` does). The diffusion scale sigma_data is 1.0 for the policy, so this is also x0.
  One compiled encoder program per input shape (shared with `encode_mean`).
  """
  _check_video(video)
  return _normalize(_encode_mean(params, cfg, video), cfg)


def decode_mean(params, cfg: VAEConfig, mu: Array) -> Array:
  """The decoder on an un-normalised latent mu (the official decode with an identity scale); float32 video."""
  _check_latent(mu, cfg)
  return _decode_mean(params, cfg, mu)


def decode(params, cfg: VAEConfig, latent: Array) -> Array:
  """Inverse of `encode`: latent [B, n, h, w, z_dim] -> video [B, 1+4(n-1), 8h, 8w, 3] (float32, not clamped)."""
  _check_latent(latent, cfg)
  return _decode_mean(params, cfg, _denormalize(latent, cfg))
