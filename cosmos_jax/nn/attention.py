"""The one attention entry point: plain softmax attention through XLA, or cuDNN flash attention on GPU.

The XLA path is written out here (not `jax.nn.dot_product_attention`) with a hand-written backward pass, so that
the [L, L] score and probability matrices only ever appear as the canonical left operand of a matmul. Autodiff of
the generic formulation contracts them over their leading axis, and XLA:CPU then materialises transposed copies of
them (and of the head-grouped layout) in every layer; this form is about 1.5x faster forward and backward on CPU
(benchmarks/dit_vs_official.py). The math is unchanged: float32 logits scaled after the product, float32 softmax,
probabilities cast to the value dtype for the mix.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ('xla', 'cudnn')


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          implementation: str = 'xla', zero_tokens: int = 0) -> jax.Array:
  """Full, unmasked softmax attention with scale 1/sqrt(head_dim) (the official `minimal_a2a`/SDPA math).

  Args:
    query: [B, Sq, heads, head_dim]; key, value: [B, Sk, heads, head_dim].
    implementation: 'xla' (any platform and dtype) or 'cudnn' (GPU flash attention; bf16/fp16 only).
    zero_tokens: the keys and values continue with this many tokens whose key and value are both zero, left out
      of `key`/`value`. Each has logit 0 and adds nothing to the mix, so it only adds exp(0) to the softmax
      denominator: the result equals attention over the full padded sequence without computing the padding (the
      T5 context is zero-padded to 512 tokens; see cosmos_jax.nn.dit's `text_context_tokens`).

  Returns:
    [B, Sq, heads, head_dim] in the query's dtype.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'attention implementation {implementation!r} is not one of {IMPLEMENTATIONS}')
  if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
    raise ValueError(f'attention expects [B,S,heads,head_dim] inputs, got query {query.shape}, key {key.shape}, '
                     f'value {value.shape}')
  if key.shape != value.shape or query.shape[0] != key.shape[0] or query.shape[2:] != key.shape[2:]:
    raise ValueError(f'attention needs key and value of one shape [B,Sk,heads,head_dim] matching the query\'s B, '
                     f'heads and head_dim; got query {query.shape}, key {key.shape}, value {value.shape}')
  if zero_tokens < 0:
    raise ValueError(f'zero_tokens must be >= 0, got {zero_tokens}')
  if zero_tokens:  # the cuDNN kernel has no implicit padding; such (cross-attention) contexts are short
    return _xla_attention(query, key, value, int(zero_tokens))
  if implementation == 'cudnn':
    if query.dtype not in (jnp.bfloat16, jnp.float16):
      raise ValueError(f"cuDNN flash attention needs bfloat16 or float16 inputs, got {query.dtype}; use dtype "
                       "'bfloat16' or attention 'xla'")
    return jax.nn.dot_product_attention(query, key, value, implementation='cudnn')
  return _xla_attention(query, key, value, 0)


def _heads_first(x: jax.Array) -> jax.Array:
  """[B, S, heads, D] <-> [B, heads, S, D]."""
  return jnp.swapaxes(x, 1, 2)


def _probabilities(q: jax.Array, k_t: jax.Array, zero_tokens: int) -> jax.Array:
  """softmax(q k^T / sqrt(D)) in float32; q [B,H,Sq,D], k_t [B,H,D,Sk] (the key already transposed); with
  `zero_tokens` more logits of 0 in the normalisation (their probabilities are not returned)."""
  logits = jnp.matmul(q, k_t, preferred_element_type=jnp.float32) * jnp.float32(1.0 / math.sqrt(q.shape[-1]))
  if not zero_tokens:
    return jax.nn.softmax(logits, axis=-1)
  # One more logit, log(zero_tokens), stands for all of them: exp(log n) = n times exp(0).
  padding = jnp.full(logits.shape[:-1] + (1,), math.log(zero_tokens), logits.dtype)
  return jax.nn.softmax(jnp.concatenate([logits, padding], axis=-1), axis=-1)[..., :-1]


def _forward(query, key, value, zero_tokens):
  q, v = _heads_first(query), _heads_first(value)
  k_t = jnp.transpose(key, (0, 2, 3, 1))
  probs = _probabilities(q, k_t, zero_tokens)
  out = jnp.matmul(probs.astype(value.dtype), v)
  return _heads_first(out).astype(query.dtype), (q, k_t, v, probs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _xla_attention(query, key, value, zero_tokens):
  return _forward(query, key, value, zero_tokens)[0]


def _xla_attention_bwd(zero_tokens, residuals, d_out):
  """Gradients with every [Sq, Sk] matrix as a left operand: dK and dV are formed transposed ([D, Sk]) and the
  small results turned round, instead of transposing the large probability matrix. Zero tokens change nothing
  here: their values are zero, so their probabilities do not reach the output, and the softmax gradient
  p·(dp - Σ dp·p) sums over the real tokens only."""
  del zero_tokens
  q, k_t, v, probs = residuals
  d_out = _heads_first(d_out)
  d_probs = jnp.matmul(d_out, jnp.swapaxes(v, -1, -2), preferred_element_type=jnp.float32)
  d_logits = probs * (d_probs - jnp.sum(d_probs * probs, axis=-1, keepdims=True))
  d_logits = (d_logits * jnp.float32(1.0 / math.sqrt(q.shape[-1]))).astype(q.dtype)
  d_q = jnp.matmul(d_logits, jnp.swapaxes(k_t, -1, -2))
  d_k_t = jnp.matmul(jnp.swapaxes(q, -1, -2), d_logits)
  d_v_t = jnp.matmul(jnp.swapaxes(d_out, -1, -2), probs.astype(d_out.dtype))
  to_bshd = lambda x_t: jnp.transpose(x_t, (0, 3, 1, 2))
  return _heads_first(d_q), to_bshd(d_k_t).astype(k_t.dtype), to_bshd(d_v_t).astype(v.dtype)


_xla_attention.defvjp(_forward, _xla_attention_bwd)
