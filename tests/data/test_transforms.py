"""Transforms against torch (the ops torchvision's uint8 tensor path calls), at the real 224 size.

torch computes these in float32 with CPU-dependent rounding (its bmm and interpolate kernels use fused multiply-adds
or not, depending on the CPU). So each comparison also computes the exact value in float64: where it lies within a
few float32 ulps of a rounding boundary, the two results may differ (counted and bounded); everywhere else they must
be equal. The augmented fixture sample (tests/data/test_aloha.py) checks the full chain at 56 px against the official
run exactly, since our numpy arithmetic gives the same bits on every CPU.
"""

import math

import numpy as np
import pytest
import torch

from cosmos_jax.data import transforms
from tests import parity

ULP = 2.0**-24  # float32 unit roundoff

# The rotation's float32 source coordinate is ((g + 1) * W - 1) / 2 of a normalised grid value g in [-1.5, 1.5]
# summed from three float32 products; float32 pipelines stay within about 3 ULP * W of the exact coordinate (ours:
# at most 2.5 ULP * W at these angles), so 8 ULP * W is a margin, not a blanket.
ROTATION_TIE_ULPS = 8
# The resize's float32 value is a weighted sum (weights summing to 1) of values up to 255, in two passes; float32
# pipelines stay within about 2.5 ULP * 255 of the exact value with the same float32 weights.
RESIZE_TIE_TOLERANCE = 8 * ULP * 255
# Ties are rare in generic data: about 4 * tolerance of the pixels (two coordinates, two sides of each boundary).
MAX_TIE_FRACTION = 2e-3


def _torch_resize(img, size):
  x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
  y = torch.nn.functional.interpolate(x, size=[size, size], mode='bilinear', align_corners=False, antialias=True)
  return torch.round(y)[0].permute(1, 2, 0).numpy().astype(np.uint8)


def _torch_rotate(img, angle):
  h, w = img.shape[:2]
  rot = math.radians(-angle)
  matrix = [math.cos(rot), math.sin(rot), 0.0, -math.sin(rot), math.cos(rot), 0.0]
  theta = torch.tensor(matrix, dtype=torch.float32).reshape(1, 2, 3)
  base = torch.empty(1, h, w, 3)
  base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w))
  base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h).unsqueeze_(-1))
  base[..., 2].fill_(1)
  grid = base.view(1, h * w, 3).bmm(theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h])).view(1, h, w, 2)
  x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
  y = torch.nn.functional.grid_sample(x, grid, mode='nearest', padding_mode='zeros', align_corners=False)
  return torch.round(y)[0].permute(1, 2, 0).numpy().astype(np.uint8)


def _torch_resize_weights(in_size, out_size):
  """torch's float32 antialias filter weights as an (out, in) float64 matrix: one pass over one-hot rows, where each
  output is a single product with 1.0. The weights come from scalar code without a multiply-add, the same bits on
  every CPU; only the accumulation of the pixel sums varies."""
  basis = torch.eye(in_size, dtype=torch.float32).reshape(in_size, 1, 1, in_size)
  out = torch.nn.functional.interpolate(basis, size=[1, out_size], mode='bilinear', align_corners=False,
                                        antialias=True)
  return out[:, 0, 0, :].numpy().T.astype(np.float64)


def _exact_resize(img, size):
  """The antialiased resize before rounding, in float64 with torch's float32 weights (both passes unrounded)."""
  rows, cols = _torch_resize_weights(img.shape[0], size), _torch_resize_weights(img.shape[1], size)
  return np.einsum('ih,hwc,jw->ijc', rows, img.astype(np.float64), cols, optimize=True)


def _assert_resize_matches(got, img, size, name):
  """`got` against torch's resize and against the exact value rounded, up to rounding ties (differing by one)."""
  exact = _exact_resize(img, size)
  ties = parity.near_rounding_tie(exact, RESIZE_TIE_TOLERANCE)
  for reference, what in ((_torch_resize(img, size), 'torch'), (np.rint(exact).astype(np.uint8), 'float64')):
    one_apart = np.abs(got.astype(np.int32) - reference.astype(np.int32)) <= 1
    parity.assert_equal_away_from_ties(got, reference, ties, name=f'{name} vs {what}',
                                       max_tie_fraction=MAX_TIE_FRACTION, tie_ok=one_apart)


@pytest.mark.parametrize('crop', [213, 212, 240])
def test_resize_matches_torch_antialias(crop):
  img = np.random.default_rng(crop).integers(0, 256, (crop, crop, 3), dtype=np.uint8)
  _assert_resize_matches(transforms.resize_bilinear_antialias(img, 224), img, 224, f'resize {crop}->224')


def _exact_source_coordinates(height, width, angle):
  """(row, col) source coordinate of every output pixel in float64: torchvision's inverse rotation about the image
  centre on the normalised grid, then grid_sample's align_corners=False unnormalisation ((g + 1) * size - 1) / 2."""
  rot = math.radians(-angle)
  xs = np.arange(width) - width / 2 + 0.5
  ys = (np.arange(height) - height / 2 + 0.5)[:, None]
  gx = (xs * math.cos(rot) + ys * math.sin(rot)) / (0.5 * width)
  gy = (-xs * math.sin(rot) + ys * math.cos(rot)) / (0.5 * height)
  return ((gy + 1) * height - 1) / 2, ((gx + 1) * width - 1) / 2


def _nearest(img, rows, cols):
  """Pixels at integer (rows, cols); 0 outside the image (the rotation's fill)."""
  h, w = img.shape[:2]
  valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
  out = img[np.where(valid, rows, 0).astype(np.int64), np.where(valid, cols, 0).astype(np.int64)]
  return np.where(valid[..., None], out, 0).astype(img.dtype)


@pytest.mark.parametrize('angle', [-4.73, -0.5, 1.234, 5.0])
def test_rotation_matches_torch_grid_sample(angle):
  img = np.random.default_rng(0).integers(1, 256, (224, 224, 3), dtype=np.uint8)
  rows, cols = _exact_source_coordinates(224, 224, angle)
  tolerance = ROTATION_TIE_ULPS * ULP * 224
  row_tie, col_tie = parity.near_rounding_tie(rows, tolerance), parity.near_rounding_tie(cols, tolerance)
  # At a tie either neighbour is a correct answer: the candidates take both roundings of a tied coordinate.
  row_options = [np.where(row_tie, np.floor(rows) + k, np.rint(rows)) for k in (0, 1)]
  col_options = [np.where(col_tie, np.floor(cols) + k, np.rint(cols)) for k in (0, 1)]
  candidates = [_nearest(img, r, c) for r in row_options for c in col_options]
  got = transforms.rotate_nearest(img, angle)
  for reference, what in ((_torch_rotate(img, angle), 'torch'), (_nearest(img, np.rint(rows), np.rint(cols)),
                                                                   'float64 coordinates')):
    one_of_neighbours = np.any([(got == c) for c in candidates], axis=0) & np.any(
        [(reference == c) for c in candidates], axis=0)
    parity.assert_equal_away_from_ties(got, reference, (row_tie | col_tie)[..., None],
                                       name=f'rotation {angle} vs {what}', max_tie_fraction=MAX_TIE_FRACTION,
                                       tie_ok=one_of_neighbours)


def test_crop_sides_and_test_time_transform():
  assert transforms.random_crop_side(224) == 213 and transforms.test_crop_side(224) == 212
  img = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
  got = transforms.test_time_transform(img)
  for i in range(2):
    _assert_resize_matches(got[i], img[i, 6:218, 6:218], 224, f'test-time transform {i}')


def test_black_stays_black_and_draws_are_seeded():
  params = transforms.draw_augment_params(np.random.default_rng(5), 224)
  assert params == transforms.draw_augment_params(np.random.default_rng(5), 224)
  assert params.crop == 213 and -5 <= params.angle <= 5 and -0.05 <= params.hue <= 0.05
  out = transforms.augment(np.zeros((3, 224, 224, 3), np.uint8), params)
  assert not out.any()
