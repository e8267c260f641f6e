"""Scripted gym-aloha demonstrators: a full-length episode of each task succeeds; the kinematics they rest on.

Needs gym-aloha (the `test` extra); no rendering. The 50-seed success rates are the slow test (and
`python -m cosmos_jax.data.make_sample --measure`).
"""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')  # before anything imports mujoco

import numpy as np
import pytest

from cosmos_jax.data import aloha, make_sample, scripted, simulator


@pytest.mark.parametrize('task, seed', [('transfer_cube', 7), ('insertion', 3)])
def test_one_full_length_scripted_episode_succeeds(task, seed):
  sim = simulator.AlohaSim(task)
  episode = scripted.run(sim, seed)
  assert episode.actions.shape == (simulator.EPISODE_STEPS, 14) and episode.qpos.shape == (400, 14)
  assert episode.success and episode.held_to_the_end, ''.join(str(int(r)) for r in episode.rewards[::10])
  first_success = int(np.argmax(episode.rewards >= 4))
  # Both tasks pass through "grasped and lifted" (reward 2) before the goal.
  assert np.any(episode.rewards[:first_success] == 2)
  # Observation t precedes action t: the first observation is the rest pose the episode starts from.
  np.testing.assert_allclose(episode.qpos[0, :6], [0, -0.96, 1.16, 0, -0.3, 0], atol=1e-6)
  # Deterministic: the same seed gives the same actions.
  np.testing.assert_array_equal(scripted.run(sim, seed, num_steps=50).actions, episode.actions[:50])


def test_inverse_kinematics_recovers_reachable_poses():
  sim = simulator.AlohaSim('transfer_cube')
  sim.reset(0)
  rng = np.random.default_rng(0)
  rest = np.array([0, -0.96, 1.16, 0, -0.3, 0])
  for side in ('left', 'right'):
    arm = scripted.ArmKinematics(sim.physics, side)
    for _ in range(5):
      joints = rest + rng.uniform(-0.4, 0.4, 6)
      position, rotation = arm.forward(joints)
      solved = arm.inverse((position, rotation), joints + rng.uniform(-0.05, 0.05, 6))
      solved_position, solved_rotation = arm.forward(solved)
      np.testing.assert_allclose(solved_position, position, atol=1e-4, err_msg=side)  # 0.1 mm
      np.testing.assert_allclose(solved_rotation, rotation, atol=1e-3, err_msg=side)
  # The grasp point of the rest pose: 0.13 m along the gripper, about 19 cm in from each base.
  np.testing.assert_allclose(scripted.ArmKinematics(sim.physics, 'right').forward(rest)[0], [0.188, 0.5, 0.308],
                             atol=2e-3)


def test_unrolled_forearm_keeps_the_gripper_pose():
  sim = simulator.AlohaSim('transfer_cube')
  arm = scripted.ArmKinematics(sim.physics, 'left')
  rolled = np.array([0.2, 0.1, 0.3, 3.0, -0.9, 2.5])
  unrolled = scripted._unroll_forearm(rolled)  # pylint: disable=protected-access
  assert abs(unrolled[3]) <= np.pi / 2
  for a, b in zip(arm.forward(rolled), arm.forward(unrolled)):
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_gripper_frames_and_slerp():
  np.testing.assert_allclose(scripted.RIGHT_DOWN @ scripted.RIGHT_DOWN.T, np.eye(3), atol=1e-12)
  np.testing.assert_allclose(scripted.RIGHT_DOWN[:, 0], [0, 0, -1])
  half = scripted.slerp(np.eye(3), scripted.LEFT_ALONG_X, 0.5)
  np.testing.assert_allclose(scripted.slerp(half, scripted.LEFT_ALONG_X, 1.0), scripted.LEFT_ALONG_X, atol=1e-12)
  np.testing.assert_allclose(half @ half, scripted.LEFT_ALONG_X, atol=1e-9)  # half the rotation, applied twice


def test_scripted_policy_refuses_out_of_order_steps():
  sim = simulator.AlohaSim('transfer_cube')
  sim.reset(0)
  policy = scripted.transfer_cube_policy(sim)
  policy(sim, 0)
  with pytest.raises(ValueError, match='expected step 1, got 5'):
    policy(sim, 5)


@pytest.mark.slow
def test_scripted_policies_succeed_on_at_least_90_percent_of_50_seeds(tmp_path):
  results = make_sample.main(['--measure', '--seeds', '50', '--json', str(tmp_path / 'success.json')])
  for task, result in results.items():
    assert result['success_rate'] >= 0.9, (task, result)


def test_insertion_demos_in_the_aloha_format(tmp_path):
  entry = make_sample.generate(str(tmp_path), 1, task='insertion', num_steps=4, seed=5, image_size=32,
                               log=lambda _: None)
  (path,) = aloha.find_episode_files(str(tmp_path))
  demo = aloha.read_demo(path, 32)
  assert demo.command == 'insertion' and demo.num_steps == 4 and entry['seeds'] == [5]
  assert {role: f.shape for role, f in demo.frames.items()} == {r: (4, 32, 32, 3) for r in aloha.CAMERA_ROLES.values()}
  with pytest.raises(FileExistsError, match='overwrite'):
    make_sample.generate(str(tmp_path), 1, task='insertion', num_steps=4, log=lambda _: None)


def test_held_offsets_perturb_the_arm_joints_only_before_their_end():
  offsets = scripted.held_offsets(np.random.default_rng(0), 30, 0.05, until=20, hold=10)
  assert offsets.shape == (30, 14)
  assert np.all(offsets[:, [6, 13]] == 0) and np.all(offsets[20:] == 0) and np.abs(offsets).max() <= 0.05
  np.testing.assert_array_equal(offsets[:10], np.repeat(offsets[:1], 10, axis=0))
  assert np.abs(offsets[0] - offsets[10]).max() > 0  # redrawn after `hold` steps
  assert np.all(np.abs(offsets[:20, :6]) > 0)
  with pytest.raises(ValueError, match='hold >= 1'):
    scripted.held_offsets(np.random.default_rng(0), 30, 0.05, until=20, hold=0)


def test_offsets_move_the_arm_but_not_the_recorded_actions():
  sim = simulator.AlohaSim('transfer_cube')
  clean = scripted.run(sim, 7, num_steps=30)
  offsets = scripted.held_offsets(np.random.default_rng(1), 30, 0.05, until=30, hold=10)
  perturbed = scripted.run(sim, 7, num_steps=30, offsets=offsets)
  # Before the grasp the scripted targets depend on the cube's place only, so the labels stay the scripted path...
  np.testing.assert_allclose(perturbed.actions, clean.actions, atol=1e-9)
  # ...while the arm the cameras and proprio show follows the offset commands.
  gap = np.abs(perturbed.qpos[-1, :6] - clean.qpos[-1, :6])
  assert 0.005 < gap.max() < 0.1, gap
  with pytest.raises(ValueError, match=r'offsets must have shape \(30, 14\)'):
    scripted.run(sim, 7, num_steps=30, offsets=offsets[:, :7])


def test_perturbed_copies_are_written_and_marked(tmp_path):
  perturbation = make_sample.Perturbation(copies=1, until=4, hold=2)
  entry = make_sample.generate(str(tmp_path), 1, num_steps=4, seed=5, image_size=32, perturbation=perturbation,
                               log=lambda _: None)
  assert entry['seeds'] == [5] and entry['perturbed_copies'] == [[5, 1]]
  assert entry['perturbation'] == {'copies': 1, 'scale': 0.05, 'until': 4, 'hold': 2}
  files = aloha.find_episode_files(str(tmp_path))
  import h5py  # pylint: disable=g-import-not-at-top
  marks = []
  for path in files:
    with h5py.File(path, 'r') as f:
      marks.append((int(f.attrs['seed']), int(f.attrs.get('perturbed_copy', 0))))
  assert sorted(marks) == [(5, 0), (5, 1)]
  demos = {mark: aloha.read_demo(path, 32) for mark, path in zip(marks, files)}
  np.testing.assert_array_equal(demos[5, 0].actions, demos[5, 1].actions)
  assert np.abs(demos[5, 0].proprio[-1] - demos[5, 1].proprio[-1]).max() > 0
