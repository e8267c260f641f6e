"""The LIBERO and RoboCasa request protocols: every request field validated with a message naming the problem (as
ALOHA's), the official preprocessing (JPEG q95 round trip, resize to the input size; no flip on the server side),
RoboCasa's mobile-base padding, and the whole tiny policy answering with chunks (16, 7) and (32, 12)."""

import h5py
import numpy as np
import pytest

from cosmos_jax.data import decode
from cosmos_jax.serve import factory
from cosmos_jax.serve import protocols
from cosmos_jax.serve import runner as runner_lib
from cosmos_jax.serve.protocols import base
from cosmos_jax.serve.protocols import libero
from cosmos_jax.serve.protocols import robocasa

S = 32  # policy input size of these tests: latent slots of 16 * 4 * 4 = 256 values hold 16 x 7 and 32 x 7 actions
TASKS = {'libero': libero.SUITE_TASKS['libero_spatial'][0], 'robocasa': factory.ROBOCASA_STAND_IN_TASKS[0]}


def make_protocol(name, **kwargs):
  statistics, store = factory.stand_in_assets(name)
  return protocols.get(name)(image_size=S, statistics=statistics, tasks=store.tasks, **kwargs)


def make_request(protocol, seed=0, height=96, width=80):
  rng = np.random.default_rng(seed)
  request = {field: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for field in protocol.image_fields}
  lo, hi = protocol.statistics['proprio_min'], protocol.statistics['proprio_max']
  request['proprio'] = lo + rng.uniform(0.2, 0.8, lo.shape) * (hi - lo)
  request['task_description'] = TASKS[protocol.name]
  return request


@pytest.fixture(scope='module', params=['libero', 'robocasa'])
def protocol(request):
  return make_protocol(request.param)


def _with(obs, **changes):
  out = dict(obs)
  for key, value in changes.items():
    if value is KeyError:
      del out[key]
    else:
      out[key] = value
  return out


INVALID = [
    ('missing wrist', lambda o: _with(o, wrist_image=KeyError), r"missing field\(s\) \['wrist_image'\]"),
    ('missing task', lambda o: _with(o, task_description=KeyError), r"missing field\(s\) \['task_description'\]"),
    ('ALOHA field', lambda o: _with(o, left_wrist_image=o['wrist_image']),
     r"unknown field\(s\) \['left_wrist_image'\]"),
    ('image channels', lambda o: _with(o, primary_image=np.zeros((64, 64, 4), np.uint8)),
     r"'primary_image' must have shape \(H, W, 3\).*got \(64, 64, 4\)"),
    ('image CHW', lambda o: _with(o, wrist_image=np.zeros((3, 64, 64), np.uint8)), r'must have shape \(H, W, 3\)'),
    ('image batch', lambda o: _with(o, wrist_image=np.zeros((1, 64, 64, 3), np.uint8)), 'must have shape'),
    ('image too large', lambda o: _with(o, primary_image=np.zeros((4096, 64, 3), np.uint8)), 'each side must lie'),
    ('image float dtype', lambda o: _with(o, primary_image=np.zeros((64, 64, 3), np.float32)),
     "'primary_image' must have dtype uint8, got float32"),
    ('image list out of range', lambda o: _with(o, primary_image=np.full((16, 16, 3), -1).tolist()),
     r'values must lie in \[0, 255\], got range \[-1, -1\]'),
    ('image not an array', lambda o: _with(o, wrist_image='pixels'), 'must be a uint8 array'),
    ('proprio ALOHA size', lambda o: _with(o, proprio=np.zeros(14)),
     r"'proprio' must have shape \(9,\) \(gripper qpos"),
    ('proprio NaN', lambda o: _with(o, proprio=np.where(np.arange(9) == 4, np.nan, o['proprio'])),
     r"'proprio' has non-finite values at index \[4\]"),
    ('proprio far out of range', lambda o: _with(o, proprio=np.full(9, 100.0)), 'far outside the training range'),
    ('unknown task', lambda o: _with(o, task_description='fold the towel'), r"unknown task 'fold the towel'"),
    ('task not a string', lambda o: _with(o, task_description=['a']), "'task_description' must be a string"),
    ('return_all not bool', lambda o: _with(o, return_all_query_results=1), 'must be a boolean'),
    ('not a mapping', lambda o: [o], 'must be a JSON object'),
]


@pytest.mark.parametrize('make,match', [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_observations_are_refused_with_a_clear_message(protocol, make, match):
  with pytest.raises(base.InvalidObservation, match=match):
    protocol.validate(make(make_request(protocol)))


def test_robocasa_needs_the_second_third_person_image():
  protocol = make_protocol('robocasa')
  with pytest.raises(base.InvalidObservation, match=r"missing field\(s\) \['secondary_image'\]"):
    protocol.validate(_with(make_request(protocol), secondary_image=KeyError))


def test_camera_fields_follow_the_official_get_action():
  # get_action's camera lists: LIBERO [wrist, primary]; RoboCasa [wrist, primary, secondary].
  assert make_protocol('libero').image_fields == {'wrist_image': 'wrist_image', 'primary_image': 'image'}
  assert make_protocol('robocasa').image_fields == {'wrist_image': 'wrist_image', 'primary_image': 'image',
                                                    'secondary_image': 'image2'}


def test_images_get_the_official_jpeg_round_trip_and_resize_without_a_flip(protocol):
  request = make_request(protocol, height=96, width=80)
  validated = protocol.validate(request)
  for field, camera in protocol.image_fields.items():
    jpeg = decode.decode_jpeg(decode.encode_jpeg(request[field], quality=95))
    np.testing.assert_array_equal(validated.camera_images[camera], decode.resize_square(jpeg[None], S)[0])
    assert validated.camera_images[camera].shape == (S, S, 3)
    assert not np.array_equal(jpeg, request[field])  # the round trip is lossy: it did happen
  without_jpeg = make_protocol(protocol.name, jpeg_compression=False).validate(request)
  np.testing.assert_array_equal(without_jpeg.camera_images['image'],
                                decode.resize_square(request['primary_image'][None], S)[0])
  # The flip is the client's (the official evaluation loop applies it before get_action): upside-down input gives
  # the upside-down resize of the round trip, not the original orientation.
  flipped = protocol.validate({**request, 'primary_image': np.flipud(request['primary_image']).copy()})
  assert not np.array_equal(flipped.camera_images['image'], validated.camera_images['image'])


def test_lists_are_accepted_like_the_official_server(protocol):
  request = make_request(protocol)
  as_lists = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in request.items()}
  validated = protocol.validate(as_lists)
  np.testing.assert_array_equal(validated.camera_images['image'], protocol.validate(request).camera_images['image'])
  np.testing.assert_allclose(validated.proprio, request['proprio'])


def test_robocasa_pads_actions_with_the_idle_mobile_base_as_the_official_loop():
  actions = np.arange(32 * 7, dtype=np.float64).reshape(32, 7)
  padded = robocasa.pad_mobile_base(actions)
  assert padded.shape == (32, 12)
  np.testing.assert_array_equal(padded[:, :7], actions)
  np.testing.assert_array_equal(padded[:, 7:], np.tile([0.0, 0.0, 0.0, 0.0, -1.0], (32, 1)))
  with pytest.raises(ValueError, match='expected 7-dim'):
    robocasa.pad_mobile_base(np.zeros((32, 12)))
  result = base.QueryResult(actions=actions, value=0.5, future_images=None, timing={})
  out = make_protocol('robocasa').response(result)
  assert out['actions'].shape == (32, 12) and out['manipulation_actions'] is actions
  assert make_protocol('robocasa', pad_mobile_base=False).response(result)['actions'] is actions
  assert make_protocol('libero').response(result)['actions'] is actions


def test_metadata(protocol):
  meta = protocol.metadata()
  assert meta['protocol'] == protocol.name and meta['proprio_dim'] == 9 and meta['action_dim'] == 7
  assert meta['chunk_size'] == {'libero': 16, 'robocasa': 32}[protocol.name]
  assert meta['images_flipped_by_client'] and meta['jpeg_quality'] == 95 and meta['image_input_size'] == S
  if protocol.name == 'robocasa':
    assert meta['env_action_dim'] == 12 and meta['open_loop_steps'] == 16


@pytest.mark.parametrize('layout,shape', [('libero', (16, 7)), ('robocasa', (32, 12))])
def test_the_tiny_policy_answers_valid_requests(layout, shape):
  runner = runner_lib.PolicyRunner.tiny(image_size=S, layout=layout, action_steps=1)
  request = make_request(runner.protocol, height=128, width=128)
  out = runner.act(request)
  assert out['actions'].shape == shape and out['actions'].dtype == np.float64 and np.isfinite(out['actions']).all()
  assert 0.0 <= out['value_prediction'] <= 1.0
  cameras = {'libero': ['future_image', 'future_wrist_image'],
             'robocasa': ['future_image', 'future_image2', 'future_wrist_image']}[layout]
  assert sorted(out['future_image_predictions']) == cameras
  assert all(v.shape == (S, S, 3) for v in out['future_image_predictions'].values())
  with pytest.raises(base.InvalidObservation, match='proprio'):
    runner.act({**request, 'proprio': np.zeros(14)})


def test_robocasa_requests_from_a_recorded_episode(tmp_path):
  """Observations as the released RoboCasa demonstrations record them (robomimic layout, cameras upright, 12-dim
  actions of which the policy uses the first 7): each camera reaches its slot, and the padded answer has the
  recorded actions' layout (manipulation first, mobile base last)."""
  from tests.data import sim_files  # pylint: disable=g-import-not-at-top
  cameras = ('robot0_agentview_left_rgb', 'robot0_agentview_right_rgb', 'robot0_eye_in_hand_rgb')
  path = sim_files.write_demo_file(tmp_path / 'PnPCounterToSink.hdf5', {'demo_0': (4, True)}, cameras,
                                   action_dim=12, task_attr=TASKS['robocasa'])
  protocol = make_protocol('robocasa', proprio_margin=None)
  with h5py.File(path, 'r') as f:
    demo = f['data/demo_0']
    for t in range(4):
      recorded = {name: decode.decode_jpeg(demo[f'obs/{name}_jpeg'][t]) for name in cameras}
      request = {'primary_image': recorded[cameras[0]], 'secondary_image': recorded[cameras[1]],
                 'wrist_image': recorded[cameras[2]], 'proprio': demo['robot_states'][t],
                 'task_description': demo.attrs['task_description']}
      validated = protocol.validate(request)
      for camera, name in (('image', cameras[0]), ('image2', cameras[1]), ('wrist_image', cameras[2])):
        # Solid colours per camera: the slot image keeps its camera's colour through JPEG and resizing.
        np.testing.assert_allclose(validated.camera_images[camera].mean((0, 1)), recorded[name].mean((0, 1)),
                                   atol=3)
      np.testing.assert_array_equal(validated.proprio, demo['robot_states'][t])
    recorded_actions = demo['actions'][:]
  padded = protocol.response(base.QueryResult(actions=recorded_actions[:, :7], value=0.5, future_images=None,
                                              timing={}))['actions']
  assert padded.shape == recorded_actions.shape
  np.testing.assert_array_equal(padded[:, :7], recorded_actions[:, :7])
