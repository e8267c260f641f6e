"""cached_jit: a traced program written by jax.export and read back by a later (simulated) process without
tracing, bit-identical to jax.jit; keys separate bound values and shapes; plain jit without a directory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax import program_cache

TRACES = []


def _program(x, w, *, scale):
  TRACES.append(x.shape)  # runs only while tracing
  return {'y': jnp.tanh(x @ w).sum(axis=-1) * scale, 'n': jnp.max(x)}


def _inputs(rows=8):
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.standard_normal((rows, 16)), jnp.float32),
          jnp.asarray(rng.standard_normal((16, 4)), jnp.float32))


def test_round_trip_skips_tracing_and_matches_jit_bitwise(tmp_path):
  x, w = _inputs()
  expected = jax.jit(functools.partial(_program, scale=3.0))(x, w)
  TRACES.clear()
  first = program_cache.cached_jit(functools.partial(_program, scale=3.0), directory_override=tmp_path)(x, w)
  files = sorted(tmp_path.iterdir())
  assert len(files) == 1 and files[0].suffix == '.jax_exported', files
  assert len(TRACES) == 1
  TRACES.clear()
  loaded = program_cache.cached_jit(functools.partial(_program, scale=3.0), directory_override=tmp_path)
  second = loaded(x, w)
  loaded(x, w)
  assert loaded._cache_size() == 1
  assert not TRACES, 'the second instance traced the Python function instead of reading the exported program'
  for out in (first, second):
    for key in expected:
      np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(expected[key]), err_msg=key)


def test_key_separates_bound_values_and_shapes(tmp_path):
  x, w = _inputs()
  program_cache.cached_jit(functools.partial(_program, scale=3.0), directory_override=tmp_path)(x, w)
  program_cache.cached_jit(functools.partial(_program, scale=2.0), directory_override=tmp_path)(x, w)
  program_cache.cached_jit(functools.partial(_program, scale=3.0), directory_override=tmp_path)(*_inputs(rows=5))
  assert len(list(tmp_path.iterdir())) == 3
  out = program_cache.cached_jit(functools.partial(_program, scale=2.0), directory_override=tmp_path)(x, w)
  np.testing.assert_array_equal(np.asarray(out['y']), np.asarray(jnp.tanh(x @ w).sum(axis=-1) * 2.0))


def test_without_directory_it_is_plain_jit(monkeypatch, tmp_path):
  monkeypatch.setattr(program_cache, 'directory', lambda: None)
  TRACES.clear()
  program = program_cache.cached_jit(functools.partial(_program, scale=1.0))
  program(*_inputs())
  program(*_inputs())
  assert len(TRACES) == 1 and not list(tmp_path.iterdir())


def test_unreadable_file_is_exported_again(tmp_path, caplog):
  x, w = _inputs()
  program_cache.cached_jit(functools.partial(_program, scale=3.0), directory_override=tmp_path)(x, w)
  (path,) = tmp_path.iterdir()
  path.write_bytes(b'not a flatbuffer')
  out = program_cache.cached_jit(functools.partial(_program, scale=3.0), directory_override=tmp_path)(x, w)
  assert 'cannot read the exported program' in caplog.text
  np.testing.assert_array_equal(np.asarray(out['n']), np.asarray(jnp.max(x)))
  assert path.read_bytes() != b'not a flatbuffer'


def test_refuses_functions_whose_closure_the_key_cannot_see():
  with pytest.raises(ValueError, match='module-level function'):
    program_cache.cached_jit(lambda x: x)
  with pytest.raises(ValueError, match='object address'):
    program_cache.cached_jit(functools.partial(_program, scale=object()))
