"""The XLA attention path (hand-written backward) against JAX's reference attention and its autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.nn import attention


def _inputs(dtype, sq=12, sk=7):
  keys = jax.random.split(jax.random.key(0), 4)
  shape_q, shape_kv = (2, sq, 3, 8), (2, sk, 3, 8)
  q, k, v = (jax.random.normal(key, shape, jnp.float32).astype(dtype)
             for key, shape in zip(keys, (shape_q, shape_kv, shape_kv)))
  weights = jax.random.normal(keys[3], shape_q, jnp.float32)
  return q, k, v, weights


def _report(name, ours, ref):
  ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
  err = np.abs(ours - ref).max()
  return f'{name}: max abs error {err:.3g}, relative {err / np.abs(ref).max():.3g}'


@pytest.mark.parametrize('sk', [12, 7])
def test_forward_and_gradients_match_reference(sk):
  q, k, v, weights = _inputs(jnp.float32, sk=sk)
  with jax.default_matmul_precision('highest'):
    out = attention.dot_product_attention(q, k, v)
    ref = jax.nn.dot_product_attention(q, k, v)
    loss = lambda fn: (lambda *a: jnp.sum(fn(*a) * weights))
    grads = jax.grad(loss(attention.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
    ref_grads = jax.grad(loss(jax.nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6, err_msg=_report('output', out, ref))
  for name, g, r in zip(('dq', 'dk', 'dv'), grads, ref_grads):
    assert g.shape == r.shape and g.dtype == r.dtype, (name, g.shape, g.dtype, r.shape, r.dtype)
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5, err_msg=_report(name, g, r))


def test_bfloat16_gradients_close_to_float32():
  q, k, v, weights = _inputs(jnp.float32)
  loss = lambda *a: jnp.sum(attention.dot_product_attention(*a).astype(jnp.float32) * weights)
  grads32 = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  grads16 = jax.grad(loss, argnums=(0, 1, 2))(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
  for name, g16, g32 in zip(('dq', 'dk', 'dv'), grads16, grads32):
    assert g16.dtype == jnp.bfloat16, (name, g16.dtype)
    np.testing.assert_allclose(np.asarray(g16, np.float32), g32, rtol=0.05, atol=0.05,
                               err_msg=_report(name, g16, g32))


def test_bad_inputs_raise():
  q, k, v, _ = _inputs(jnp.float32)
  with pytest.raises(ValueError, match='not one of'):
    attention.dot_product_attention(q, k, v, implementation='flash')
  with pytest.raises(ValueError, match='one shape'):
    attention.dot_product_attention(q, k, v[:, :3])
  with pytest.raises(ValueError, match='bfloat16 or float16'):
    attention.dot_product_attention(q, k, v, implementation='cudnn')


@pytest.mark.parametrize('zero_tokens', [1, 505])
def test_zero_tokens_equal_explicit_zero_padding(zero_tokens):
  """Leaving out trailing zero keys/values (the zero-padded T5 context) changes neither output nor gradients."""
  q, k, v, weights = _inputs(jnp.float32, sk=7)
  pad = lambda x: jnp.concatenate([x, jnp.zeros((x.shape[0], zero_tokens) + x.shape[2:], x.dtype)], axis=1)
  loss = lambda fn: (lambda *a: jnp.sum(fn(*a) * weights))
  implicit = lambda q, k, v: attention.dot_product_attention(q, k, v, zero_tokens=zero_tokens)
  explicit = lambda q, k, v: attention.dot_product_attention(q, pad(k), pad(v))
  with jax.default_matmul_precision('highest'):
    out, ref = implicit(q, k, v), explicit(q, k, v)
    grads = jax.grad(loss(implicit), argnums=(0, 1, 2))(q, k, v)
    ref_grads = jax.grad(loss(explicit), argnums=(0, 1, 2))(q, k, v)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6, err_msg=_report('output', out, ref))
  for name, g, r in zip(('dq', 'dk', 'dv'), grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6, err_msg=_report(name, g, r))


def test_zero_tokens_must_not_be_negative():
  q, k, v, _ = _inputs(jnp.float32)
  with pytest.raises(ValueError, match='zero_tokens must be >= 0'):
    attention.dot_product_attention(q, k, v, zero_tokens=-1)
