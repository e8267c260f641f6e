"""Conditioning masks: the golden training masks (policy_loss_*) and inference masks (policy_sample_*), and the
table of @18a2acc cosmos_policy/models/policy_video2world_model.py:CosmosPolicyVideo2WorldModel.get_data_and_condition
for every layout."""

import numpy as np
import pytest

from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import masks
from tests import parity


def per_slot(mask_b1thw):
  """Golden (B, 1, T, H, W) mask -> (B, T), checking it is constant over H and W."""
  m = np.asarray(mask_b1thw)[:, 0]
  assert (m == m[:, :, :1, :1]).all()
  return m[:, :, 0, 0]


@pytest.mark.parametrize('folder', parity.golden_cases('policy_loss_'))
def test_training_masks_match_golden(folder):
  config = parity.load_config(folder)
  io = np.load(folder / 'io.npz')
  layout = layout_lib.get_layout(config['batch']['layout'])
  for variant, spec in config['variants'].items():
    resolved = spec['model_config_resolved']
    got = masks.training_mask(
        layout, io['in__world_model_sample_mask'], io['in__value_function_sample_mask'],
        value_of_future_state=resolved['mask_current_state_action_for_value_prediction'],
        q_value=resolved['mask_future_state_for_qvalue_prediction'])
    parity.assert_close(got, per_slot(io[f'{variant}__condition_mask_B_1_T_H_W']), name=f'{variant} mask',
                        rel_l2=0.0, max_abs=0.0)
    if 'mask_per_sample_per_slot' in spec:
      np.testing.assert_array_equal(np.asarray(got), spec['mask_per_sample_per_slot'])


@pytest.mark.parametrize('folder', parity.golden_cases('policy_sample_'))
def test_policy_inference_mask_matches_golden(folder):
  io = np.load(folder / 'io.npz')
  layout = layout_lib.get_layout(parity.load_config(folder)['case_definition']['robot'])
  for key in io.files:
    if key.endswith('__condition_mask_B_1_T_H_W'):
      np.testing.assert_array_equal(masks.inference_mask(layout, 'policy', 1), per_slot(io[key]), err_msg=key)


def given(mask_row):
  return [i for i, v in enumerate(mask_row) if v == 1]


def test_spec_table_aloha():
  aloha = layout_lib.get_layout('aloha')
  assert given(masks.inference_mask(aloha, 'policy')[0]) == [0, 1, 2, 3, 4]
  assert given(masks.inference_mask(aloha, 'world_model')[0]) == [0, 1, 2, 3, 4, 5]
  assert given(masks.inference_mask(aloha, 'value')[0]) == list(range(10))
  assert given(masks.inference_mask(aloha, 'value', value_of_future_state=True)[0]) == [0, 6, 7, 8, 9]
  assert given(masks.inference_mask(aloha, 'value', q_value=True)[0]) == [0, 1, 2, 3, 4, 5]
  train = masks.training_mask(aloha, np.array([0, 1, 0]), np.array([0, 0, 1]), value_of_future_state=True)
  assert [given(r) for r in np.asarray(train)] == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5], [0, 6, 7, 8, 9]]


@pytest.mark.parametrize('name', sorted(layout_lib.LAYOUTS))
def test_every_layout(name):
  layout = layout_lib.get_layout(name)
  n, t = layout.num_conditional, layout.state_t
  assert given(masks.inference_mask(layout, 'policy')[0]) == list(range(n))
  assert given(masks.inference_mask(layout, 'world_model')[0]) == list(range(n + 1))
  assert given(masks.inference_mask(layout, 'value')[0]) == list(range(t - 1))
  v_of_s_prime = given(masks.inference_mask(layout, 'value', value_of_future_state=True)[0])
  assert v_of_s_prime == [0] + list(layout.future_state_slots)


def test_layout_tables():
  libero = layout_lib.get_layout('libero')
  assert libero.slots == ('blank', 'current_proprio', 'current_wrist_image', 'current_image', 'action',
                          'future_proprio', 'future_wrist_image', 'future_image', 'value')
  assert libero.injected_slots == (0, 1, 4, 5) and libero.pixel_frames == 33
  robocasa = layout_lib.get_layout('robocasa')
  assert robocasa.slots[2:5] == ('current_wrist_image', 'current_image', 'current_image2')
  assert (robocasa.action_elements, robocasa.gamma, robocasa.state_t) == (224, 0.99, 11)
  aloha = layout_lib.get_layout('aloha')
  assert aloha.injected_slots == (0, 1, 5, 6) and aloha.pixel_frames == 41
  assert [aloha.pixel_frame_of(s) for s in aloha.future_image_slots] == [25, 29, 33]
  assert aloha.latent_indices()['current_image2_latent_idx'] == -1
  assert aloha.current_state_slots == (1, 2, 3, 4) and aloha.future_state_slots == (6, 7, 8, 9)


def test_bad_mask_requests():
  aloha = layout_lib.get_layout('aloha')
  with pytest.raises(ValueError, match='unknown mask mode'):
    masks.inference_mask(aloha, 'q')
  with pytest.raises(ValueError, match='value queries only'):
    masks.inference_mask(aloha, 'policy', value_of_future_state=True)
  with pytest.raises(ValueError, match='unknown layout'):
    layout_lib.get_layout('bridge')
  with pytest.raises(ValueError, match=r'\[B, T\]'):
    masks.expand(np.ones((1, 9)), (1, 11, 2, 2, 16))
