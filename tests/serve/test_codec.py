"""Codecs: json_numpy interoperability with the real library (what the official client uses), msgpack in the
openpi format, and refusal of every dtype that could carry objects."""

import base64
import json

import json_numpy
import msgpack
import numpy as np
import pytest

from cosmos_jax_client import codec

ARRAYS = [np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(6, dtype='>i4'), np.array([True, False]),
          np.full((2, 2, 3), 200, np.uint8), np.linspace(0, 1, 5).astype(np.float16), np.zeros((0, 3), np.float64),
          np.arange(10, dtype=np.float64)[::2]]


@pytest.mark.parametrize('array', ARRAYS, ids=lambda a: f'{a.dtype.str}{a.shape}')
def test_json_numpy_interoperates_both_ways(array):
  ours = codec.json_loads(json_numpy.dumps({'x': array}))['x']
  assert ours.dtype == array.dtype and ours.shape == array.shape
  np.testing.assert_array_equal(ours, array)
  theirs = json_numpy.loads(codec.json_dumps({'x': array}))['x']
  assert theirs.dtype == array.dtype and theirs.shape == array.shape
  np.testing.assert_array_equal(theirs, array)


def test_json_numpy_scalars_and_nested_values():
  # (np.float64 subclasses float, so JSON writes it as a plain number; float32 travels as a json_numpy scalar.)
  payload = {'v': np.float32(0.25), 'n': np.int32(-3), 'list': [np.ones(2, np.float32), None, 'text', 1.5]}
  ours = codec.json_loads(json_numpy.dumps(payload))
  assert ours['v'] == 0.25 and ours['v'].dtype == np.float32 and ours['n'] == -3
  np.testing.assert_array_equal(ours['list'][0], np.ones(2, np.float32))
  assert ours['list'][1:] == [None, 'text', 1.5]
  theirs = json_numpy.loads(codec.json_dumps(payload))
  assert theirs['v'] == 0.25 and theirs['n'] == -3


def _array_object(dtype: str, data: bytes, shape):
  return {'__numpy__': base64.b64encode(data).decode(), 'dtype': dtype, 'shape': shape}


@pytest.mark.parametrize('dtype,match', [('|O', 'refused'), ('|V8', 'refused'), ('<c8', 'refused'), ('<U2', 'refused'),
                                         ('<M8[s]', 'refused'), ('not-a-dtype', 'not a numpy dtype'),
                                         (['<f4'], 'descriptor string')])
def test_json_refuses_non_numeric_dtypes(dtype, match):
  body = json.dumps({'x': _array_object(dtype, bytes(8), [1])})
  with pytest.raises(codec.CodecError, match=match):
    codec.json_loads(body)


@pytest.mark.parametrize('obj,match', [
    (_array_object('<f4', bytes(7), [2]), 'needs 8 bytes, got 7'),
    (_array_object('<f4', bytes(8), [-2]), 'non-negative integers'),
    ({'__numpy__': '***', 'dtype': '<f4', 'shape': [1]}, 'not valid base64'),
    ({'__numpy__': 'AAAA', 'dtype': '<f4'}, 'exactly the keys'),
])
def test_json_refuses_malformed_array_objects(obj, match):
  with pytest.raises(codec.CodecError, match=match):
    codec.json_loads(json.dumps({'x': obj}))


def test_json_refuses_object_arrays_on_output():
  with pytest.raises(codec.CodecError, match='dtype object'):
    codec.json_dumps({'x': np.array([{}], dtype=object)})


def test_double_encoded_request_and_response():
  inner = json_numpy.dumps({'proprio': np.arange(14, dtype=np.float32), 'task_description': 't'})
  payload, double = codec.decode_request(json.dumps({'encoded': inner}).encode())
  assert double and payload['task_description'] == 't'
  np.testing.assert_array_equal(payload['proprio'], np.arange(14, dtype=np.float32))
  payload, double = codec.decode_request(inner.encode())
  assert not double and payload['proprio'].shape == (14,)
  reply = codec.encode_response({'actions': np.ones((2, 3))}, double_encoded=True)
  text = json.loads(reply)  # the official server's reply: a JSON string holding the json_numpy dump
  assert isinstance(text, str)
  np.testing.assert_array_equal(json_numpy.loads(text)['actions'], np.ones((2, 3)))
  with pytest.raises(codec.CodecError, match='only the key'):
    codec.decode_request(json.dumps({'encoded': inner, 'other': 1}).encode())
  with pytest.raises(codec.CodecError, match='must be a JSON string'):
    codec.decode_request(json.dumps({'encoded': 3}).encode())
  with pytest.raises(codec.CodecError, match='not valid JSON'):
    codec.decode_request(b'{"primary_image": [1, 2')


@pytest.mark.parametrize('array', ARRAYS, ids=lambda a: f'{a.dtype.str}{a.shape}')
def test_msgpack_round_trip(array):
  out = codec.unpackb(codec.packb({'x': array, 'nested': [array], 's': np.float32(1.5)}))
  for got in (out['x'], out['nested'][0]):
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)
  assert out['s'] == np.float32(1.5) and out['s'].dtype == np.float32


def test_msgpack_reads_the_openpi_layout():
  # What openpi_client.msgpack_numpy.Packer produces: bytes keys, dtype.str, shape as a list.
  array = np.arange(6, dtype=np.float32).reshape(2, 3)
  data = msgpack.packb({'obs': {b'__ndarray__': True, b'data': array.tobytes(), b'dtype': array.dtype.str,
                                b'shape': [2, 3]}})
  np.testing.assert_array_equal(codec.unpackb(data)['obs'], array)
  packed = msgpack.unpackb(codec.packb({'a': array}), raw=False, strict_map_key=False)['a']
  assert packed[b'__ndarray__'] is True and packed[b'dtype'] == '<f4' and packed[b'shape'] == [2, 3]


@pytest.mark.parametrize('dtype', ['|O', '|V4', '<c8'])
def test_msgpack_refuses_object_and_void_dtypes(dtype):
  data = msgpack.packb({b'__ndarray__': True, b'data': bytes(8), b'dtype': dtype, b'shape': [1]})
  with pytest.raises(codec.CodecError, match='refused'):
    codec.unpackb(data)
  with pytest.raises(codec.CodecError):
    codec.packb({'x': np.zeros(1, dtype=np.dtype(dtype) if dtype != '|O' else object)})


def test_msgpack_refuses_garbage():
  with pytest.raises(codec.CodecError, match='not valid msgpack'):
    codec.unpackb(b'\xc1\xc1\xc1')
  with pytest.raises(codec.CodecError, match='needs 16 bytes'):
    codec.unpackb(msgpack.packb({b'__ndarray__': True, b'data': bytes(3), b'dtype': '<f4', b'shape': [4]}))
