"""Slot injection / readout and min-max normalisation against the official code (policy_slots_* golden cases).

Golden arrays are channels-first (B, C, T, H, W); they are converted to channels-last at this boundary.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosmos_jax.data import stats as stats_lib
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import normalization
from cosmos_jax.policy import slots
from tests import parity

CASES = parity.golden_cases('policy_slots_')


def to_last(x):
  """(B, C, T, H, W) -> (B, T, H, W, C)."""
  return np.transpose(x, (0, 2, 3, 4, 1))


def slot_to_first(x):
  """(B, H, W, C) -> (B, C, H, W)."""
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


def layout_for(config):
  """The layout of our table whose slot indices are the golden case's (and that agrees on sizes)."""
  golden = config['layout']
  for layout in layout_lib.LAYOUTS.values():
    ours = {k: layout.index(k) for k in golden['slot_indices'] if k in layout.slots}
    if ours == golden['slot_indices'] and layout.state_t == golden['state_t']:
      assert (layout.chunk_size, layout.action_dim, layout.proprio_dim) == (
          golden['chunk_size'], golden['action_dim'], golden['proprio_dim'])
      return layout
  raise AssertionError(f'no layout in the table matches the golden slot indices {golden["slot_indices"]}')


def exact(actual, expected, name):
  parity.assert_close(actual, expected, name=name, rel_l2=0.0, max_abs=0.0)


@pytest.mark.parametrize('folder', CASES)
def test_layout_matches_golden_counts(folder):
  config = parity.load_config(folder)
  layout = layout_for(config)
  golden = config['layout']
  length = int(np.prod(golden['latent_C_H_W']))
  assert length == golden['slot_elements']
  assert length // layout.action_elements == golden['action_full_copies']
  assert length % layout.action_elements == golden['action_partial_len']
  assert length // layout.proprio_dim == golden['proprio_full_copies']
  assert length % layout.proprio_dim == golden['proprio_partial_len']


@pytest.mark.parametrize('folder', CASES)
def test_injection_exact(folder):
  config = parity.load_config(folder)
  layout = layout_for(config)
  io = np.load(folder / 'io.npz')
  latent = jnp.asarray(to_last(io['in__latent']))
  action_slot, proprio_slot = layout.index('action'), layout.index('current_proprio')

  injected = slots.inject_actions(latent, layout, jnp.asarray(io['in__actions_norm']))
  exact(slot_to_first(injected[:, action_slot]), io['inject__action_only__slot'], 'action slot')
  others = np.delete(np.arange(layout.state_t), action_slot)
  exact(np.asarray(injected)[:, others], np.asarray(latent)[:, others], 'slots other than the action slot')

  injected = slots.inject_proprio(latent, layout, jnp.asarray(io['in__proprio_norm']))
  exact(slot_to_first(injected[:, proprio_slot]), io['inject__proprio_only__slot'], 'proprio slot')

  x0 = slots.inject_targets(latent, layout, actions=jnp.asarray(io['in__actions_norm']),
                            proprio=jnp.asarray(io['in__proprio_norm']),
                            future_proprio=jnp.asarray(io['in__future_proprio_norm']),
                            value=jnp.asarray(io['in__value_norm']))
  exact(x0, to_last(io['inject__training_target_x0']), 'training target x0')


@pytest.mark.parametrize('folder', CASES)
@pytest.mark.parametrize('source', ['from_random_latent', 'from_training_target_x0'])
def test_readout(folder, source):
  config = parity.load_config(folder)
  layout = layout_for(config)
  io = np.load(folder / 'io.npz')
  latent = jnp.asarray(to_last(io['in__latent'] if source == 'from_random_latent'
                               else io['inject__training_target_x0']))
  prefix = f'readout__{source}__'
  with jax.default_matmul_precision('highest'):
    actions = jax.jit(slots.read_actions, static_argnums=1)(latent, layout)
    raw_value = slots.read_value(latent)
    value01 = slots.value_to_unit_interval(raw_value)
  # Means over 17..1393 copies / 12544 elements: the summation order differs from torch's, so these are
  # compared to float32 rounding, not bit for bit.
  parity.assert_close(actions, io[prefix + 'actions_norm'], name='actions', rel_l2=1e-6, max_abs=1e-6)
  parity.assert_close(raw_value, io[prefix + 'value_raw_mean'], name='raw value', rel_l2=1e-6, max_abs=1e-6)
  parity.assert_close(value01, io[prefix + 'value_01_clamped'], name='value in [0,1]', rel_l2=1e-6, max_abs=1e-6)
  for which in ('current', 'future'):
    got = slots.read_vector(latent, layout.index(f'{which}_proprio'), layout.proprio_dim)
    parity.assert_close(got, io[prefix + f'{which}_proprio_norm_via_action_extractor'], name=f'{which} proprio',
                        rel_l2=1e-6, max_abs=1e-6)
  if source == 'from_training_target_x0':
    # Values injected then read back are exact (every element of the slot is the same number).
    exact(raw_value, io['in__value_norm'], 'value round trip')


@pytest.mark.parametrize('folder', CASES)
def test_normalisation(folder, tmp_path):
  config = parity.load_config(folder)
  io = np.load(folder / 'io.npz')
  path = tmp_path / 'dataset_statistics.json'
  path.write_text(json.dumps(config['stats_json']))
  stats = stats_lib.load_statistics(path)
  # float32 inputs, float64 statistics -> float64, as in the official numpy code.
  exact(normalization.normalize(io['norm__in__raw_proprio'], stats, 'proprio'), io['norm__rescale_proprio'],
        'rescale_proprio')
  exact(normalization.normalize(io['norm__in__raw_proprio'], stats, 'proprio'), io['norm__rescale_data__proprio'],
        'rescale_data proprio')
  exact(normalization.normalize(io['norm__in__raw_actions'], stats, 'actions'), io['norm__rescale_data__actions'],
        'rescale_data actions')
  exact(normalization.normalize(io['norm__in__raw_actions'], stats, 'actions'),
        io['norm__rescale_episode_data__actions'], 'rescale_episode_data actions')
  exact(normalization.unnormalize(io['in__actions_norm'], stats, 'actions'),
        io['norm__unnormalize_actions__of_actions_norm'], 'unnormalize_actions')


def test_spec_check_values():
  """Layout of @18a2acc cosmos_policy/models/policy_text2world_model.py:replace_latent_with_action_chunk and
  replace_latent_with_proprio: ALOHA action 0..699 -> flat elements 698..701 = [698, 699, 0, 1], (c=1,h=0,w=0) = 84,
  last three [641, 642, 643]; LIBERO proprio 0..8 -> last nine [7, 8, 0, 1, ..., 6]."""
  aloha, libero = layout_lib.get_layout('aloha'), layout_lib.get_layout('libero')
  latent = jnp.zeros((1, aloha.state_t, 28, 28, 16))
  actions = jnp.arange(700, dtype=jnp.float32).reshape(1, 50, 14)
  flat = np.asarray(slots.flatten_slot(slots.inject_actions(latent, aloha, actions), aloha.index('action')))[0]
  np.testing.assert_array_equal(flat[698:702], [698, 699, 0, 1])
  assert flat[784] == 84
  np.testing.assert_array_equal(flat[-3:], [641, 642, 643])
  # Channels-last element (h=0, w=0, c=1) is flat index 784 of the official order.
  injected = slots.inject_actions(latent, aloha, actions)
  assert float(injected[0, aloha.index('action'), 0, 0, 1]) == 84.0
  latent = jnp.zeros((1, libero.state_t, 28, 28, 16))
  proprio = jnp.arange(9, dtype=jnp.float32)[None]
  flat = np.asarray(slots.flatten_slot(slots.inject_proprio(latent, libero, proprio), 1))[0]
  np.testing.assert_array_equal(flat[-9:], [7, 8, 0, 1, 2, 3, 4, 5, 6])


def test_readout_ignores_partial_copy():
  aloha = layout_lib.get_layout('aloha')
  latent = jnp.zeros((1, aloha.state_t, 28, 28, 16))
  actions = jax.random.uniform(jax.random.key(0), (1, 50, 14), minval=-1, maxval=1)
  injected = slots.inject_actions(latent, aloha, actions)
  flat = slots.flatten_slot(injected, aloha.index('action'))
  # Corrupt only the trailing 644-element partial copy: the readout must not change.
  corrupted = slots.write_flat_slot(injected, aloha.index('action'), flat.at[:, 17 * 700:].set(1e6))
  np.testing.assert_allclose(slots.read_actions(corrupted, aloha), actions, rtol=1e-6, atol=1e-6)


def test_round_to_bf16():
  assert float(slots.round_to_bf16(0.98765)) == 0.98828125


def test_restore_slots():
  a, b = jnp.zeros((2, 11, 2, 2, 16)), jnp.ones((2, 11, 2, 2, 16))
  restored = np.asarray(slots.restore_slots(a, b, (0, 1, 5, 6)))
  assert restored[:, [0, 1, 5, 6]].min() == 1 and restored[:, [2, 3, 4, 7, 8, 9, 10]].max() == 0


# Bad input --------------------------------------------------------------------------------------------------------


def test_wrong_proprio_length():
  aloha = layout_lib.get_layout('aloha')
  latent = jnp.zeros((2, aloha.state_t, 4, 4, 16))
  with pytest.raises(ValueError, match='proprio_dim=14'):
    slots.inject_proprio(latent, aloha, jnp.zeros((2, 9)))
  with pytest.raises(ValueError, match='batch'):
    slots.inject_proprio(latent, aloha, jnp.zeros((3, 14)))


def test_wrong_action_shape():
  libero = layout_lib.get_layout('libero')
  latent = jnp.zeros((2, libero.state_t, 4, 4, 16))
  with pytest.raises(ValueError, match=r'chunk=16, action_dim=7'):
    slots.inject_actions(latent, libero, jnp.zeros((2, 16, 14)))
  with pytest.raises(ValueError, match=r'chunk=16, action_dim=7'):
    slots.inject_actions(latent, libero, jnp.zeros((2, 112)))


def test_vector_longer_than_slot():
  aloha = layout_lib.get_layout('aloha')
  latent = jnp.zeros((1, aloha.state_t, 2, 2, 16))  # 64 elements < 700 actions
  with pytest.raises(ValueError, match='does not fit'):
    slots.inject_actions(latent, aloha, jnp.zeros((1, 50, 14)))


def test_layout_slot_count_mismatch():
  libero, aloha = layout_lib.get_layout('libero'), layout_lib.get_layout('aloha')
  latent = jnp.zeros((1, aloha.state_t, 4, 4, 16))
  with pytest.raises(ValueError, match='libero layout has 9 slots but the latent has T=11'):
    slots.inject_actions(latent, libero, jnp.zeros((1, 16, 7)))
  with pytest.raises(ValueError, match='has 9 slots'):
    slots.read_actions(latent, libero)
  with pytest.raises(ValueError, match=r'\[B, T, H, W, C\]'):
    slots.read_actions(jnp.zeros((1, 11, 16)), aloha)


def test_constant_statistics_dimension():
  aloha = layout_lib.get_layout('aloha')
  stats = {'proprio_min': np.zeros(aloha.proprio_dim), 'proprio_max': np.ones(aloha.proprio_dim)}
  stats['proprio_max'][3] = 0.0
  with pytest.raises(ValueError, match='dimension 3'):
    normalization.normalize(np.zeros((1, aloha.proprio_dim), np.float32), stats, 'proprio')
