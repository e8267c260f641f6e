"""Reading and writing official PyTorch checkpoints (.pt/.pth and .safetensors), one tensor at a time.

`open_state_dict(path)` returns a lazy read-only `Mapping[name, np.ndarray]`: opening it reads only the names,
shapes and dtypes; each `[name]` reads that one tensor from disk and returns a fresh numpy array in the stored
dtype (bfloat16 as `ml_dtypes.bfloat16`). `rules.load_state_dict` reads each value once, so converting through this
mapping holds at most one source tensor besides the converted parameters.

Safety: `.pt` files go through `torch.load(weights_only=True)` only (no arbitrary unpickling); safetensors headers
are JSON. Anything unreadable raises a ValueError naming the file and what is wrong with it.

Memory: a zip-format `.pt` is memory-mapped (`mmap=True`); pages of a mapped file that have been read count in the
process's resident set even though they are clean page cache, so after copying a tensor out we tell the kernel to
drop them from our mapping (`madvise(MADV_DONTNEED)`, Linux). Without that, reading a whole checkpoint would leave a
full copy of the file resident next to the converted parameters. Safetensors files are read with plain `readinto`
calls (no mapping at all).

Why not the `safetensors` library here (it is used for the small text store): its writer takes a whole dict of
arrays, so exporting the 2B DiT would first materialise every tensor, and its reader memory-maps the file, leaving
every page read resident. benchmarks/safetensors_io.py measures both side by side (1 GiB bf16 file, 64 tensors,
medians of 3 on the 2-core CPU machine): write peak 1056 MiB (library) vs 64 MiB (here), read peak 1040 MiB vs
16 MiB; the file format is the same, and tests/convert/test_torch_io.py reads our files with the library.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import mmap
import os
import pathlib
import pickle
import re
import struct
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np

PathLike = str | os.PathLike

TORCH_SUFFIXES = ('.pt', '.pth')
SAFETENSORS_SUFFIXES = ('.safetensors',)

# safetensors dtype codes (little-endian storage).
_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    'F64': np.dtype(np.float64), 'F32': np.dtype(np.float32), 'F16': np.dtype(np.float16),
    'BF16': np.dtype(ml_dtypes.bfloat16), 'F8_E4M3': np.dtype(ml_dtypes.float8_e4m3fn),
    'F8_E5M2': np.dtype(ml_dtypes.float8_e5m2), 'I64': np.dtype(np.int64), 'I32': np.dtype(np.int32),
    'I16': np.dtype(np.int16), 'I8': np.dtype(np.int8), 'U64': np.dtype(np.uint64), 'U32': np.dtype(np.uint32),
    'U16': np.dtype(np.uint16), 'U8': np.dtype(np.uint8), 'BOOL': np.dtype(np.bool_),
}
_SAFETENSORS_CODES = {dtype: code for code, dtype in _SAFETENSORS_DTYPES.items()}
# A header larger than this is not a real safetensors header (the library's own limit is 100 MB).
_MAX_SAFETENSORS_HEADER = 100_000_000

# Transformer Engine's per-module FP8 metadata: may be stored as a byte tensor, None or bytes depending on the TE
# version. It is never converted, so a non-tensor value there is tolerated (and left out of the mapping).
_NON_TENSOR_TOLERATED = re.compile(r'(.*\.)?_extra_state')


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  shape: tuple[int, ...]
  dtype: np.dtype


class LazyStateDict(Mapping):
  """Read-only name -> np.ndarray mapping over a checkpoint file; values are read from disk on access."""

  path: pathlib.Path
  _infos: dict[str, TensorInfo]

  def info(self, key: str) -> TensorInfo:
    """Shape and dtype of a tensor, without reading it."""
    return self._infos[key]

  def __iter__(self) -> Iterator[str]:
    return iter(self._infos)

  def __len__(self) -> int:
    return len(self._infos)

  def __contains__(self, key) -> bool:
    return key in self._infos

  def nbytes(self) -> int:
    return sum(int(np.prod(i.shape)) * i.dtype.itemsize for i in self._infos.values())

  def close(self) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# --------------------------------------------------------------------------------------------------------------
# safetensors.


class SafetensorsStateDict(LazyStateDict):
  """A .safetensors file: 8-byte little-endian header length, JSON header, then the raw tensor bytes."""

  def __init__(self, path: PathLike):
    self.path = pathlib.Path(path)
    self._file = open(self.path, 'rb')
    try:
      self._infos, self._spans, self.metadata = self._parse_header()
    except BaseException:
      self._file.close()
      raise

  def _corrupt(self, what: str) -> ValueError:
    return ValueError(f'{self.path}: not a valid safetensors file (truncated or corrupt?): {what}')

  def _parse_header(self):
    size = os.fstat(self._file.fileno()).st_size
    head = self._file.read(8)
    if len(head) < 8:
      raise self._corrupt(f'the file has {size} bytes, fewer than the 8-byte header length')
    (header_len,) = struct.unpack('<Q', head)
    if header_len > min(size - 8, _MAX_SAFETENSORS_HEADER):
      raise self._corrupt(f'header length {header_len} exceeds the {size - 8} bytes after it')
    try:
      header = json.loads(self._file.read(header_len).decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise self._corrupt(f'header is not JSON ({e})') from None
    if not isinstance(header, dict):
      raise self._corrupt(f'header is a {type(header).__name__}, not a JSON object')
    metadata = header.pop('__metadata__', None) or {}
    data_start, data_size = 8 + header_len, size - 8 - header_len
    infos, spans = {}, {}
    for name, entry in header.items():
      try:
        dtype = _SAFETENSORS_DTYPES[entry['dtype']]
        shape = tuple(int(d) for d in entry['shape'])
        begin, end = (int(o) for o in entry['data_offsets'])
      except (KeyError, TypeError, ValueError) as e:
        raise self._corrupt(f'bad header entry for {name!r}: {entry!r} ({type(e).__name__}: {e})') from None
      expected = int(np.prod(shape)) * dtype.itemsize
      if end - begin != expected or begin < 0:
        raise self._corrupt(f'{name!r}: data_offsets {[begin, end]} hold {end - begin} bytes, '
                            f'shape {shape} {entry["dtype"]} needs {expected}')
      if end > data_size:
        raise self._corrupt(f'{name!r} ends at byte {end} of the data section, which has only {data_size} bytes')
      infos[name] = TensorInfo(shape, dtype)
      spans[name] = (data_start + begin, expected)
    return infos, spans, metadata

  def __getitem__(self, key: str) -> np.ndarray:
    info = self._infos[key]
    offset, nbytes = self._spans[key]
    out = np.empty(info.shape, info.dtype)
    self._file.seek(offset)
    got = self._file.readinto(memoryview(out.reshape(-1).view(np.uint8)))
    if got != nbytes:
      raise self._corrupt(f'{key!r}: read {got} of {nbytes} bytes')
    return out

  def close(self) -> None:
    self._file.close()


def save_safetensors(state_dict: Mapping[str, Any], path: PathLike, metadata: Mapping[str, str] | None = None) -> None:
  """Writes a .safetensors file one tensor at a time (no serialised copy of the whole dict in memory)."""
  # Two passes over the mapping (header, then data), holding one tensor at a time: a lazy mapping (e.g. an export
  # view) then never materialises the whole state_dict.
  header, offset = {}, 0
  for name in state_dict:
    value = np.asarray(state_dict[name])
    if value.dtype not in _SAFETENSORS_CODES:
      raise ValueError(f'cannot write {name!r} to safetensors: dtype {value.dtype} has no safetensors code')
    header[name] = {'dtype': _SAFETENSORS_CODES[value.dtype], 'shape': list(value.shape),
                    'data_offsets': [offset, offset + value.nbytes]}
    offset += value.nbytes
    del value
  if metadata:
    header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
  blob = json.dumps(header, separators=(',', ':')).encode('utf-8')
  blob += b' ' * (-len(blob) % 8)  # the data section starts 8-byte aligned
  with _atomic_file(path) as f:
    f.write(struct.pack('<Q', len(blob)))
    f.write(blob)
    for name in header:
      if name == '__metadata__':
        continue
      value = np.ascontiguousarray(np.asarray(state_dict[name]))
      f.write(memoryview(value.reshape(-1).view(np.uint8)))


# --------------------------------------------------------------------------------------------------------------
# PyTorch .pt / .pth.


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('reading or writing .pt/.pth files needs torch: pip install "cosmos_jax[torch]"') from e
  return torch


def torch_to_numpy(tensor) -> np.ndarray:
  """A torch CPU tensor -> numpy array sharing its memory (bfloat16 via ml_dtypes; numpy has no bf16)."""
  torch = _torch()
  tensor = tensor.detach()
  if tensor.dtype == torch.bfloat16:
    return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return tensor.numpy()


def numpy_to_torch(array: np.ndarray):
  torch = _torch()
  array = np.asarray(array)
  if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
    array = array.copy(order='C')
  if array.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(array)


def _weights_only_detail(message: str) -> str:
  """The line of torch's weights_only refusal that names the offending object."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  for line in lines:
    if re.search(r'unsupported|not an allowed|blocked|unknown', line, re.IGNORECASE) and 'weights_only' not in line:
      return line
  return lines[-1] if lines else message


class _PageReleaser:
  """Drops pages of a read-only private file mapping from our resident set after they have been copied out.

  Only ranges that lie inside a mapping of the checkpoint file itself are advised (never anonymous memory, where
  MADV_DONTNEED would discard data). Does nothing where /proc or madvise is unavailable.
  """

  _MADV_DONTNEED = 4

  def __init__(self, path: pathlib.Path):
    self._ranges: list[tuple[int, int]] = []
    self._madvise = None
    if not sys.platform.startswith('linux'):
      return
    real = os.path.realpath(path)
    try:
      with open('/proc/self/maps') as maps:
        for line in maps:
          fields = line.split(maxsplit=5)
          if len(fields) == 6 and fields[5].rstrip('\n') == real:
            start, end = (int(x, 16) for x in fields[0].split('-'))
            self._ranges.append((start, end))
      libc = ctypes.CDLL(None, use_errno=True)
      libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
      self._madvise = libc.madvise
    except (OSError, AttributeError):
      self._ranges = []

  def release(self, address: int, nbytes: int) -> None:
    if self._madvise is None or nbytes <= 0:
      return
    start = address - address % mmap.PAGESIZE
    end = address + nbytes
    for lo, hi in self._ranges:
      if lo <= start and end <= hi:
        self._madvise(start, end - start, self._MADV_DONTNEED)
        return


class TorchStateDict(LazyStateDict):
  """A flat `{name: tensor}` dict saved by `torch.save`, loaded with `torch.load(weights_only=True)`.

  Zip-format files (every torch >= 1.6 save) are memory-mapped, so nothing is read before it is asked for; legacy
  (pre-zip) files are loaded whole.
  """

  def __init__(self, path: PathLike):
    torch = _torch()
    self.path = pathlib.Path(path)
    self.memory_mapped = zipfile.is_zipfile(self.path)
    try:
      obj = torch.load(self.path, map_location='cpu', weights_only=True, mmap=self.memory_mapped)
    except pickle.UnpicklingError as e:
      if 'weights only' in str(e).lower():
        raise ValueError(f'{self.path}: refused to load: the pickle holds objects other than tensors and plain '
                         f'containers (torch.load weights_only=True): {_weights_only_detail(str(e))}') from None
      raise ValueError(f'{self.path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}') from None
    except Exception as e:  # torch raises RuntimeError/EOFError/KeyError/... for damaged archives
      first = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise ValueError(f'{self.path}: not a readable PyTorch checkpoint (truncated or corrupt?): '
                       f'{type(e).__name__}: {first}') from None
    if not isinstance(obj, Mapping):
      raise ValueError(f'{self.path}: expected a flat dict of name -> tensor (a state_dict), got a '
                       f'{type(obj).__name__}')
    tensors, bad = {}, []
    for key, value in obj.items():
      if isinstance(key, str) and isinstance(value, torch.Tensor):
        tensors[key] = value
      elif isinstance(key, str) and _NON_TENSOR_TOLERATED.fullmatch(key):
        continue
      else:
        hint = ' (a nested dict: pass the inner state_dict)' if isinstance(value, Mapping) else ''
        bad.append(f'{key!r}: {type(value).__name__}{hint}')
    if bad:
      raise ValueError(f'{self.path}: expected a flat dict of name -> tensor (a state_dict); {len(bad)} entries are '
                       f'not tensors: {", ".join(bad[:10])}{" ..." if len(bad) > 10 else ""}')
    self._tensors = tensors
    self._infos = {}
    for key, tensor in tensors.items():
      try:
        dtype = torch_to_numpy(tensor.new_empty((0,))).dtype
      except (TypeError, RuntimeError):
        raise ValueError(f'{self.path}: tensor {key!r} has dtype {tensor.dtype}, which has no numpy equivalent') from None
      self._infos[key] = TensorInfo(tuple(tensor.shape), dtype)
    self._pages = _PageReleaser(self.path) if self.memory_mapped else None

  def __getitem__(self, key: str) -> np.ndarray:
    tensor = self._tensors[key]
    try:
      out = np.array(torch_to_numpy(tensor), copy=True)
    except RuntimeError as e:  # e.g. the mapped file shrank under us
      raise ValueError(f'{self.path}: cannot read tensor {key!r}: {e}') from None
    if self._pages is not None:
      storage = tensor.untyped_storage()
      self._pages.release(storage.data_ptr(), storage.nbytes())
    return out

  def close(self) -> None:
    self._tensors = {}


def save_torch(state_dict: Mapping[str, Any], path: PathLike) -> None:
  """Writes a flat `{name: tensor}` dict with `torch.save` (loadable with `torch.load(weights_only=True)`)."""
  torch = _torch()
  tensors = {name: numpy_to_torch(np.asarray(value)) for name, value in state_dict.items()}
  with _atomic_file(path) as f:
    torch.save(tensors, f)


# --------------------------------------------------------------------------------------------------------------
# Dispatch.


def open_state_dict(path: PathLike) -> LazyStateDict:
  """The lazy state_dict of a .pt/.pth or .safetensors file (chosen by suffix)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'checkpoint file not found: {path}')
  suffix = path.suffix.lower()
  if suffix in SAFETENSORS_SUFFIXES:
    return SafetensorsStateDict(path)
  if suffix in TORCH_SUFFIXES:
    return TorchStateDict(path)
  raise ValueError(f'{path}: unknown checkpoint suffix {suffix!r}; expected one of '
                   f'{TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}')


def save_state_dict(state_dict: Mapping[str, Any], path: PathLike) -> None:
  """Writes .safetensors or .pt/.pth (by suffix), atomically (a temporary file renamed into place)."""
  suffix = pathlib.Path(path).suffix.lower()
  if suffix in SAFETENSORS_SUFFIXES:
    save_safetensors(state_dict, path)
  elif suffix in TORCH_SUFFIXES:
    save_torch(state_dict, path)
  else:
    raise ValueError(f'{path}: unknown output suffix {suffix!r}; expected one of '
                     f'{TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}')


@contextlib.contextmanager
def _atomic_file(path: PathLike):
  """Yields a binary file in the destination's directory; renamed onto `path` only if the block succeeds."""
  path = pathlib.Path(path)
  if not path.parent.is_dir():
    raise FileNotFoundError(f'output directory does not exist: {path.parent}')
  fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
  try:
    with os.fdopen(fd, 'wb') as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
