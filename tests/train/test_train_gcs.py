"""The documented pod workflow against a real GCS API (the local emulator, tests/gcs_emulator.py): train the tiny
config with --workdir=gs://bucket/run, SIGKILL it after its first checkpoint, resume from the bucket and get the
losses of an uninterrupted run; then serve from gs://bucket/run. The run's processes work in an empty directory
with their own temporary directory: nothing of the run is written to the local disk outside that cache."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from etils import epath

from cosmos_jax.serve import runner as runner_lib
from tests import gcs_emulator

REPO = pathlib.Path(__file__).resolve().parents[2]


def _cli(workdir, *extra):
  return [sys.executable, '-m', 'cosmos_jax.train', f'--config={REPO}/configs/aloha.py:tiny', f'--workdir={workdir}',
          '--config.total_steps=4', '--config.checkpoint.every_steps=2', '--config.checkpoint.async_save=False',
          '--config.log.image_every_steps=4', *extra]


def _losses(path) -> dict[int, float]:
  lines = epath.Path(path).read_text(encoding='utf-8').splitlines()
  return {row['step']: row['loss'] for row in map(json.loads, lines)}


def _tree(directory: pathlib.Path) -> list[str]:
  return sorted(str(p.relative_to(directory)) for p in directory.rglob('*'))


@pytest.mark.slow
def test_train_killed_and_resumed_in_a_bucket_then_served_from_it(tmp_path, monkeypatch):
  cwd, cache = tmp_path / 'cwd', tmp_path / 'cache'
  cwd.mkdir()
  cache.mkdir()
  with gcs_emulator.emulator() as gcs:
    env = {**os.environ, **gcs, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(REPO), 'TMPDIR': str(cache)}
    expected_run = subprocess.run(_cli(tmp_path / 'local'), cwd=cwd, env=env, capture_output=True, text=True)
    assert expected_run.returncode == 0, expected_run.stdout + expected_run.stderr
    expected = _losses(tmp_path / 'local' / 'metrics.jsonl')
    assert sorted(expected) == [1, 2, 3, 4]

    with gcs_emulator.in_this_process(gcs, monkeypatch):
      run = epath.Path('gs://bucket/run')
      proc = subprocess.Popen(_cli(run), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      marker = run / 'checkpoints' / '2' / 'commit_success.txt'
      deadline = time.time() + 600
      while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
      assert marker.exists(), ('no checkpoint of step 2 in the bucket before the run ended:\n'
                               + (proc.communicate()[0] if proc.poll() is not None else 'still running'))
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      killed_at = max(_losses(run / 'metrics.jsonl'))
      resumed = subprocess.run(_cli(run, '--resume'), cwd=cwd, env=env, capture_output=True, text=True)
      assert resumed.returncode == 0, resumed.stdout + resumed.stderr
      assert 'resumed from step' in resumed.stdout, resumed.stdout
      got = _losses(run / 'metrics.jsonl')
      assert sorted(got) == [1, 2, 3, 4] and killed_at < 4, (killed_at, got)
      for step, loss in expected.items():
        assert abs(got[step] - loss) <= 1e-6 * abs(loss), f'step {step}: bucket run {got[step]} != local {loss}'
      assert (run / 'images' / 'predictions_current_true_predicted_00000004.png').exists()
      assert list((run / 'tensorboard').iterdir())

      # Nothing of the run on the local disk: the working directory is empty, and the cache is only that.
      assert _tree(cwd) == [], _tree(cwd)

      # Served from the bucket: the latest step, its assets and the VAE the run recorded.
      policy = runner_lib.PolicyRunner.from_checkpoints(os.fspath(run), image_size=64, action_steps=2,
                                                        decode_future_images=False)
      assert 'gs://bucket/run/checkpoints/4' in policy.name
      protocol = policy.protocol
      rng = np.random.default_rng(0)
      observation = {f: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for f in protocol.image_fields}
      observation['proprio'] = 0.5 * (protocol.statistics['proprio_min'] + protocol.statistics['proprio_max'])
      observation['task_description'] = 'transfer cube'
      actions = np.asarray(policy.act(observation)['actions'])
      assert actions.shape == (50, 14) and np.all(np.isfinite(actions))
