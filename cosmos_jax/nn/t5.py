"""The T5 text encoder (transformers' `T5EncoderModel`), in Flax: the instruction embeddings Cosmos Policy reads.

The official policy conditions on `google-t5/t5-11b` (original T5: dense ReLU feed-forward) run through
`T5EncoderModel` with `T5TokenizerFast`, 512 tokens, every position past the prompt set to zero, stored in bf16
(`cosmos_policy/_src/predict2/inference/get_t5_emb.py` at 18a2acc). This module holds the same math:

- pre-norm blocks: RMS layer norm (no mean, no bias; float32 statistics) -> self-attention -> residual, RMS norm ->
  feed-forward -> residual; a final RMS norm;
- attention without the 1/sqrt(d) scale, plus a learned bias per (head, relative-position bucket) that only the
  first block owns and every block reuses; padded keys masked;
- the feed-forward of original T5 (`relu`: wi -> ReLU -> wo) or of T5 v1.1 (`gated-gelu`: tanh-GELU(wi_0 x) *
  wi_1 x -> wo), chosen by `feed_forward_proj` exactly as transformers' `T5Config` names it.

The math lives in pure functions; the linen modules hold parameters only. Blocks run under `nn.scan` (parameters
stacked on a leading layer axis under `blocks/`), so `train.sharding`'s default rules (`T5_PARAM_RULES` below, the
same list) shard the 11B encoder over an FSDP mesh without any T5-specific code there.

Dtypes: `dtype='float32'` is the parity mode; `'bfloat16'` runs matmuls in bf16 with float32 accumulation, float32
norm statistics and a float32 softmax. `param_dtype` is the storage of the weights.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cosmos_jax.nn import dit

Array = jax.Array

# Activations by transformers' ACT2FN name (the part of `feed_forward_proj` after an optional 'gated-').
ACTIVATIONS = {
    'relu': jax.nn.relu,
    'gelu_new': functools.partial(jax.nn.gelu, approximate=True),  # tanh approximation
    'gelu_pytorch_tanh': functools.partial(jax.nn.gelu, approximate=True),
    'gelu': functools.partial(jax.nn.gelu, approximate=False),  # erf
    'silu': jax.nn.silu,
}

# Sharding rules for `cosmos_jax.train.sharding.param_specs` (its rule vocabulary): the scanned blocks are sharded
# FSDP-style but never along the layer axis; the embedding and bias tables by their largest divisible axis.
T5_PARAM_RULES: tuple[tuple[str, str], ...] = (
    (r'blocks/.*', 'fsdp_skip_leading'),
    (r'.*', 'fsdp'),
)

@dataclasses.dataclass(frozen=True)
class T5Config:
  """The encoder's architecture (transformers' `T5Config` names) plus how we run it."""

  vocab_size: int = 32128
  d_model: int = 1024
  d_kv: int = 128
  d_ff: int = 65536
  num_layers: int = 24
  num_heads: int = 128
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = 'relu'  # 'relu' (original T5, t5-11b) or 'gated-gelu' (T5 v1.1)
  # How we run it.
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  def __post_init__(self):
    for name in ('dtype', 'param_dtype'):
      if getattr(self, name) not in ('float32', 'bfloat16'):
        raise ValueError(f"T5Config.{name} must be 'float32' or 'bfloat16', got {getattr(self, name)!r}")
    parts = self.feed_forward_proj.split('-')
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != 'gated') or self.activation_name not in ACTIVATIONS:
      raise ValueError(f'feed_forward_proj {self.feed_forward_proj!r} is not `ACT` or `gated-ACT` with ACT one of '
                       f'{sorted(ACTIVATIONS)}')
    for name in ('vocab_size', 'd_model', 'd_kv', 'd_ff', 'num_layers', 'num_heads',
                 'relative_attention_num_buckets', 'relative_attention_max_distance'):
      if int(getattr(self, name)) < 1:
        raise ValueError(f'T5Config.{name} must be a positive integer, got {getattr(self, name)!r}')

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith('gated-')

  @property
  def activation_name(self) -> str:
    act = self.feed_forward_proj.split('-')[-1]
    # transformers maps 'gated-gelu' to the tanh approximation for backwards compatibility (T5 v1.1 checkpoints).
    return 'gelu_new' if self.feed_forward_proj == 'gated-gelu' else act

  @property
  def inner_dim(self) -> int:
    return self.num_heads * self.d_kv

  @classmethod
  def from_hf(cls, hf_config: Mapping[str, Any], **overrides) -> 'T5Config':
    """From a transformers `config.json` (dict): the architecture fields; the rest of a `PretrainedConfig` (decoder
    sizes, dropout, generation, token ids, hub metadata) does not change the encoder's parameters or math."""
    if hf_config.get('model_type', 't5') != 't5':
      raise ValueError(f'config model_type is {hf_config.get("model_type")!r}, expected \'t5\'')
    fields = {f.name for f in dataclasses.fields(cls)} - {'dtype', 'param_dtype'}
    values = {key: value for key, value in hf_config.items() if key in fields}
    cfg = cls(**{**values, **overrides})
    # Derived fields that newer transformers write out: they must agree with feed_forward_proj.
    derived = {'is_gated_act': cfg.is_gated, 'dense_act_fn': cfg.activation_name}
    clashes = [f'{k}={hf_config[k]!r} (feed_forward_proj {cfg.feed_forward_proj!r} means {v!r})'
               for k, v in derived.items() if k in hf_config and hf_config[k] != v]
    if clashes:
      raise ValueError(f'T5 config is inconsistent: {clashes}')
    return cfg

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


PRESETS = {
    # google-t5/t5-11b, the encoder the official policy uses (its HF config.json; third_party/ manifest).
    't5-11b': T5Config(),
    # A laptop-sized original-T5 encoder for tests and the CPU benchmark.
    'tiny': T5Config(vocab_size=400, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
}

# --------------------------------------------------------------------------------------------------------------
# Pure functions.


def relative_position_buckets(query_length: int, key_length: int, *, bidirectional: bool = True,
                              num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
  """[query_length, key_length] int32 bucket of (key position - query position), transformers' / Mesh TF's rule.

  Half the buckets (per direction when bidirectional) are exact offsets, the rest logarithmic up to
  `max_distance`; the log branch is computed in float32 and truncated, as the official float32 torch code does.
  Static in the shapes, so numpy.
  """
  relative = np.arange(key_length, dtype=np.int64)[None, :] - np.arange(query_length, dtype=np.int64)[:, None]
  buckets = np.zeros_like(relative)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative > 0).astype(np.int64) * num_buckets
    relative = np.abs(relative)
  else:
    relative = -np.minimum(relative, 0)
  max_exact = num_buckets // 2
  is_small = relative < max_exact
  with np.errstate(divide='ignore'):  # log(0) on the small branch, which `where` discards
    scaled = (np.log(relative.astype(np.float32) / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
              * np.float32(num_buckets - max_exact))
  large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return (buckets + np.where(is_small, relative, large)).astype(np.int32)


def position_bias(table: Array, query_length: int, key_length: int, cfg: T5Config) -> Array:
  """[heads, query_length, key_length] float32 attention bias from the [num_buckets, heads] table."""
  buckets = relative_position_buckets(query_length, key_length, bidirectional=True,
                                      num_buckets=cfg.relative_attention_num_buckets,
                                      max_distance=cfg.relative_attention_max_distance)
  return jnp.take(table.astype(jnp.float32), jnp.asarray(buckets), axis=0).transpose(2, 0, 1)


def attention(q: Array, k: Array, v: Array, bias: Array, key_mask: Array) -> Array:
  """T5 attention: softmax(q·k + bias) v, no 1/sqrt(d) scale; scores and softmax in float32.

  q, k, v: [B, L, heads, d_kv]; bias: [heads, L, L] float32; key_mask: [B, L] bool (False = padding).
  Returns [B, L, heads, d_kv] in q's dtype.
  """
  scores = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32) + bias[None]
  scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum('bhqk,bkhd->bqhd', probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return out.astype(q.dtype)


def zero_after_length(hidden: Array, attention_mask: Array) -> Array:
  """Rows where the attention mask is 0 (right padding: every position past the prompt's length) set to exactly 0,
  as the official `encode_prompts` does."""
  return jnp.where(attention_mask[..., None].astype(bool), hidden, jnp.zeros((), hidden.dtype))


def check_inputs(cfg: T5Config, input_ids, attention_mask) -> None:
  if input_ids.ndim != 2:
    raise ValueError(f'input_ids must be [B, L] token ids, got shape {input_ids.shape}')
  if attention_mask.shape != input_ids.shape:
    raise ValueError(f'attention_mask shape {attention_mask.shape} differs from input_ids shape {input_ids.shape}')
  if not jnp.issubdtype(input_ids.dtype, jnp.integer):
    raise ValueError(f'input_ids must be integers, got dtype {input_ids.dtype}')


# --------------------------------------------------------------------------------------------------------------
# Modules (parameters + wiring).


class _Dense(nn.Module):
  """Bias-free linear layer; kernel [in, out] (torch's weight transposed)."""

  features: int
  dtype: Any
  param_dtype: Any
  std: float = 0.02

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.normal(self.std), (x.shape[-1], self.features), self.param_dtype)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype),
                   preferred_element_type=jnp.float32).astype(self.dtype)


class _RMSNorm(nn.Module):
  eps: float
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    return dit.rms_norm(x, scale, self.eps)


class _SelfAttention(nn.Module):
  cfg: T5Config

  @nn.compact
  def __call__(self, x, bias, key_mask):
    cfg = self.cfg
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    heads = lambda y: y.reshape(*y.shape[:-1], cfg.num_heads, cfg.d_kv)
    q = heads(_Dense(cfg.inner_dim, dt, pdt, name='query')(x))
    k = heads(_Dense(cfg.inner_dim, dt, pdt, name='key')(x))
    v = heads(_Dense(cfg.inner_dim, dt, pdt, name='value')(x))
    o = attention(q, k, v, bias, key_mask)
    return _Dense(cfg.d_model, dt, pdt, name='out')(o.reshape(*o.shape[:-2], cfg.inner_dim))


class _FeedForward(nn.Module):
  cfg: T5Config

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    act = ACTIVATIONS[cfg.activation_name]
    if cfg.is_gated:
      h = act(_Dense(cfg.d_ff, dt, pdt, name='wi_0')(x)) * _Dense(cfg.d_ff, dt, pdt, name='wi_1')(x)
    else:
      h = act(_Dense(cfg.d_ff, dt, pdt, name='wi')(x))
    return _Dense(cfg.d_model, dt, pdt, name='wo')(h)


class _Block(nn.Module):
  cfg: T5Config

  @nn.compact
  def __call__(self, x, bias, key_mask):
    cfg, pdt = self.cfg, jnp.dtype(self.cfg.param_dtype)
    x = x + _SelfAttention(cfg, name='attention')(_RMSNorm(cfg.layer_norm_epsilon, pdt, name='attention_norm')(x),
                                                  bias, key_mask)
    x = x + _FeedForward(cfg, name='mlp')(_RMSNorm(cfg.layer_norm_epsilon, pdt, name='mlp_norm')(x))
    return x, None


class T5Encoder(nn.Module):
  """input_ids [B, L] int, attention_mask [B, L] (1 = token, 0 = padding) -> last hidden state [B, L, d_model] in
  `cfg.dtype` (padded rows are not zeroed here; see `encode`)."""

  cfg: T5Config

  @nn.compact
  def __call__(self, input_ids, attention_mask):
    cfg = self.cfg
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    check_inputs(cfg, input_ids, attention_mask)
    embedding = self.param('token_embedding', nn.initializers.normal(1.0), (cfg.vocab_size, cfg.d_model), pdt)
    table = self.param('relative_attention_bias', nn.initializers.normal(0.02),
                       (cfg.relative_attention_num_buckets, cfg.num_heads), pdt)
    x = jnp.take(embedding, input_ids, axis=0).astype(dt)
    length = input_ids.shape[1]
    bias = position_bias(table, length, length, cfg)
    blocks = nn.scan(_Block, variable_axes={'params': 0}, split_rngs={'params': True},
                     in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers)
    x, _ = blocks(cfg, name='blocks')(x, bias, attention_mask.astype(bool))
    return _RMSNorm(cfg.layer_norm_epsilon, pdt, name='final_norm')(x)


# --------------------------------------------------------------------------------------------------------------
# Functional API.


def init_params(cfg: T5Config, key: Array) -> dict:
  """Random parameters (for tests and shapes; real weights come from `python -m cosmos_jax.convert t5`)."""
  ids = jnp.zeros((1, 2), jnp.int32)
  return T5Encoder(cfg).init(key, ids, jnp.ones((1, 2), jnp.int32))['params']


def abstract_params(cfg: T5Config) -> dict:
  """The parameter tree as `jax.ShapeDtypeStruct`s (no allocation; works for the 11B preset)."""
  return jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))


def forward(params, cfg: T5Config, input_ids: Array, attention_mask: Array) -> Array:
  """The last hidden state [B, L, d_model] in `cfg.dtype` (transformers' `T5EncoderModel(...).last_hidden_state`)."""
  return T5Encoder(cfg).apply({'params': params}, input_ids, attention_mask)


def encode(params, cfg: T5Config, input_ids: Array, attention_mask: Array) -> Array:
  """The official instruction embedding: the last hidden state with every padded position set to 0."""
  return zero_after_length(forward(params, cfg, input_ids, attention_mask), attention_mask)


def num_params(cfg: T5Config) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract_params(cfg)))


def forward_flops(cfg: T5Config, batch: int, length: int) -> int:
  """FLOPs of one encoder pass (multiply-add = 2): per layer q/k/v/o projections 4·2·L·D·I, scores and mix
  2·2·L²·I, feed-forward (2 or 3)·2·L·D·F; I = heads·d_kv, F = d_ff."""
  d, inner, f = cfg.d_model, cfg.inner_dim, cfg.d_ff
  ff = (3 if cfg.is_gated else 2) * 2 * length * d * f
  per_layer = 8 * length * d * inner + 4 * length * length * inner + ff
  return batch * cfg.num_layers * per_layer
