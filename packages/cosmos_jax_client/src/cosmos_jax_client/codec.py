"""Wire formats for numpy arrays: json_numpy-compatible JSON (HTTP) and msgpack (websocket). No pickle anywhere.

The server (cosmos_jax.serve) and every client use this module, so both ends agree by construction.

JSON (what the official ALOHA client and server exchange after `json_numpy.patch()`; NVlabs/cosmos-policy
18a2acc, cosmos_policy/experiments/robot/aloha/deploy.py:PolicyServer.get_server_action): an array or numpy scalar
is the object

    {"__numpy__": <base64 of the C-order bytes>, "dtype": "<f4" | "|u1" | ..., "shape": [...]}

(shape [] is a numpy scalar). The "double-encoded" variant wraps the whole request as {"encoded": <JSON string>}
and the reply is then a JSON string holding the json_numpy dump of the response.

msgpack (the openpi websocket format, so openpi-style clients interoperate): an array is the map
{"__ndarray__": True, "data": <bytes>, "dtype": <str>, "shape": [...]}, a numpy scalar
{"__npgeneric__": True, "data": <item>, "dtype": <str>}.

Only plain numeric dtypes travel (bool, signed and unsigned integers, float16/32/64, any byte order): object,
void (structured), complex, string and datetime dtypes are refused in both directions, and the byte count must
match dtype and shape. Every decoding problem is a `CodecError` (a ValueError) with a message for the client.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

ALLOWED_KINDS = 'biuf'  # bool, int, uint, float
ENCODED_KEY = 'encoded'


class CodecError(ValueError):
  """A payload that cannot be decoded (bad JSON, bad array object, refused dtype)."""


def _dtype(descr: Any) -> np.dtype:
  """A plain numeric dtype from its descriptor string, or CodecError."""
  if not isinstance(descr, str):
    raise CodecError(f'array dtype must be a descriptor string such as "<f4", got {descr!r}')
  try:
    dtype = np.dtype(descr)
  except TypeError as e:
    raise CodecError(f'array dtype {descr!r} is not a numpy dtype ({e})') from None
  if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
    raise CodecError(f'array dtype {descr!r} ({dtype}) is refused: only bool, integer and float arrays are accepted')
  return dtype


def _check_array_out(array: np.ndarray | np.generic) -> None:
  if array.dtype.kind not in ALLOWED_KINDS or array.dtype.fields is not None:
    raise CodecError(f'cannot send an array of dtype {array.dtype}: only bool, integer and float arrays travel')


def _shape(value: Any) -> tuple[int, ...]:
  if not isinstance(value, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                     for d in value):
    raise CodecError(f'array shape must be a list of non-negative integers, got {value!r}')
  return tuple(value)


def _from_bytes(data: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
  expected = math.prod(shape) * dtype.itemsize
  if len(data) != expected:
    raise CodecError(f'array of dtype {dtype.str} and shape {list(shape)} needs {expected} bytes, got {len(data)}')
  # A copy: frombuffer views are read-only and would pin the request body.
  return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


# JSON (json_numpy) -------------------------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
  if isinstance(obj, (np.ndarray, np.generic)):
    _check_array_out(obj)
    array = np.ascontiguousarray(obj)
    return {'__numpy__': base64.b64encode(array.tobytes()).decode('ascii'), 'dtype': array.dtype.str,
            'shape': list(np.shape(obj))}
  if hasattr(obj, '__array__'):  # jax arrays
    return _json_default(np.asarray(obj))
  raise TypeError(f'object of type {type(obj).__name__} is not JSON serialisable')


def _json_object_hook(obj: dict) -> Any:
  if '__numpy__' not in obj:
    return obj
  extra = sorted(set(obj) - {'__numpy__', 'dtype', 'shape'})
  if extra or 'dtype' not in obj or 'shape' not in obj:
    raise CodecError(f'a json_numpy array object has exactly the keys __numpy__, dtype and shape; got {sorted(obj)}')
  if not isinstance(obj['__numpy__'], str):
    raise CodecError('json_numpy "__numpy__" must be a base64 string')
  try:
    data = base64.b64decode(obj['__numpy__'], validate=True)
  except (binascii.Error, ValueError) as e:
    raise CodecError(f'json_numpy "__numpy__" is not valid base64 ({e})') from None
  shape = _shape(obj['shape'])
  array = _from_bytes(data, _dtype(obj['dtype']), shape)
  return array[()] if shape == () else array


def json_dumps(obj: Any) -> str:
  """JSON text with numpy arrays and scalars as json_numpy objects (NaN/inf refused)."""
  try:
    return json.dumps(obj, default=_json_default, allow_nan=False)
  except ValueError as e:
    raise CodecError(f'response is not valid JSON: {e}') from None


def json_loads(text: str | bytes) -> Any:
  """Parses JSON, turning json_numpy objects into numpy arrays. NaN/Infinity literals are accepted as floats (the
  runner rejects non-finite values with a field-specific message)."""
  try:
    return json.loads(text, object_hook=_json_object_hook)
  except CodecError:
    raise
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CodecError(f'request body is not valid JSON: {e}') from None
  except RecursionError:
    raise CodecError('request body nests too deeply') from None


def decode_request(body: bytes) -> tuple[Any, bool]:
  """(payload, double_encoded) of an HTTP request body: plain json_numpy JSON, or {"encoded": <JSON string>}."""
  payload = json_loads(body)
  if isinstance(payload, Mapping) and ENCODED_KEY in payload:
    if len(payload) != 1:
      raise CodecError(f'a double-encoded request holds only the key "{ENCODED_KEY}", got keys {sorted(payload)}')
    inner = payload[ENCODED_KEY]
    if not isinstance(inner, str):
      raise CodecError(f'"{ENCODED_KEY}" must be a JSON string, got {type(inner).__name__}')
    return json_loads(inner), True
  return payload, False


def encode_response(response: Any, double_encoded: bool) -> bytes:
  """The HTTP body: the json_numpy dump, or (double-encoded) a JSON string holding it, as the official server."""
  text = json_dumps(response)
  return (json.dumps(text) if double_encoded else text).encode('utf-8')


# msgpack (openpi format) -------------------------------------------------------------------------------------------


def _pack_default(obj: Any) -> Any:
  if isinstance(obj, np.ndarray):
    _check_array_out(obj)
    array = np.ascontiguousarray(obj)
    return {b'__ndarray__': True, b'data': array.tobytes(), b'dtype': array.dtype.str, b'shape': list(array.shape)}
  if isinstance(obj, np.generic):
    _check_array_out(obj)
    return {b'__npgeneric__': True, b'data': obj.item(), b'dtype': obj.dtype.str}
  if hasattr(obj, '__array__'):
    return _pack_default(np.asarray(obj))
  raise TypeError(f'object of type {type(obj).__name__} cannot be packed')


def _get(obj: dict, key: str) -> Any:
  for k in (key.encode(), key):
    if k in obj:
      return obj[k]
  raise CodecError(f'msgpack array map is missing {key!r} (has {sorted(str(k) for k in obj)})')


def _unpack_hook(obj: dict) -> Any:
  if b'__ndarray__' in obj or '__ndarray__' in obj:
    data = _get(obj, 'data')
    if not isinstance(data, (bytes, bytearray)):
      raise CodecError(f'msgpack array "data" must be binary, got {type(data).__name__}')
    return _from_bytes(bytes(data), _dtype(_decode_str(_get(obj, 'dtype'))), _shape(_get(obj, 'shape')))
  if b'__npgeneric__' in obj or '__npgeneric__' in obj:
    dtype = _dtype(_decode_str(_get(obj, 'dtype')))
    item = _get(obj, 'data')
    if not isinstance(item, (bool, int, float)):
      raise CodecError(f'msgpack numpy scalar "data" must be a number, got {type(item).__name__}')
    return dtype.type(item)
  return obj


def _decode_str(value: Any) -> Any:
  return value.decode('ascii', 'replace') if isinstance(value, bytes) else value


def packb(obj: Any) -> bytes:
  return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


def unpackb(data: bytes) -> Any:
  """Unpacks a msgpack message (maps may have bytes or str keys; string keys of plain maps come back as str)."""
  try:
    return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False, strict_map_key=False)
  except CodecError:
    raise
  except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as e:
    raise CodecError(f'message is not valid msgpack: {type(e).__name__}: {e}') from None
