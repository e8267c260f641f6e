"""The Cosmos-Predict2 Video2World diffusion transformer (official `MinimalV1LVGDiT`), in Flax.

Official: cosmos_policy/_src/predict2/networks/minimal_v1_lvg_dit.py:MinimalV1LVGDiT (on MiniTrainDIT in
minimal_v4_dit.py), at NVlabs/cosmos-policy 18a2acc. The math lives in the pure functions at the top of this file;
the linen modules only hold parameters and wire those functions together. The transformer blocks run under
`nn.scan` (parameters stacked along a leading layer axis), with an optional remat policy chosen by name.

Layout: channels-last. The official network takes `x_B_C_T_H_W`; here `x` is `[B, T, H, W, C]`. Conversion to and
from the official layout happens only at the boundary (weight loading in cosmos_jax/convert/dit_rules.py, and the
golden tests).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.nn import attention as attention_lib

Array = jax.Array

NORM_EPS = 1e-6

# Remat policies by name (big_vision/maxtext style); 'none' disables rematerialisation.
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

# --------------------------------------------------------------------------------------------------------------
# Config.

# Official constructor arguments that do not change the math or the parameters (attention backend, activation
# checkpointing, unused learnable-pos-emb options, fps range that only matters with fps modulation on).
_IGNORED_OFFICIAL_KWARGS = frozenset({
    'atten_backend', 'sac_config', 'pos_emb_learnable', 'pos_emb_interpolation', 'min_fps', 'max_fps',
    'use_wan_fp32_strategy', 'natten_parameters',
})
# Official constructor arguments we support only at one value (the 2B policy's); anything else is refused.
_FIXED_OFFICIAL_KWARGS = {
    'pos_emb_cls': 'rope3d',
    'use_adaln_lora': True,
    'extra_per_block_abs_pos_emb': False,
    'rope_enable_fps_modulation': False,
    'use_crossattn_projection': False,
    'extra_image_context_dim': None,
    'n_dense_blocks': -1,
}


@dataclasses.dataclass(frozen=True)
class DiTConfig:
  """Architecture (official constructor names) plus how we run it (dtypes, attention, remat)."""

  max_img_h: int = 240
  max_img_w: int = 240
  max_frames: int = 128
  in_channels: int = 16  # latent channels; +1 condition mask, +1 padding mask at the patch embedding
  out_channels: int = 16
  patch_spatial: int = 2
  patch_temporal: int = 1
  concat_padding_mask: bool = True
  model_channels: int = 2048
  num_blocks: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  crossattn_emb_channels: int = 1024
  adaln_lora_dim: int = 256
  rope_h_extrapolation_ratio: float = 3.0
  rope_w_extrapolation_ratio: float = 3.0
  rope_t_extrapolation_ratio: float = 1.0
  timestep_scale: float = 1.0
  # How we run it.
  dtype: str = 'float32'  # activations: 'float32' (parity) or 'bfloat16' (as the policy runs)
  param_dtype: str = 'float32'  # storage of the parameters (fp32 master weights when training)
  attention: str = 'xla'  # 'xla' or 'cudnn'
  remat_policy: str = 'none'  # a key of REMAT_POLICIES
  # The text context's full length (0: the context as given). A shorter context is taken as that context followed
  # by zero tokens up to this length: T5 embeddings are zero-padded to 512 tokens, and with bias-free k/v
  # projections and RMS-normed keys a zero token has key and value zero, so the cross-attention accounts for the
  # left-out padding exactly without computing it (data.trim_text_padding; 512 -> a few tokens).
  text_context_tokens: int = 0

  def __post_init__(self):
    if self.model_channels % self.num_heads:
      raise ValueError(f'model_channels {self.model_channels} is not divisible by num_heads {self.num_heads}')
    if self.text_context_tokens < 0:
      raise ValueError(f'text_context_tokens must be >= 0, got {self.text_context_tokens}')
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f'remat_policy {self.remat_policy!r} is not one of {sorted(REMAT_POLICIES)}')
    if self.attention not in attention_lib.IMPLEMENTATIONS:
      raise ValueError(f'attention {self.attention!r} is not one of {attention_lib.IMPLEMENTATIONS}')
    for name in ('dtype', 'param_dtype'):
      if getattr(self, name) not in ('float32', 'bfloat16'):
        raise ValueError(f"{name} must be 'float32' or 'bfloat16', got {getattr(self, name)!r}")

  @property
  def head_dim(self) -> int:
    return self.model_channels // self.num_heads

  @property
  def patch_in_channels(self) -> int:
    return self.in_channels + 1 + int(self.concat_padding_mask)

  @property
  def max_tokens_h(self) -> int:
    return self.max_img_h // self.patch_spatial

  @property
  def max_tokens_w(self) -> int:
    return self.max_img_w // self.patch_spatial

  @property
  def max_tokens_t(self) -> int:
    return self.max_frames // self.patch_temporal

  @classmethod
  def from_official(cls, kwargs: Mapping[str, Any], **overrides) -> 'DiTConfig':
    """From the official `MinimalV1LVGDiT` constructor kwargs (as in a golden `config.json`)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values, unknown, unsupported = {}, [], []
    for key, value in kwargs.items():
      if key in _IGNORED_OFFICIAL_KWARGS:
        continue
      if key in _FIXED_OFFICIAL_KWARGS:
        if value != _FIXED_OFFICIAL_KWARGS[key]:
          unsupported.append(f'{key}={value!r} (supported: {_FIXED_OFFICIAL_KWARGS[key]!r})')
        continue
      if key in fields:
        values[key] = value
      else:
        unknown.append(key)
    if unknown or unsupported:
      raise ValueError(f'official DiT kwargs not understood: unknown {sorted(unknown)}, unsupported {unsupported}')
    return cls(**{**values, **overrides})

  @classmethod
  def preset(cls, name: str, **overrides) -> 'DiTConfig':
    if name not in PRESETS:
      raise ValueError(f'unknown DiT preset {name!r}; known: {sorted(PRESETS)}')
    return dataclasses.replace(PRESETS[name], **overrides)


PRESETS = {
    # Cosmos-Predict2-2B-Video2World as the policy uses it (official
    # cosmos_policy/_src/predict2/configs/video2world/defaults/net.py:COSMOS_V1_2B_NET_MININET).
    '2B': DiTConfig(),
    # The official-code golden vectors' first size; small enough to train on a laptop CPU.
    'tiny': DiTConfig(model_channels=64, num_blocks=2, num_heads=4, crossattn_emb_channels=32, adaln_lora_dim=16),
}

# --------------------------------------------------------------------------------------------------------------
# Pure functions.


def timestep_sinusoid(timesteps: Array, dim: int) -> Array:
  """[cos, sin] embedding of the rectified-flow time (divisor dim/2, no flip), computed in float32."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  args = timesteps.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def rms_norm(x: Array, scale: Array, eps: float = NORM_EPS) -> Array:
  """Transformer Engine RMSNorm: float32 math including the gain, result in the input dtype."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps) * scale.astype(jnp.float32)
  return y.astype(x.dtype)


def layer_norm(x: Array, eps: float = NORM_EPS) -> Array:
  """LayerNorm without affine parameters (biased variance), float32 accumulation, result in the input dtype."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def modulate(x: Array, shift: Array, scale: Array) -> Array:
  """LN(x)·(1+scale)+shift with per-frame [B,T,D] modulation broadcast over the [H',W'] token grid."""
  return layer_norm(x) * (1 + scale[:, :, None, None, :]) + shift[:, :, None, None, :]


def rope_split(head_dim: int) -> tuple[int, int, int]:
  """(dim_t, dim_h, dim_w) of the 3-D RoPE; 2B: (44, 42, 42)."""
  dim_h = (head_dim // 6) * 2
  return head_dim - 2 * dim_h, dim_h, dim_h


def rope_angles(cfg: DiTConfig, tokens_t: int, tokens_h: int, tokens_w: int) -> np.ndarray:
  """The RoPE angle table [L, head_dim] (float32) for a (t, h, w) token grid, flattened in (t h w) order.

  Per token the half table is [t·f_t | h·f_h | w·f_w]; the full table repeats it ([t,h,w,t,h,w]) for the
  half-split rotation. NTK-scaled bases; integer positions; no fps scaling. Static in the shapes, so numpy.
  """
  dims = rope_split(cfg.head_dim)
  ratios = (cfg.rope_t_extrapolation_ratio, cfg.rope_h_extrapolation_ratio, cfg.rope_w_extrapolation_ratio)
  sizes = (tokens_t, tokens_h, tokens_w)
  per_axis = []
  for dim, ratio, size in zip(dims, ratios, sizes):
    theta = 10000.0 * ratio**(dim / (dim - 2))  # float64, then used in a float32 power (as the official code)
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    freqs = np.float32(1.0) / np.power(np.float32(theta), exponents, dtype=np.float32)
    per_axis.append(np.outer(np.arange(size, dtype=np.float32), freqs).astype(np.float32))
  t_ang, h_ang, w_ang = per_axis
  grid = np.concatenate([
      np.broadcast_to(t_ang[:, None, None, :], (tokens_t, tokens_h, tokens_w, t_ang.shape[1])),
      np.broadcast_to(h_ang[None, :, None, :], (tokens_t, tokens_h, tokens_w, h_ang.shape[1])),
      np.broadcast_to(w_ang[None, None, :, :], (tokens_t, tokens_h, tokens_w, w_ang.shape[1])),
  ], axis=-1).reshape(tokens_t * tokens_h * tokens_w, -1)
  return np.concatenate([grid, grid], axis=-1)


def apply_rope(x: Array, angles: Array) -> Array:
  """Half-split ("rotate_half") rotation of x [B, L, heads, head_dim] by angles [L, head_dim], in float32."""
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  cos = jnp.cos(angles)[None, :, None, :]
  sin = jnp.sin(angles)[None, :, None, :]
  return (x32 * cos + rotated * sin).astype(x.dtype)


def patchify(x: Array, ps: int, pt: int) -> Array:
  """[B,T,H,W,C] -> [B,T',H',W',C·pt·ps·ps] with the official feature order (c r m n): channel outermost."""
  return einops.rearrange(x, 'b (t r) (h m) (w n) c -> b t h w (c r m n)', r=pt, m=ps, n=ps)


def unpatchify(y: Array, ps: int, pt: int, channels: int) -> Array:
  """[B,T',H',W',ps·ps·pt·C] with feature order (p1 p2 t C), channel innermost -> [B,T,H,W,C]."""
  return einops.rearrange(y, 'b t h w (m n r c) -> b (t r) (h m) (w n) c', m=ps, n=ps, r=pt, c=channels)


def legacy_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """torch `interpolate(mode='nearest')` source indices: floor(dst · (in/out)) with a float32 scale."""
  scale = np.float32(in_size) / np.float32(out_size)
  return np.minimum(np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64), in_size - 1)


def resize_padding_mask(mask: Array, height: int, width: int) -> Array:
  """[B, Hpix, Wpix] -> [B, height, width] by legacy nearest (not half-pixel); unchanged when sizes match."""
  if mask.shape[1:] == (height, width):
    return mask
  rows = legacy_nearest_indices(mask.shape[1], height)
  cols = legacy_nearest_indices(mask.shape[2], width)
  return mask[:, rows][:, :, cols]


def check_inputs(cfg: DiTConfig, x, timesteps, crossattn_emb, condition_mask, padding_mask) -> None:
  """Raises ValueError naming the limit or shape a forward input violates."""
  if x.ndim != 5:
    raise ValueError(f'x must be [B,T,H,W,C] (channels-last), got shape {x.shape}')
  b, t, h, w, c = x.shape
  ps, pt = cfg.patch_spatial, cfg.patch_temporal
  if c != cfg.in_channels:
    raise ValueError(f'x has {c} channels, the DiT expects in_channels={cfg.in_channels} (shape {x.shape})')
  if h % ps or w % ps:
    raise ValueError(f'latent H×W {h}×{w} is not divisible by the spatial patch {ps}')
  if t % pt:
    raise ValueError(f'latent T={t} is not divisible by the temporal patch {pt}')
  if h // ps > cfg.max_tokens_h or w // ps > cfg.max_tokens_w:
    raise ValueError(f"token grid H'×W' {h // ps}×{w // ps} exceeds the RoPE limit "
                     f'{cfg.max_tokens_h}×{cfg.max_tokens_w} (max_img_h/w {cfg.max_img_h}/{cfg.max_img_w})')
  if t // pt > cfg.max_tokens_t:
    raise ValueError(f"T'={t // pt} latent frames exceeds the limit of {cfg.max_tokens_t} (max_frames)")
  if timesteps.shape not in ((b,), (b, 1), (b, t)):
    raise ValueError(f'timesteps must be [B]=[{b}] or [B,T]=[{b},{t}], got {timesteps.shape}')
  if crossattn_emb.ndim != 3 or crossattn_emb.shape[0] != b or crossattn_emb.shape[2] != cfg.crossattn_emb_channels:
    raise ValueError(f'crossattn_emb must be [B,N,{cfg.crossattn_emb_channels}] with B={b}, got {crossattn_emb.shape}')
  if condition_mask.shape != (b, t, h, w, 1):
    raise ValueError(f'condition_mask must be [B,T,H,W,1]={(b, t, h, w, 1)}, got {condition_mask.shape}')
  if padding_mask is not None and (padding_mask.ndim != 3 or padding_mask.shape[0] != b):
    raise ValueError(f'padding_mask must be [B,Hpix,Wpix] with B={b}, got {padding_mask.shape}')


# --------------------------------------------------------------------------------------------------------------
# Modules (parameters + wiring).


def _dtype(name: str):
  return jnp.dtype(name)


def _trunc_normal(std: float):
  return nn.initializers.truncated_normal(stddev=std, lower=-3.0, upper=3.0)


class _Dense(nn.Module):
  """Bias-free linear layer; kernel [in, out] (the transpose of torch's weight), plus a LoRA adapter when the params
  hold one (see cosmos_jax/nn/lora.py)."""

  features: int
  std: float | None  # truncated-normal std; None = zeros
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.zeros if self.std is None else _trunc_normal(self.std)
    kernel = self.param('kernel', init, (x.shape[-1], self.features), self.param_dtype)
    # A 2-D matmul over flattened tokens: with the batch/grid axes kept, the weight gradient contracts over several
    # axes and XLA:CPU materialises a transposed copy of the output gradient for it (3x slower backward).
    x2 = x.reshape(-1, x.shape[-1]).astype(self.dtype)
    y = jnp.dot(x2, kernel.astype(self.dtype))
    if self.has_variable('params', 'lora_a'):
      # A LoRA adapter placed beside the kernel by cosmos_jax.nn.lora.unmerged (lora_b carries alpha/r): the
      # low-rank path x·A·B, never the merged [in, out] weight, so its gradient costs O(r·(in + out)) per layer.
      a, b = self.get_variable('params', 'lora_a'), self.get_variable('params', 'lora_b')
      y = y + jnp.dot(jnp.dot(x2, a.astype(self.dtype)), b.astype(self.dtype))
    return y.reshape(*x.shape[:-1], self.features)


class _RMSNorm(nn.Module):
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    return rms_norm(x, scale)


class _AdaLNModulation(nn.Module):
  """SiLU -> down [D, lora] -> up [lora, n·D] (official `.1`/`.2`); the LoRA term from the t-embedder is added."""

  cfg: DiTConfig
  chunks: int

  @nn.compact
  def __call__(self, emb_norm, adaln_lora):
    cfg, d = self.cfg, self.cfg.model_channels
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    h = _Dense(cfg.adaln_lora_dim, 1 / math.sqrt(d), dt, pdt, name='down')(nn.silu(emb_norm))
    m = _Dense(self.chunks * d, None, dt, pdt, name='up')(h) + adaln_lora[..., :self.chunks * d]
    return jnp.split(m, self.chunks, axis=-1)


class _Attention(nn.Module):
  cfg: DiTConfig
  context_dim: int
  use_rope: bool
  text_context: bool = False  # the context is the (possibly trimmed) text; see DiTConfig.text_context_tokens

  @nn.compact
  def __call__(self, x, context, angles):
    cfg, d = self.cfg, self.cfg.model_channels
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    heads = lambda y: y.reshape(*y.shape[:-1], cfg.num_heads, cfg.head_dim)  # channel = head·HD + d
    q = _Dense(d, 1 / math.sqrt(d), dt, pdt, name='q_proj')(x)
    k = _Dense(d, 1 / math.sqrt(self.context_dim), dt, pdt, name='k_proj')(context)
    v = _Dense(d, 1 / math.sqrt(self.context_dim), dt, pdt, name='v_proj')(context)
    q = _RMSNorm(dt, pdt, name='q_norm')(heads(q))
    k = _RMSNorm(dt, pdt, name='k_norm')(heads(k))
    v = heads(v)
    if self.use_rope:
      q, k = apply_rope(q, angles), apply_rope(k, angles)
    zero_tokens = 0
    if self.text_context and cfg.text_context_tokens:
      zero_tokens = cfg.text_context_tokens - context.shape[-2]
      if zero_tokens < 0:
        raise ValueError(f'text context of {context.shape[-2]} tokens is longer than text_context_tokens '
                         f'({cfg.text_context_tokens})')
    o = attention_lib.dot_product_attention(q, k, v, implementation=cfg.attention, zero_tokens=zero_tokens)
    o = o.reshape(*o.shape[:-2], d)
    return _Dense(d, 1 / math.sqrt(d), dt, pdt, name='output_proj')(o)


class _Block(nn.Module):
  cfg: DiTConfig

  @nn.compact
  def __call__(self, x, emb_norm, adaln_lora, context, angles):
    cfg, d = self.cfg, self.cfg.model_channels
    b, t, h, w, _ = x.shape
    sh1, sc1, g1 = _AdaLNModulation(cfg, 3, name='adaln_modulation_self_attn')(emb_norm, adaln_lora)
    sh2, sc2, g2 = _AdaLNModulation(cfg, 3, name='adaln_modulation_cross_attn')(emb_norm, adaln_lora)
    sh3, sc3, g3 = _AdaLNModulation(cfg, 3, name='adaln_modulation_mlp')(emb_norm, adaln_lora)
    gate = lambda g: g[:, :, None, None, :]
    tokens = lambda y: y.reshape(b, t * h * w, d)
    grid = lambda y: y.reshape(b, t, h, w, d)

    y = tokens(modulate(x, sh1, sc1))
    x = x + gate(g1) * grid(_Attention(cfg, d, True, name='self_attn')(y, y, angles))
    y = tokens(modulate(x, sh2, sc2))
    cross = _Attention(cfg, cfg.crossattn_emb_channels, False, text_context=True, name='cross_attn')
    x = x + gate(g2) * grid(cross(y, context, None))
    y = modulate(x, sh3, sc3)
    x = x + gate(g3) * _MLP(cfg, name='mlp')(y)
    self.sow('intermediates', 'act_block_out', x)
    return x, None


class _MLP(nn.Module):
  cfg: DiTConfig

  @nn.compact
  def __call__(self, x):
    cfg, d = self.cfg, self.cfg.model_channels
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    hidden = int(d * cfg.mlp_ratio)
    x = _Dense(hidden, 1 / math.sqrt(d), dt, pdt, name='layer1')(x)
    x = nn.gelu(x, approximate=False)
    return _Dense(d, 1 / math.sqrt(hidden), dt, pdt, name='layer2')(x)


class DiT(nn.Module):
  """`MinimalV1LVGDiT`: channels-last inputs, velocity-style output of the latent's shape (float32)."""

  cfg: DiTConfig

  @nn.compact
  def __call__(self, x, timesteps, crossattn_emb, condition_mask, padding_mask=None):
    cfg, d = self.cfg, self.cfg.model_channels
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    check_inputs(cfg, x, timesteps, crossattn_emb, condition_mask, padding_mask)
    b, t, h, w, _ = x.shape
    ps, pt = cfg.patch_spatial, cfg.patch_temporal

    # Input channels: [latent, condition mask, padding mask].
    parts = [x.astype(dt), condition_mask.astype(dt)]
    if cfg.concat_padding_mask:
      if padding_mask is None:
        pad = jnp.zeros((b, h, w), dt)
      else:
        pad = resize_padding_mask(padding_mask.astype(jnp.float32), h, w).astype(dt)
      parts.append(jnp.broadcast_to(pad[:, None, :, :, None], (b, t, h, w, 1)))
    tokens = patchify(jnp.concatenate(parts, axis=-1), ps, pt)
    x = _Dense(d, 1 / math.sqrt(cfg.patch_in_channels * ps * ps * pt), dt, pdt, name='x_embedder')(tokens)
    self.sow('intermediates', 'act_x_embedder', x)

    angles = jnp.asarray(rope_angles(cfg, t // pt, h // ps, w // ps))
    self.sow('intermediates', 'act_rope_angles', angles)

    # Timestep embedding: the raw sinusoid modulates (after RMSNorm); the t-MLP output is the adaLN LoRA term.
    timesteps = timesteps.reshape(b, -1) * cfg.timestep_scale
    if dt == jnp.bfloat16:
      timesteps = timesteps.astype(jnp.bfloat16)  # the official wrapper quantises c_noise before the net
    emb = timestep_sinusoid(timesteps, d).astype(dt)
    lora = _TimestepMLP(cfg, name='t_embedder')(emb)
    emb_norm = _RMSNorm(dt, pdt, name='t_embedding_norm')(emb)
    self.sow('intermediates', 'act_t_emb', emb)
    self.sow('intermediates', 'act_adaln_lora', lora)
    self.sow('intermediates', 'act_t_emb_norm', emb_norm)

    context = crossattn_emb.astype(dt)
    block = _Block
    policy = REMAT_POLICIES[cfg.remat_policy]
    if policy is not None:
      block = nn.remat(block, policy=policy, prevent_cse=False)
    blocks = nn.scan(block, variable_axes={'params': 0, 'intermediates': 0}, split_rngs={'params': True},
                     in_axes=(nn.broadcast,) * 4, length=cfg.num_blocks)
    x, _ = blocks(cfg, name='blocks')(x, emb_norm, lora, context, angles)

    y = _FinalLayer(cfg, name='final_layer')(x, emb_norm, lora)
    self.sow('intermediates', 'act_final_layer', y)
    return unpatchify(y, ps, pt, cfg.out_channels).astype(jnp.float32)


class _TimestepMLP(nn.Module):
  cfg: DiTConfig

  @nn.compact
  def __call__(self, emb):
    cfg, d = self.cfg, self.cfg.model_channels
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    h = _Dense(d, 1 / math.sqrt(d), dt, pdt, name='linear_1')(emb)
    return _Dense(3 * d, 1 / math.sqrt(d), dt, pdt, name='linear_2')(nn.silu(h))


class _FinalLayer(nn.Module):
  cfg: DiTConfig

  @nn.compact
  def __call__(self, x, emb_norm, adaln_lora):
    cfg, d = self.cfg, self.cfg.model_channels
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    shift, scale = _AdaLNModulation(cfg, 2, name='adaln_modulation')(emb_norm, adaln_lora)
    out = cfg.patch_spatial**2 * cfg.patch_temporal * cfg.out_channels
    return _Dense(out, 1 / math.sqrt(d), dt, pdt, name='linear')(modulate(x, shift, scale))


# --------------------------------------------------------------------------------------------------------------
# Functional API.


def init_params(cfg: DiTConfig, key: Array, *, latent_shape: tuple[int, int, int] = (1, 2, 2),
                text_tokens: int = 1) -> dict:
  """Fresh parameters (official minimal_v4_dit.py:MiniTrainDIT.init_weights). Shapes do not depend on the dummy
  input."""
  t, h, w = latent_shape[0] * cfg.patch_temporal, latent_shape[1] * cfg.patch_spatial, latent_shape[2] * cfg.patch_spatial
  x = jnp.zeros((1, t, h, w, cfg.in_channels), jnp.float32)
  variables = DiT(cfg).init(key, x, jnp.zeros((1, t)), jnp.zeros((1, text_tokens, cfg.crossattn_emb_channels)),
                            jnp.zeros((1, t, h, w, 1)))
  return variables['params']


def abstract_params(cfg: DiTConfig) -> dict:
  """The parameter tree as `jax.ShapeDtypeStruct`s (no allocation; works for the 2B preset)."""
  return jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))


def forward(params, cfg: DiTConfig, x, timesteps, crossattn_emb, condition_mask, padding_mask=None) -> Array:
  """The net output (velocity-style, float32) for x [B,T,H,W,C], timesteps [B,T] or [B], text [B,N,Dc],
  condition_mask [B,T,H,W,1] and padding_mask [B,Hpix,Wpix] (None = zeros, as in the policy)."""
  return DiT(cfg).apply({'params': params}, x, timesteps, crossattn_emb, condition_mask, padding_mask)


def forward_with_intermediates(params, cfg: DiTConfig, *args, **kwargs) -> tuple[Array, dict]:
  """`forward` plus the sown activations `act_*` (x_embedder, rope_angles, t_emb, adaln_lora, t_emb_norm,
  block_out stacked over blocks, final_layer), for bisecting a mismatch against the official hooks."""
  out, state = DiT(cfg).apply({'params': params}, *args, mutable=['intermediates'], **kwargs)
  flat = {}
  for name, value in state['intermediates'].items():
    flat[name] = value[0] if isinstance(value, tuple) else value
  blocks = state['intermediates'].get('blocks', {})
  if blocks:
    flat['act_block_out'] = blocks['act_block_out'][0]
    del flat['blocks']
  return out, flat


def forward_flops(cfg: DiTConfig, batch: int, frames: int, height: int, width: int, text_tokens: int) -> int:
  """FLOPs of one forward pass (multiply-add = 2 FLOPs; L = T'·H'·W' tokens, N text tokens, D width, Dc text width, F = mlp_ratio·D,
  r = adaLN-LoRA dim, T' latent frames, P = patch volume (4), Cin = 18, Cout = 16, blocks n):
    per block   self-attn projections 4·2·L·D²  +  self-attn scores and mix 2·2·L²·D
              + cross-attn q/out 2·2·L·D²  +  cross-attn k/v 2·2·N·Dc·D  +  cross scores and mix 2·2·L·N·D
              + MLP 2·2·L·D·F  +  adaLN 3·(2·T'·D·r + 2·T'·r·3D)
    outside     patch embed 2·L·(Cin·P)·D  +  t-MLP 2·T'·D·D + 2·T'·D·3D  +  final adaLN 2·T'·D·r + 2·T'·r·2D
              + final linear 2·L·D·(P·Cout)
  """
  ps, pt = cfg.patch_spatial, cfg.patch_temporal
  tt, L = frames // pt, (frames // pt) * (height // ps) * (width // ps)
  D, Dc, N, r = cfg.model_channels, cfg.crossattn_emb_channels, text_tokens, cfg.adaln_lora_dim
  F = int(D * cfg.mlp_ratio)
  patch = ps * ps * pt
  block = (8 * L * D * D + 4 * L * L * D + 4 * L * D * D + 4 * N * Dc * D + 4 * L * N * D + 4 * L * D * F
           + 3 * (2 * tt * D * r + 2 * tt * r * 3 * D))
  outside = (2 * L * cfg.patch_in_channels * patch * D + 2 * tt * D * D + 2 * tt * D * 3 * D
             + 2 * tt * D * r + 2 * tt * r * 2 * D + 2 * L * D * patch * cfg.out_channels)
  return batch * (cfg.num_blocks * block + outside)
