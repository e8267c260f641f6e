"""The training job end to end at the tiny config on the bundled sample: progress, TensorBoard events, PNG
prediction grids, orbax checkpoints, exact resume, and refusing to silently train from scratch."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import jax
import pytest

from configs import aloha
from cosmos_jax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module', autouse=True)
def compilation_cache(tmp_path_factory):
  """Runs in this module compile the same programs; the persistent cache makes the repeats cheap."""
  cache = str(tmp_path_factory.mktemp('jax_cache'))
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  yield cache
  jax.config.update('jax_compilation_cache_dir', old[0])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', old[1])


def tiny_config(**changes):
  c = aloha.get_config('tiny')
  # image_size stays 64: a latent slot (8·8·16 = 1024 values) must hold the 50×14 action chunk.
  c.total_steps = 4
  c.checkpoint.every_steps = 2
  c.checkpoint.async_save = False
  c.log.image_every_steps = 0
  for key, value in changes.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def test_resume_continues_exactly(tmp_path):
  uninterrupted = trainer.train(tiny_config(**{'log.image_every_steps': 4}), str(tmp_path / 'a'))
  assert sorted(uninterrupted.losses) == [1, 2, 3, 4]
  # Observability of the uninterrupted run: TensorBoard events, a prediction grid, orbax checkpoints.
  assert glob.glob(str(tmp_path / 'a' / 'tensorboard' / 'events.out.tfevents.*'))
  assert glob.glob(str(tmp_path / 'a' / 'images' / '*_00000004.png'))
  assert {'2', '4'} <= set(os.listdir(tmp_path / 'a' / 'checkpoints'))

  first = trainer.train(tiny_config(), str(tmp_path / 'b'), stop_after=2)
  assert sorted(first.losses) == [1, 2]
  with pytest.raises(FileExistsError, match='--resume'):
    trainer.train(tiny_config(), str(tmp_path / 'b'))  # never clobber an existing run silently
  resumed = trainer.train(tiny_config(), str(tmp_path / 'b'), resume=True)
  assert sorted(resumed.losses) == [3, 4]
  merged = {**first.losses, **resumed.losses}
  assert merged == uninterrupted.losses, f'resumed {merged} != uninterrupted {uninterrupted.losses}'

  # Logging every 3rd step (and the last) syncs only then, and reports the same losses.
  sparse = trainer.train(tiny_config(**{'log.every_steps': 3}), str(tmp_path / 'c'))
  assert sparse.losses == {k: uninterrupted.losses[k] for k in (3, 4)}


def test_missing_initialisation_is_an_error_not_a_silent_fresh_start(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    trainer.train(tiny_config(**{'init.dit_checkpoint': str(tmp_path / 'nope')}), str(tmp_path / 'w'))
  with pytest.raises(ValueError, match='from_scratch'):
    trainer.train(tiny_config(**{'init.from_scratch': False}), str(tmp_path / 'w2'))


def _cli(workdir, *extra):
  return [sys.executable, '-m', 'cosmos_jax.train', '--config=configs/aloha.py:tiny', f'--workdir={workdir}',
          '--config.total_steps=4', '--config.checkpoint.every_steps=2',
          '--config.checkpoint.async_save=False', '--config.log.image_every_steps=0', *extra]


def _losses(workdir) -> dict[int, float]:
  """Exact per-step losses from the run's metrics.jsonl (the last entry per step wins)."""
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return {row['step']: row['loss'] for row in map(json.loads, f)}


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_cli_run(tmp_path, compilation_cache):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_COMPILATION_CACHE_DIR': compilation_cache}
  full = subprocess.run(_cli(tmp_path / 'a'), cwd=REPO, env=env, capture_output=True, text=True, check=True)
  assert re.search(r'step 4/4 loss \S+ step \d+ ms', full.stdout), full.stdout  # the progress line
  expected = _losses(tmp_path / 'a')
  assert sorted(expected) == [1, 2, 3, 4], full.stdout + full.stderr

  proc = subprocess.Popen(_cli(tmp_path / 'b'), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  marker = tmp_path / 'b' / 'checkpoints' / '2' / 'commit_success.txt'
  deadline = time.time() + 600
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert marker.exists(), 'no checkpoint at step 2 before the run ended'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(_losses(tmp_path / 'b'))
  subprocess.run(_cli(tmp_path / 'b', '--resume'), cwd=REPO, env=env, capture_output=True, text=True, check=True)
  got = _losses(tmp_path / 'b')
  assert sorted(got) == [1, 2, 3, 4] and killed_at < 4, (killed_at, got)
  assert got == expected, f'killed at step {killed_at} and resumed: {got} != uninterrupted {expected}'



def _free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_four_devices(tmp_path, compilation_cache):
  """Two jax.distributed processes × 2 CPU devices reproduce one process × 4 devices, loss for loss."""
  base = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_COMPILATION_CACHE_DIR': compilation_cache}
  flags = ['--config.batch_size=4', '--config.total_steps=3', '--config.mesh.fsdp=2']
  single = subprocess.run(_cli(tmp_path / 'one', *flags), cwd=REPO, capture_output=True, text=True, check=True,
                          env={**base, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'})
  expected = _losses(tmp_path / 'one')
  assert sorted(expected) == [1, 2, 3], single.stdout + single.stderr

  port = _free_port()
  env = {**base, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  procs = [subprocess.Popen(_cli(tmp_path / 'two', *flags, f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
                                 f'--process_id={i}'), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=900)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), '\n'.join(outputs)
  got = _losses(tmp_path / 'two')
  assert got == expected, f'two processes {got} != one process {expected}\n{outputs[0]}'
