"""Frame decoding and the PIL resize that every official reader uses.

* MP4: decoded with OpenCV (`opencv-python-headless`), BGR -> RGB, exactly as the official `load_video_as_images`.
  Checked bit-exact against the official decode of the fixture MP4s (OpenCV 5.0, tests/data/test_aloha.py).
* JPEG bytes (rollouts, LIBERO/RoboCasa `*_jpeg` datasets): decoded with PIL, as the official
  `decode_single_jpeg_frame`.
* Resize to the square training size: PIL `Image.resize((s, s))` with its default filter (bicubic for RGB), frame
  by frame, skipped when the frame already has the size (official dataset_utils.py:resize_images).
"""

from __future__ import annotations

import io
import os

import cv2
import h5py
import numpy as np
from PIL import Image


def read_mp4(path: str | os.PathLike) -> np.ndarray:
  """All frames of an MP4 as (T, H, W, 3) uint8 RGB. Errors name the file."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'video file {path} does not exist')
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise ValueError(f'could not open video file {path} (unreadable or not an MP4 OpenCV can decode)')
    frames = []
    while True:
      ok, frame_bgr = capture.read()
      if not ok:
        break
      frames.append(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
  finally:
    capture.release()
  if not frames:
    raise ValueError(f'no frames could be decoded from video file {path}')
  return np.stack(frames).astype(np.uint8, copy=False)


def decode_jpeg(data) -> np.ndarray:
  """One JPEG (bytes or a uint8 byte array, as stored in HDF5 vlen datasets) -> (H, W, 3) uint8."""
  raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
  with Image.open(io.BytesIO(raw)) as image:
    return np.asarray(image.convert('RGB') if image.mode != 'RGB' else image, dtype=np.uint8).copy()


def read_jpeg_sequence(path: str, key: str) -> np.ndarray:
  """Every frame of an HDF5 dataset of JPEG byte arrays (vlen uint8, one element per step) -> (T, H, W, 3) uint8.
  A frame that does not decode is a ValueError naming the file, key and frame."""
  with h5py.File(path, 'r') as f:
    if key not in f:
      raise ValueError(f'{path}: missing key {key!r}')
    frames = []
    for i, data in enumerate(f[key]):
      try:
        frames.append(decode_jpeg(data))
      except Exception as e:  # PIL raises several types for corrupt data
        raise ValueError(f'{path}: {key}[{i}] is not a decodable JPEG ({type(e).__name__}: {e})') from e
  if not frames:
    raise ValueError(f'{path}: {key} holds no frames')
  shapes = {frame.shape for frame in frames}
  if len(shapes) != 1:
    raise ValueError(f'{path}: {key} frames have different sizes {sorted(shapes)}')
  return np.stack(frames)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
  """(H, W, 3) uint8 -> JPEG bytes with PIL (quality 95, as the official LIBERO/RoboCasa preprocessing)."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def resize_square(images: np.ndarray, size: int) -> np.ndarray:
  """(T, H, W, 3) uint8 -> (T, size, size, 3) with PIL's default (bicubic) filter; a copy if already that size."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f'expected (T, H, W, 3) uint8 images, got shape {images.shape} dtype {images.dtype}')
  if images.shape[1:3] == (size, size):
    return images.copy()
  out = np.empty((images.shape[0], size, size, 3), np.uint8)
  for i, frame in enumerate(images):
    out[i] = np.asarray(Image.fromarray(frame).resize((size, size)))
  return out
