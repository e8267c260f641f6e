"""The policy's pixel video (slot frames -> the 1 + 4k frames the VAE encodes): the golden vae_* policy cases,
layout, the bf16 pixel mapping and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.policy import video as video_lib
from tests import parity
from tests.nn.test_vae import golden_case_params, golden_model, to_ours


@pytest.mark.parametrize('folder,case', golden_case_params(kind='policy'))
def test_policy_sequence_reproduces_golden(folder, case):
  cfg, params = golden_model(folder)
  definition = next(d for d in parity.load_config(folder)['case_definitions'] if d['name'] == case)
  with np.load(folder / 'io.npz') as arrays:
    video, z_expected = to_ours(arrays[f'{case}__video']), to_ours(arrays[f'{case}__z_norm'])
  height, width = definition['hw']
  # The golden stores the [-1, 1] video; its uint8 images sit at the first frame of each 4-frame slot.
  images = [np.round((video[:, 1 + 4 * i] + 1.0) * 127.5).astype(np.uint8) for i in range(definition['n_items'])]

  sequence = video_lib.policy_pixel_sequence(images, height, width)
  np.testing.assert_array_equal(np.asarray(video_lib.pixels_to_unit(sequence, jnp.float32)), video)
  with jax.default_matmul_precision('highest'):
    latents = video_lib.encode_policy_sequence(params, cfg, images, height, width)
    parity.assert_close(latents, z_expected, name=f'{case} policy-sequence latents')

    # Causality: a prefix of the slots gives the same leading latents...
    prefix = video_lib.encode_policy_sequence(params, cfg, images[:1], height, width)
    parity.assert_close(prefix, z_expected[:, :2], name=f'{case} prefix latents')
    # ...but an image encoded on its own is not its latent inside the sequence (spec pitfall 1).
    alone = video_lib.encode_policy_sequence(params, cfg, images[-1:], height, width)
    gap = float(np.abs(np.asarray(alone[:, 1]) - z_expected[:, -1]).max())
    assert gap > 1e-2, f'encoding the last image alone unexpectedly matches its in-sequence latent (gap {gap})'


def test_policy_pixel_sequence_layout():
  batch, height, width = 2, 16, 24
  image = np.arange(batch * height * width * 3, dtype=np.int64).reshape(batch, height, width, 3) % 251 + 1
  image = image.astype(np.uint8)
  sequence = np.asarray(video_lib.policy_pixel_sequence([None, image, None], height, width))
  assert sequence.shape == (batch, 13, height, width, 3) and sequence.dtype == np.uint8
  assert not sequence[:, :5].any() and not sequence[:, 9:].any()
  for frame in range(5, 9):
    np.testing.assert_array_equal(sequence[:, frame], image)
  # A black placeholder is -1 after normalisation, in fp32 and in the policy's bf16 arithmetic.
  assert float(video_lib.pixels_to_unit(sequence, jnp.bfloat16)[0, 0].max()) == -1.0
  assert np.asarray(video_lib.policy_pixel_sequence([None, None], 8, 8, batch_size=3)).shape == (3, 9, 8, 8, 3)


def test_pixels_to_unit_rounds_in_bf16_like_the_policy():
  values = np.arange(256, dtype=np.uint8)
  ours = np.asarray(video_lib.pixels_to_unit(values, jnp.bfloat16)).astype(np.float32)
  # Two bf16 roundings (after / 127.5, after - 1), as PyTorch does on a bf16 tensor.
  quotient = (values.astype(np.float32) / np.float32(127.5)).astype(jnp.bfloat16).astype(np.float32)
  expected = (quotient - np.float32(1.0)).astype(jnp.bfloat16).astype(np.float32)
  np.testing.assert_array_equal(ours, expected)
  assert ours[0] == -1.0 and ours[255] == 1.0


def test_policy_pixel_sequence_errors():
  image = np.zeros((1, 16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match='expected uint8'):
    video_lib.policy_pixel_sequence([image.astype(np.float32)], 16, 16)
  with pytest.raises(ValueError, match=r'expected \(1, 8, 16, 3\)'):
    video_lib.policy_pixel_sequence([image], 8, 16)
  with pytest.raises(ValueError, match='batch_size'):
    video_lib.policy_pixel_sequence([None], 16, 16)


def test_slot_frames_to_video_with_and_without_batch():
  frames = np.random.default_rng(0).integers(0, 256, (2, 4, 8, 8, 3), dtype=np.uint8)
  batched = np.asarray(video_lib.slot_frames_to_video(frames))
  assert batched.shape == (2, 13, 8, 8, 3)
  np.testing.assert_array_equal(batched[:, 0], frames[:, 0])
  for slot in range(1, 4):
    for frame in range(1 + 4 * (slot - 1), 1 + 4 * slot):
      np.testing.assert_array_equal(batched[:, frame], frames[:, slot])
  np.testing.assert_array_equal(np.asarray(video_lib.slot_frames_to_video(frames[1])), batched[1])
  # policy_pixel_sequence is the same expansion with a black slot 0.
  sequence = video_lib.policy_pixel_sequence([frames[:, 1], None, frames[:, 3]], 8, 8)
  expected = frames.copy()
  expected[:, 0] = 0
  expected[:, 2] = 0
  np.testing.assert_array_equal(np.asarray(sequence), np.asarray(video_lib.slot_frames_to_video(expected)))
