"""The LIBERO simulator side of `cosmos_jax.eval.libero_sim`, run as a script by the Python of the LIBERO
environment (its numpy 1.26 / mujoco 2.3.7 / robosuite 1.4 pins do not sit with the project's environment):

    <libero-venv>/bin/python cosmos_jax/eval/libero_sim_worker.py

It imports only numpy and LIBERO (never cosmos_jax), reads commands on stdin and answers on stdout; everything the
simulator prints goes to stderr. A message is an 8-byte little-endian length followed by an `.npz` archive
(loaded with allow_pickle=False) whose `header` entry is a JSON document as uint8 bytes.

Commands (`header['command']`): `make` {suite, task_id, resolution, seed} -> {language, num_init_states};
`reset` {init_state} -> observation (env.reset(), then env.set_init_state(the task's fixed init state));
`step` {action: float64 [7]} -> observation, reward, done; `close`.
An observation: `agentview_image`, `robot0_eye_in_hand_image` (raw, upside down, as the simulator renders),
`robot0_gripper_qpos`, `robot0_eef_pos`, `robot0_eef_quat`.
"""

import io
import json
import os
import struct
import sys
import traceback

import numpy as np

OBSERVATION_KEYS = ('agentview_image', 'robot0_eye_in_hand_image', 'robot0_gripper_qpos', 'robot0_eef_pos',
                    'robot0_eef_quat')


def pack(header: dict, arrays: dict) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, header=np.frombuffer(json.dumps(header).encode('utf-8'), np.uint8), **arrays)
  payload = buffer.getvalue()
  return struct.pack('<Q', len(payload)) + payload


def unpack(stream):
  """(header, arrays) of the next message, or None at the end of the stream."""
  size = stream.read(8)
  if len(size) < 8:
    return None
  payload = stream.read(struct.unpack('<Q', size)[0])
  with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
    arrays = {k: archive[k] for k in archive.files}
  return json.loads(arrays.pop('header').tobytes().decode('utf-8')), arrays


class Worker:

  def __init__(self):
    self.env = None
    self.suite = None
    self.task_id = None

  def make(self, header, _):
    # LIBERO is installed only in the LIBERO environment (the project side imports this module for pack/unpack),
    # and importing it must follow main's MUJOCO_GL default and stdout redirect (it prints while importing).
    from libero.libero import benchmark, get_libero_path  # pylint: disable=g-import-not-at-top
    from libero.libero.envs import OffScreenRenderEnv  # pylint: disable=g-import-not-at-top
    if self.env is not None:
      self.env.close()
    suites = benchmark.get_benchmark_dict()
    if header['suite'] not in suites:
      raise ValueError(f"unknown LIBERO suite {header['suite']!r}; suites: {sorted(suites)}")
    self.suite = suites[header['suite']]()
    self.task_id = int(header['task_id'])
    if not 0 <= self.task_id < self.suite.n_tasks:
      raise ValueError(f"{header['suite']} has tasks 0..{self.suite.n_tasks - 1}, got {self.task_id}")
    task = self.suite.get_task(self.task_id)
    bddl = os.path.join(get_libero_path('bddl_files'), task.problem_folder, task.bddl_file)
    size = int(header['resolution'])
    self.env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=size, camera_widths=size)
    self.env.seed(int(header['seed']))  # official get_libero_env seeds 0: it affects object poses
    self.init_states = np.asarray(self.suite.get_task_init_states(self.task_id))
    return {'language': task.language, 'num_init_states': int(len(self.init_states)),
            'num_tasks': int(self.suite.n_tasks)}, {}

  def _observation(self, obs):
    return {k: np.ascontiguousarray(obs[k]) for k in OBSERVATION_KEYS}

  def reset(self, header, _):
    self.env.reset()
    obs = self.env.set_init_state(self.init_states[int(header['init_state'])])
    return {}, self._observation(obs)

  def step(self, _, arrays):
    obs, reward, done, _ = self.env.step(arrays['action'].astype(np.float64).tolist())
    return {'reward': float(reward), 'done': bool(done)}, self._observation(obs)


def main():
  os.environ.setdefault('MUJOCO_GL', 'egl')
  replies = os.fdopen(os.dup(1), 'wb')
  os.dup2(2, 1)  # the simulator's own prints (Python and C) go to stderr, never into the replies
  sys.stdout = sys.stderr
  requests = sys.stdin.buffer
  worker = Worker()
  while True:
    message = unpack(requests)
    if message is None or message[0].get('command') == 'close':
      break
    header, arrays = message
    try:
      handler = getattr(worker, header['command'], None)
      if handler is None or header['command'].startswith('_'):
        raise ValueError(f"unknown command {header['command']!r}")
      reply_header, reply_arrays = handler(header, arrays)
      reply = pack({'ok': True, **reply_header}, reply_arrays)
    except Exception as e:  # pylint: disable=broad-except
      reply = pack({'ok': False, 'error': f'{type(e).__name__}: {e}', 'traceback': traceback.format_exc()}, {})
    replies.write(reply)
    replies.flush()
  if worker.env is not None:
    worker.env.close()


if __name__ == '__main__':
  main()
