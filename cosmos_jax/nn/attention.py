"""The one attention entry point: plain softmax attention through XLA, or cuDNN flash attention on GPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ('xla', 'cudnn')


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          implementation: str = 'xla') -> jax.Array:
  """Full, unmasked softmax attention with scale 1/sqrt(head_dim) (the official `minimal_a2a`/SDPA math).

  Args:
    query: [B, Sq, heads, head_dim]; key, value: [B, Sk, heads, head_dim].
    implementation: 'xla' (any platform and dtype) or 'cudnn' (GPU flash attention; bf16/fp16 only).

  Returns:
    [B, Sq, heads, head_dim] in the query's dtype.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'attention implementation {implementation!r} is not one of {IMPLEMENTATIONS}')
  if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
    raise ValueError(f'attention expects [B,S,heads,head_dim] inputs, got query {query.shape}, key {key.shape}, '
                     f'value {value.shape}')
  if implementation == 'cudnn' and query.dtype not in (jnp.bfloat16, jnp.float16):
    raise ValueError(f"cuDNN flash attention needs bfloat16 or float16 inputs, got {query.dtype}; use dtype "
                     "'bfloat16' or attention 'xla'")
  return jax.nn.dot_product_attention(query, key, value, implementation=implementation)
