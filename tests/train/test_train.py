"""The training job end to end at the tiny config on the bundled sample: progress, TensorBoard events, PNG
prediction grids, orbax checkpoints, exact resume, and refusing to silently train from scratch."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from configs import aloha
from cosmos_jax.convert import checkpoint as checkpoint_layout
from cosmos_jax.data import bundled
from cosmos_jax.data import simulator
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.train import data as train_data
from cosmos_jax.train import optim
from cosmos_jax.train import trainer
from tests import parity

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

  # The checkpoint layout: parameters restorable alone beside the training state, data iterator and assets.
  latest = checkpoint_layout.open_checkpoint(tmp_path / 'b')
  assert latest.step == 4 and latest.has_train_state and latest.layout == 'aloha' and not latest.has_ema
  assert {'params', 'train_state', 'data_iter', 'assets'} <= {p.name for p in latest.directory.iterdir()}
  assert latest.train_config['total_steps'] == 4 and latest.text_store().tasks == ('transfer cube',)
  assert latest.vae_checkpoint == os.path.abspath(tiny_config().init.vae_checkpoint)
  # Simulated demonstrations' demos.json travels with the run (the closed-loop evaluation checks their cameras).
  assert simulator.read_demos_metadata(latest.directory / checkpoint_layout.ASSETS) == (
      simulator.read_demos_metadata(bundled.sample_dir('aloha')))
  # Resuming with a config that changes the state's shapes is refused, naming the field.
  with pytest.raises(ValueError, match=r'model\.dit_overrides\.num_blocks: checkpoint \(not set\), this run 1'):
    trainer.train(tiny_config(**{'model.dit_overrides.num_blocks': 1, 'total_steps': 6}), str(tmp_path / 'b'),
                  resume=True)

  # Logging every 3rd step (and the last) syncs only then, and reports the same losses.
  sparse = trainer.train(tiny_config(**{'log.every_steps': 3}), str(tmp_path / 'c'))
  assert sparse.losses == {k: uninterrupted.losses[k] for k in (3, 4)}


def _read_only_sample_without_statistics(tmp_path):
  """A copy of the bundled sample without its statistics file, with write permission removed everywhere."""
  dataset = tmp_path / 'dataset'
  shutil.copytree(bundled.sample_dir('aloha'), dataset)
  (dataset / stats_lib.STATISTICS_FILENAME).unlink()
  for p in [dataset, *dataset.rglob('*')]:
    p.chmod(p.stat().st_mode & ~0o222)
  return dataset


def _snapshot(folder):
  """Every path under `folder` with its mtime and bytes (root ignores permissions, so compare, not just chmod)."""
  return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
          for p in sorted(folder.rglob('*'))}


def test_statistics_are_computed_into_the_run_folder_and_the_dataset_stays_untouched(tmp_path):
  dataset = _read_only_sample_without_statistics(tmp_path)
  before = _snapshot(dataset)
  try:
    result = trainer.train(tiny_config(**{'data.dataset_dir': str(dataset), 'total_steps': 2}), str(tmp_path / 'run'))
  finally:
    for p in [dataset, *dataset.rglob('*')]:
      p.chmod(p.stat().st_mode | 0o200)
  assert sorted(result.losses) == [1, 2]
  assert _snapshot(dataset) == before
  saved = stats_lib.load_statistics(train_data.run_statistics_path(str(tmp_path / 'run' / 'assets')))
  # The bundled file was computed from the same episodes (tests/data/test_sample_data.py), so it is the expectation.
  expected = stats_lib.load_statistics(bundled.sample_dir('aloha'))
  assert sorted(saved) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(saved[name], value, err_msg=name)
  in_checkpoint = checkpoint_layout.open_checkpoint(tmp_path / 'run', step=2).statistics()
  assert {k: np.asarray(v).tolist() for k, v in saved.items()} == {k: v.tolist() for k, v in in_checkpoint.items()}


def test_resume_names_the_config_fields_that_change_shapes():
  saved = json.loads(tiny_config().to_json_best_effort())
  changed = tiny_config(**{'model.dit_overrides.num_blocks': 1, 'optim.ema_decay': 0.5, 'optim.lr': 1e-3,
                           'total_steps': 9, 'model.param_dtype': 'bfloat16'})
  shaping, other = trainer.config_changes_on_resume(saved, changed)
  assert set(shaping) == {'model.dit_overrides.num_blocks', 'optim.ema_decay'}, shaping
  # The train state keeps fp32 masters whatever model.param_dtype says: not a shape change.
  assert set(other) == {'optim.lr', 'total_steps', 'model.param_dtype'}, other
  assert shaping['optim.ema_decay'] == (0.0, 0.5)
  assert trainer.config_changes_on_resume(saved, tiny_config()) == ({}, {})


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
  """Two jax.distributed processes × 2 CPU devices reproduce one process × 4 devices, to reduction order.

  The cross-process reductions (loss mean, gradient sums) add in another order than the in-process ones, so results
  may differ by float32 rounding (seen: step-3 loss 5.438007831573486 against 5.438007354736328, relative 9e-8).
  Bounds: losses to relative 1e-6. Parameters in bulk to relative L2 1e-5; elementwise by at most twice the summed
  learning rates, because an AdamW step moves an element by about its learning rate whatever the gradient's size,
  so an element whose gradient lies within rounding noise of zero may step either way.
  """
  base = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_COMPILATION_CACHE_DIR': compilation_cache}
  # Image logging at the last step: the prediction runs on the global (2-process) arrays onto a replicated sharding.
  steps = 3
  flags = ['--config.batch_size=4', f'--config.total_steps={steps}', '--config.mesh.fsdp=2',
           f'--config.log.image_every_steps={steps}']
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
  assert sorted(got) == sorted(expected), f'two processes {got} != one process {expected}\n{outputs[0]}'
  for step, loss in expected.items():
    assert abs(got[step] - loss) <= 1e-6 * abs(loss), f'step {step}: two processes {got[step]} != one process {loss}'

  one, two = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(
      checkpoint_layout.open_checkpoint(tmp_path / run, step=steps).load_params())]) for run in ('one', 'two'))
  schedule = optim.learning_rate_schedule(aloha.get_config('tiny').optim)
  max_step = 2 * sum(float(schedule(n)) for n in range(steps))
  parity.assert_close(two, one, name=f'params after {steps} steps, two processes vs one', rel_l2=1e-5,
                      max_abs=max_step)
  # Process 0 wrote the prediction grid of the 2-process run; it shows what the 1-process run predicted.
  grids = [np.asarray(Image.open(tmp_path / run / 'images' / 'predictions_current_true_predicted_00000003.png'),
                      np.int16) for run in ('one', 'two')]
  assert grids[0].shape == grids[1].shape and np.abs(grids[0] - grids[1]).max() <= 2, np.abs(grids[0] - grids[1]).max()


# Runs the training CLI, recording every statistics file this process writes (process index and path).
_RECORDING_CLI = '''
import os
from absl import app
import jax
from cosmos_jax.data import stats
from cosmos_jax.train import __main__ as cli
save = stats.save_statistics
def recording_save(values, path):
  with open(os.environ['STATISTICS_WRITES'], 'a', encoding='utf-8') as f:
    f.write(f'{jax.process_index()} {path}\\n')
  save(values, path)
stats.save_statistics = recording_save
app.run(cli.main)
'''


@pytest.mark.slow
def test_two_processes_write_statistics_once_from_process_zero(tmp_path, compilation_cache):
  """Without statistics in a read-only dataset folder, process 0 computes and writes them into the run folder and
  process 1 waits for that file: one write, the dataset folder untouched."""
  dataset = _read_only_sample_without_statistics(tmp_path)
  before = _snapshot(dataset)
  writes = tmp_path / 'writes.txt'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_COMPILATION_CACHE_DIR': compilation_cache,
         'XLA_FLAGS': '--xla_force_host_platform_device_count=1', 'STATISTICS_WRITES': str(writes)}
  port = _free_port()
  args = [f'--config.data.dataset_dir={dataset}', '--config.batch_size=2', '--config.total_steps=1',
          f'--coordinator=127.0.0.1:{port}', '--num_processes=2']
  try:
    procs = [subprocess.Popen([sys.executable, '-c', _RECORDING_CLI, *_cli(tmp_path / 'run', *args)[3:],
                               f'--process_id={i}'], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
  finally:
    for p in [dataset, *dataset.rglob('*')]:
      p.chmod(p.stat().st_mode | 0o200)
  assert all(p.returncode == 0 for p in procs), '\n'.join(outputs)
  run_path = train_data.run_statistics_path(str(tmp_path / 'run' / 'assets'))
  assert writes.read_text().splitlines() == [f'0 {run_path}']
  assert _snapshot(dataset) == before
  saved, expected = stats_lib.load_statistics(run_path), stats_lib.load_statistics(bundled.sample_dir('aloha'))
  for name, value in expected.items():
    np.testing.assert_array_equal(saved[name], value, err_msg=name)
