"""The ALOHA request protocol: every request field validated with a message naming the problem (no model needed),
the official camera mapping, and the response fields of a query result."""

import numpy as np
import pytest

from cosmos_jax.serve.protocols import aloha
from cosmos_jax.serve.protocols import base
from tests.serve.conftest import IMAGE_SIZE, make_observation

S = IMAGE_SIZE


def _with(obs, **changes):
  out = dict(obs)
  for key, value in changes.items():
    if value is KeyError:
      del out[key]
    else:
      out[key] = value
  return out


def _far_proprio(protocol):
  lo, hi = protocol.statistics['proprio_min'], protocol.statistics['proprio_max']
  proprio = 0.5 * (lo + hi)
  proprio[3] = hi[3] + 5 * (hi[3] - lo[3])
  return proprio


INVALID = [
    ('missing field', lambda r, o: _with(o, right_wrist_image=KeyError), r"missing field\(s\) \['right_wrist_image'\]"),
    ('missing task', lambda r, o: _with(o, task_description=KeyError), r"missing field\(s\) \['task_description'\]"),
    ('unknown field', lambda r, o: _with(o, wrist_image=o['primary_image']), r"unknown field\(s\) \['wrist_image'\]"),
    ('image shape', lambda r, o: _with(o, primary_image=np.zeros((S, S, 4), np.uint8)),
     rf"'primary_image' must have shape \(H, W, 3\) \(RGB; resized to {S}x{S}\), got \({S}, {S}, 4\)"),
    ('image CHW', lambda r, o: _with(o, left_wrist_image=np.zeros((3, S, S), np.uint8)), 'must have shape'),
    ('image too small', lambda r, o: _with(o, left_wrist_image=np.zeros((8, 200, 3), np.uint8)),
     r"'left_wrist_image' has size \(8, 200\); each side must lie in \[16, 2048\]"),
    ('image float dtype', lambda r, o: _with(o, primary_image=np.zeros((S, S, 3), np.float32)),
     "'primary_image' must have dtype uint8, got float32"),
    ('image list out of range', lambda r, o: _with(o, primary_image=np.full((S, S, 3), 256).tolist()),
     r'values must lie in \[0, 255\], got range \[256, 256\]'),
    ('image not an array', lambda r, o: _with(o, primary_image='pixels'), 'must be a uint8 array'),
    ('proprio shape', lambda r, o: _with(o, proprio=np.zeros(7, np.float32)), r"'proprio' must have shape \(14,\)"),
    ('proprio NaN', lambda r, o: _with(o, proprio=np.where(np.arange(14) == 2, np.nan, o['proprio'])),
     r"'proprio' has non-finite values at index \[2\]"),
    ('proprio inf', lambda r, o: _with(o, proprio=np.full(14, np.inf)), 'non-finite'),
    ('proprio bool', lambda r, o: _with(o, proprio=np.ones(14, bool)), "'proprio' must be a float array"),
    ('proprio far out of range', lambda r, o: _with(o, proprio=_far_proprio(r)),
     r"far outside the training range .*\[3\]"),
    ('unknown task', lambda r, o: _with(o, task_description='fold shirt'),
     r"unknown task 'fold shirt'.*known tasks: \['transfer cube'\]"),
    ('task not a string', lambda r, o: _with(o, task_description=3), "'task_description' must be a string"),
    ('return_all not bool', lambda r, o: _with(o, return_all_query_results='yes'), 'must be a boolean'),
    ('not a mapping', lambda r, o: [o], 'must be a JSON object'),
]


@pytest.mark.parametrize('make,match', [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_observations_are_refused_with_a_clear_message(aloha_protocol, make, match):
  with pytest.raises(base.InvalidObservation, match=match):
    aloha_protocol.validate(make(aloha_protocol, make_observation(aloha_protocol)))


def test_lists_are_accepted_like_the_official_server(aloha_protocol):
  obs = make_observation(aloha_protocol)
  as_lists = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}
  validated = aloha_protocol.validate({**as_lists, 'return_all_query_results': np.bool_(True)})
  np.testing.assert_array_equal(validated.camera_images['image'], obs['primary_image'])
  assert validated.camera_images['image'].dtype == np.uint8 and validated.return_all_query_results
  np.testing.assert_array_equal(validated.proprio, obs['proprio'].astype(np.float64))


def test_camera_fields_follow_the_official_server(aloha_protocol):
  # deploy.py: wrist_image = left wrist, wrist_image2 = right wrist, image = primary (cam_high), in that order.
  assert aloha_protocol.image_fields == {'left_wrist_image': 'wrist_image', 'right_wrist_image': 'wrist_image2',
                                         'primary_image': 'image'}
  obs = make_observation(aloha_protocol)
  validated = aloha_protocol.validate(obs)
  for field, camera in aloha_protocol.image_fields.items():
    assert validated.camera_images[camera] is obs[field]
  assert validated.task == 'transfer cube' and not validated.return_all_query_results
  assert aloha_protocol.validate(aloha_protocol.example_request()).proprio.shape == (14,)


def test_no_range_check_when_the_margin_is_off(aloha_protocol):
  unchecked = aloha.AlohaProtocol(image_size=S, statistics=aloha_protocol.statistics, tasks=aloha_protocol.tasks,
                                  proprio_margin=None)
  obs = {**make_observation(aloha_protocol), 'proprio': _far_proprio(aloha_protocol)}
  np.testing.assert_array_equal(unchecked.validate(obs).proprio, obs['proprio'])


def test_response_fields(aloha_protocol):
  actions = np.arange(700, dtype=np.float64).reshape(50, 14)
  futures = {'future_image': np.zeros((S, S, 3), np.uint8)}
  result = base.QueryResult(actions=actions, value=0.25, future_images=futures, timing={'policy_s': 1.0})
  out = aloha_protocol.response(result)
  assert sorted(out) == ['actions', 'future_image_predictions', 'timing', 'value_prediction', 'value_predictions']
  assert out['actions'] is actions and out['value_prediction'] == out['value_predictions'] == 0.25
  result.chosen_candidate, result.all_actions, result.all_values = 1, [actions, actions], [0.1, 0.25]
  result.all_future_images, result.all_actions_by_depth = [None, futures], [[actions]] * 2
  result.all_values_by_depth = [[0.1], [0.25]]
  out = aloha_protocol.response(result)
  assert out['chosen_candidate'] == 1 and out['all_value_predictions'] == [0.1, 0.25]
  assert out['all_future_image_predictions'][1] is futures and out['all_value_predictions_by_depth'] == [[0.1], [0.25]]
  assert out['all_future_image_predictions_by_depth'] == [[], []]  # official: no world-model query, no images
  result.all_future_images_by_depth = [[None], [futures]]
  assert aloha_protocol.response(result)['all_future_image_predictions_by_depth'][1] == [futures]


def test_metadata(aloha_protocol):
  meta = aloha_protocol.metadata()
  assert meta['chunk_size'] == 50 and meta['action_dim'] == 14 and meta['protocol'] == 'aloha'
  assert meta['image_fields'] == {f: [S, S, 3] for f in ('left_wrist_image', 'right_wrist_image', 'primary_image')}
  assert meta['open_loop_steps'] == 50 and meta['proprio_dim'] == 14


def test_new_tasks_pass_only_when_the_policy_can_encode_them(aloha_protocol):
  obs = {**make_observation(aloha_protocol), 'task_description': 'fold the towel'}
  with pytest.raises(base.InvalidObservation, match='--config.model.t5'):
    aloha_protocol.validate(obs)
  open_protocol = aloha.AlohaProtocol(image_size=S, statistics=aloha_protocol.statistics, tasks=aloha_protocol.tasks,
                                      accept_new_tasks=True)
  assert open_protocol.validate(obs).task == 'fold the towel'
