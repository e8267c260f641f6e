"""Transforms against torch (the ops torchvision's uint8 tensor path calls), at the real 224 size.

The augmented fixture sample (tests/data/test_aloha.py) checks the full chain at 56 px against the official run.
"""

import math

import numpy as np
import pytest
import torch

from cosmos_jax.data import transforms


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


@pytest.mark.parametrize('crop', [213, 212, 240])
def test_resize_matches_torch_antialias(crop):
  img = np.random.default_rng(crop).integers(0, 256, (crop, crop, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms.resize_bilinear_antialias(img, 224), _torch_resize(img, 224))


@pytest.mark.parametrize('angle', [-4.73, -0.5, 1.234, 5.0])
def test_rotation_matches_torch_grid_sample(angle):
  img = np.random.default_rng(0).integers(1, 256, (224, 224, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms.rotate_nearest(img, angle), _torch_rotate(img, angle))


def test_crop_sides_and_test_time_transform():
  assert transforms.random_crop_side(224) == 213 and transforms.test_crop_side(224) == 212
  img = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
  got = transforms.test_time_transform(img)
  for i in range(2):
    np.testing.assert_array_equal(got[i], _torch_resize(img[i, 6:218, 6:218], 224))


def test_black_stays_black_and_draws_are_seeded():
  params = transforms.draw_augment_params(np.random.default_rng(5), 224)
  assert params == transforms.draw_augment_params(np.random.default_rng(5), 224)
  assert params.crop == 213 and -5 <= params.angle <= 5 and -0.05 <= params.hue <= 0.05
  out = transforms.augment(np.zeros((3, 224, 224, 3), np.uint8), params)
  assert not out.any()
