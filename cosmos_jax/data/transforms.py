"""Image transforms of the official training augmentation and test-time preprocessing, in numpy, channels-last.

These reproduce torchvision's uint8 *tensor* code paths bit for bit (against the official augmented fixture sample,
and against torch's vectorised kernels; tests/data/test_transforms.py), because the official dataset applies
torchvision.transforms.functional to uint8 (C, T, H, W) tensors. torch's own float32 results differ between CPUs
(fused multiply-add or not, vector width) at the rare values within float32 rounding of a rounding boundary; our
numpy arithmetic gives the same bits on every CPU.

* `resize_bilinear_antialias`: `F.resize(..., antialias=True)` = float32 `interpolate(mode='bilinear',
  antialias=True)` (separable: width pass, then height pass, float32 weights, fused multiply-add accumulation),
  then round-half-even to uint8.
* `rotate_nearest`: `F.rotate(angle, expand=False)`: a float32 affine grid and nearest `grid_sample`, fill 0.
* `adjust_brightness/contrast/saturation/hue`: torchvision's float32 blends (truncating casts to uint8) and its
  RGB<->HSV round trip.

`augment` applies one `AugmentParams` draw to all images of a sample (official
cosmos_policy/datasets/dataset_utils.py:apply_image_aug): 213-px random resized crop
back to the image size (at 224), rotation U(-5, 5) degrees, brightness U(0.7, 1.3), contrast U(0.6, 1.4),
saturation U(0.5, 1.5), hue U(-0.05, 0.05), in that order. `test_time_transform` is the centre crop of side
int(S * sqrt(0.9)) (212 at 224) resized back with bilinear antialias. Black placeholder frames stay black.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

CROP_AREA_FRACTION = 0.9


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """One draw of the training augmentation, shared by every image of a sample."""

  top: int
  left: int
  crop: int
  angle: float
  brightness: float
  contrast: float
  saturation: float
  hue: float


def random_crop_side(image_size: int) -> int:
  """torchvision RandomResizedCrop side for scale (0.9, 0.9), ratio (1, 1): round(sqrt(0.9 * S^2)) (213 at 224)."""
  return int(round(math.sqrt(CROP_AREA_FRACTION * image_size * image_size)))


def test_crop_side(image_size: int) -> int:
  """The test-time centre crop side, int(S * sqrt(0.9)) (212 at 224; the training crop is 213)."""
  return int(image_size * math.sqrt(CROP_AREA_FRACTION))


def draw_augment_params(rng: np.random.Generator, image_size: int, stronger: bool = True) -> AugmentParams:
  """Draws the official augmentation parameters (stronger=True: the rotation and wider jitter used by all runs)."""
  crop = random_crop_side(image_size)
  top = int(rng.integers(0, image_size - crop + 1))
  left = int(rng.integers(0, image_size - crop + 1))
  if stronger:
    angle = float(rng.uniform(-5, 5))
    brightness, contrast, saturation = (float(rng.uniform(0.7, 1.3)), float(rng.uniform(0.6, 1.4)),
                                        float(rng.uniform(0.5, 1.5)))
  else:
    angle = 0.0
    brightness, contrast, saturation = (float(rng.uniform(0.8, 1.2)) for _ in range(3))
  hue = float(rng.uniform(-0.05, 0.05))
  return AugmentParams(top, left, crop, angle, brightness, contrast, saturation, hue)


# ----------------------------------------------------------------------------------------------------------------
# Resize (torch `interpolate(bilinear, antialias=True, align_corners=False)` on float32).


@functools.lru_cache(maxsize=64)
def _aa_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(out, K) source indices and float32 weights of the antialiased triangle filter, in torch's float32 arithmetic."""
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  support = scale if scale >= 1 else f32(1.0)
  invscale = f32(1.0) / scale if scale >= 1 else f32(1.0)
  rows = []
  for i in range(out_size):
    center = scale * f32(i + 0.5)
    lo = max(int(center - support + f32(0.5)), 0)
    hi = min(int(center + support + f32(0.5)), in_size)
    weights = []
    total = f32(0.0)
    for j in range(lo, hi):
      x = abs((f32(j) - center + f32(0.5)) * invscale)
      w = f32(1.0) - x if x < 1 else f32(0.0)
      weights.append(f32(w))
      total = f32(total + w)
    if total != 0:
      weights = [f32(w / total) for w in weights]
    rows.append((lo, weights))
  k = max(len(w) for _, w in rows)
  index = np.zeros((out_size, k), np.int64)
  weight = np.zeros((out_size, k), np.float32)
  for i, (lo, w) in enumerate(rows):
    index[i, :len(w)] = np.arange(lo, lo + len(w))
    index[i, len(w):] = lo
    weight[i, :len(w)] = w
  return index, weight


def _aa_pass(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
  index, weight = _aa_taps(x.shape[axis], out_size)
  shape = [1] * x.ndim
  shape[axis] = out_size
  acc = np.take(x, index[:, 0], axis=axis) * weight[:, 0].reshape(shape)
  for k in range(1, index.shape[1]):
    # torch accumulates with a fused multiply-add; the float64 product of a float32 pair is exact, so one float64
    # add and a round to float32 reproduce it.
    term = np.take(x, index[:, k], axis=axis).astype(np.float64) * weight[:, k].reshape(shape).astype(np.float64)
    acc = (term + acc).astype(np.float32)
  return acc


def resize_bilinear_antialias(images: np.ndarray, size: int) -> np.ndarray:
  """(..., H, W, C) uint8 -> (..., size, size, C) uint8, torchvision `F.resize(bilinear, antialias=True)`."""
  x = np.asarray(images).astype(np.float32)
  if x.shape[-2] != size:
    x = _aa_pass(x, x.ndim - 2, size)
  if x.shape[-3] != size:
    x = _aa_pass(x, x.ndim - 3, size)
  return np.rint(x).astype(np.uint8)


def crop_and_resize(images: np.ndarray, top: int, left: int, side: int, size: int) -> np.ndarray:
  return resize_bilinear_antialias(images[..., top:top + side, left:left + side, :], size)


def test_time_transform(images: np.ndarray) -> np.ndarray:
  """Centre crop of side int(S * sqrt(0.9)) (offset int((S - side + 1) / 2)) resized back to S, bilinear AA."""
  size = images.shape[-2]
  side = test_crop_side(size)
  offset = int((size - side + 1) * 0.5)
  return crop_and_resize(images, offset, offset, side, size)


# ----------------------------------------------------------------------------------------------------------------
# Rotation (torchvision `F.rotate(angle, NEAREST, expand=False, fill=None)` on tensors).


@functools.lru_cache(maxsize=32)
def _rotation_source(height: int, width: int, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Nearest source pixel (row, col) per output pixel and a validity mask, from torchvision's float32 grid."""
  rot = math.radians(-angle)
  # torchvision's inverse affine matrix for a pure rotation about the centre: [d, -b, 0, -c, a, 0].
  matrix = np.asarray([math.cos(rot), math.sin(rot), 0.0, -math.sin(rot), math.cos(rot), 0.0], np.float32)
  rescaled = (matrix.reshape(2, 3).T / np.asarray([0.5 * width, 0.5 * height], np.float32)).astype(np.float32)
  xs = np.arange(width, dtype=np.float32) + np.float32(-width * 0.5 + 0.5)
  ys = np.arange(height, dtype=np.float32) + np.float32(-height * 0.5 + 0.5)
  gx_x, gy_x = xs * rescaled[0, 0], xs * rescaled[0, 1]
  gx = (gx_x[None, :] + (ys * rescaled[1, 0])[:, None]) + rescaled[2, 0]
  gy = (gy_x[None, :] + (ys * rescaled[1, 1])[:, None]) + rescaled[2, 1]
  # grid_sample, align_corners=False: ((g + 1) * size - 1) / 2, then round half to even.
  col = np.rint(((gx + np.float32(1)) * np.float32(width) - np.float32(1)) / np.float32(2))
  row = np.rint(((gy + np.float32(1)) * np.float32(height) - np.float32(1)) / np.float32(2))
  valid = (col >= 0) & (col < width) & (row >= 0) & (row < height)
  return np.where(valid, row, 0).astype(np.int64), np.where(valid, col, 0).astype(np.int64), valid


def rotate_nearest(images: np.ndarray, angle: float) -> np.ndarray:
  """(..., H, W, C) uint8 rotated by `angle` degrees (counter-clockwise), nearest, no expand, fill 0."""
  rows, cols, valid = _rotation_source(images.shape[-3], images.shape[-2], float(angle))
  out = images[..., rows, cols, :]
  return np.where(valid[..., None], out, np.zeros((), images.dtype))


# ----------------------------------------------------------------------------------------------------------------
# Colour jitter (torchvision `_functional_tensor` on uint8 tensors).


def _blend(image: np.ndarray, other, ratio: float) -> np.ndarray:
  ratio = float(ratio)
  mixed = np.float32(ratio) * image.astype(np.float32) + np.float32(1.0 - ratio) * np.asarray(other, np.float32)
  return np.clip(mixed, 0, 255).astype(np.uint8)  # float -> uint8 truncates, as torch's .to(uint8)


def _grayscale(image: np.ndarray) -> np.ndarray:
  r, g, b = (image[..., c].astype(np.float32) for c in range(3))
  return (np.float32(0.2989) * r + np.float32(0.587) * g + np.float32(0.114) * b).astype(np.uint8)[..., None]


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  return _blend(image, np.zeros((), np.float32), factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  gray = _grayscale(image)
  # The mean of integers is an exact float32 sum (< 2^24) divided once, whatever the summation order.
  total = gray.sum(axis=(-3, -2, -1), keepdims=True, dtype=np.int64)
  mean = total.astype(np.float32) / np.float32(gray.shape[-3] * gray.shape[-2])
  return _blend(image, mean, factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  return _blend(image, _grayscale(image), factor)


def _rgb_to_hsv(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """torchvision `_rgb2hsv` on float32 planes in [0, 1] (same operations, same order)."""
  f32 = np.float32
  maxc = np.maximum(np.maximum(r, g), b)
  minc = np.minimum(np.minimum(r, g), b)
  equal = maxc == minc
  cr = maxc - minc
  s = cr / np.where(equal, f32(1.0), maxc)
  cr_divisor = np.where(equal, f32(1.0), cr)
  rc = (maxc - r) / cr_divisor
  gc = (maxc - g) / cr_divisor
  bc = (maxc - b) / cr_divisor
  is_r = maxc == r
  is_g = (maxc == g) & ~is_r
  is_b = (maxc != g) & ~is_r
  hr = is_r.astype(f32) * (bc - gc)
  hg = is_g.astype(f32) * ((f32(2.0) + rc) - bc)
  hb = is_b.astype(f32) * ((f32(4.0) + gc) - rc)
  h = (hr + hg) + hb
  return np.fmod(h / f32(6.0) + f32(1.0), f32(1.0)), s, maxc


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """torchvision `_hsv2rgb`; its one-hot einsum selection (1*x + 0*y, exact) is a plain choose here."""
  f32 = np.float32
  i = np.floor(h * f32(6.0))
  f = h * f32(6.0) - i
  i = i.astype(np.int32) % 6
  p = np.clip(v * (f32(1.0) - s), 0.0, 1.0)
  q = np.clip(v * (f32(1.0) - s * f), 0.0, 1.0)
  t = np.clip(v * (f32(1.0) - s * (f32(1.0) - f)), 0.0, 1.0)
  return tuple(np.choose(i, c) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q)))


def adjust_hue(image: np.ndarray, factor: float) -> np.ndarray:
  if not -0.5 <= factor <= 0.5:
    raise ValueError(f'hue factor {factor} is not in [-0.5, 0.5]')
  planes = np.moveaxis(image, -1, 0).astype(np.float32) / np.float32(255.0)  # contiguous (3, ..., H, W)
  h, s, v = _rgb_to_hsv(planes[0], planes[1], planes[2])
  h = np.mod(h + np.float32(factor), np.float32(1.0))
  rgb = np.stack(_hsv_to_rgb(h, s, v), axis=-1)
  return (rgb * np.float32(255.0 + 1.0 - 1e-3)).astype(np.uint8)


def augment(images: np.ndarray, params: AugmentParams) -> np.ndarray:
  """The official training augmentation with one parameter draw, on (..., S, S, 3) uint8 images."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.shape[-1] != 3 or images.shape[-2] != images.shape[-3]:
    raise ValueError(f'augment expects square (..., S, S, 3) uint8 images, got {images.shape} {images.dtype}')
  size = images.shape[-2]
  out = crop_and_resize(images, params.top, params.left, params.crop, size)
  if params.angle != 0.0:
    out = rotate_nearest(out, params.angle)
  out = adjust_brightness(out, params.brightness)
  out = adjust_contrast(out, params.contrast)
  out = adjust_saturation(out, params.saturation)
  return adjust_hue(out, params.hue)
