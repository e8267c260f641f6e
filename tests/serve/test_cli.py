"""The serve command: `--help`, the config variants and their errors, and the tiny variant end to end
(`python -m cosmos_jax.serve websocket --config=configs/serve/aloha.py:tiny`, driven by the light client, stopped
with Ctrl-C)."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from configs.serve import aloha as serve_config
from cosmos_jax.policy import planning as planning_lib
from cosmos_jax.serve import command
from cosmos_jax_client import errors
from cosmos_jax_client import websocket_client
from tests.serve.conftest import make_observation

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _serve(*args, **kwargs):
  # A test run started in the background of a shell (`.ci/run &`) inherits SIGINT ignored, and Python then installs
  # no KeyboardInterrupt handler: restore the default so that SIGINT stops the server as Ctrl-C does.
  return subprocess.Popen([sys.executable, '-m', 'cosmos_jax.serve', *args], cwd=ROOT, text=True,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def test_help():
  process = _serve('--help', stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 1, out  # absl exits with status 1 after printing the usage
  for text in ('http|websocket', '--config', 'configs/serve/aloha.py:tiny', '--checkpoint=',
               '--config.planning.checkpoint=', '--step', '--[no]use_ema'):
    assert text in out, text


def test_mode_is_required():
  process = _serve('--config=configs/serve/aloha.py:tiny', stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  out, _ = process.communicate(timeout=120)
  assert process.returncode != 0 and "give the mode, one of ['http', 'websocket']" in out, out


def test_variants_and_config_errors():
  default, tiny = serve_config.get_config(), serve_config.get_config('tiny')
  assert not default.model.tiny and default.model.image_size == 224 and default.port is None
  assert tiny.model.tiny and tiny.model.image_size == 64 and tiny.model.action_steps == 3
  assert command.planning_config(default) is None
  # The planning variant with a planning model is the main ALOHA planning command, number for number.
  main = serve_config.get_config('planning')
  main.planning.checkpoint = 'planning_model'
  assert command.planning_config(main) == planning_lib.PlanningConfig.main_command()
  with pytest.raises(ValueError, match='give the policy: --checkpoint='):
    command.make_models(default)
  tiny.model.checkpoint = 'somewhere'
  with pytest.raises(ValueError, match='model.tiny builds its own model'):
    command.make_models(tiny)
  orphan = serve_config.get_config()
  orphan.planning.checkpoint = 'planner'
  with pytest.raises(ValueError, match='planning.checkpoint needs planning.enabled'):
    command.planning_config(orphan)
  with pytest.raises(ValueError, match="unknown mode 'grpc'"):
    command.make_server('grpc', default, None)
  with pytest.raises(ValueError, match='unknown variant argument'):
    serve_config.get_config('huge')


def test_value_masking_is_off_by_default_without_a_planning_model():
  """V(s') masking needs a model trained with it: on with planning.checkpoint (the official planning commands), off without
  (the official default); an explicit setting wins."""
  config = serve_config.get_config('planning')
  assert not command.planning_config(config).value_of_future_state
  config.planning.checkpoint = 'planning_model'
  assert command.planning_config(config).value_of_future_state
  config.planning.value_of_future_state = False
  assert not command.planning_config(config).value_of_future_state
  config = serve_config.get_config('planning')
  config.planning.value_of_future_state = True
  assert command.planning_config(config).value_of_future_state


def test_depth3_command_call_counts():
  """The official depth-3, ensembles-off planning command from the server config: one 5-step future sample and one
  5-step value per action, three depths, so (10 + 5 + 5) x 3 = 60 DiT passes per candidate, counted at run time."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import planning_fixture as fx  # pylint: disable=g-import-not-at-top
  config = serve_config.get_config('depth3')
  config.planning.checkpoint = 'planning_model'
  cfg = command.planning_config(config)
  assert cfg == planning_lib.PlanningConfig.depth3_command()
  assert (cfg.future_steps, cfg.value_steps, cfg.search_depth, cfg.value_of_future_state) == ((5,), (5,), 3, True)
  assert cfg.dit_passes_per_candidate() == 60
  cfg = planning_lib.PlanningConfig.depth3_command(num_candidates=2)
  rows = []

  def counting_net(params, x, timesteps, context, condition_mask):
    jax.debug.callback(lambda b: rows.append(int(b)), x.shape[0])
    return jnp.tanh(x * params)

  context, latent, proprio = fx.observation()
  out = planning_lib.make_planner(counting_net, counting_net, fx.LAYOUT, cfg)(
      jnp.float32(0.5), jnp.float32(0.3), context, latent, proprio, planning_lib.noise_bank(cfg, fx.LATENT_SHAPE))
  jax.block_until_ready(out)
  assert sum(rows) == 2 * 60 and out['values_by_depth'].shape == (2, 3)


def test_planning_options_reach_the_planner():
  config = serve_config.get_config('planning')
  config.planning.update(value='q_value', predict_future=False, value_steps=2, value_ensemble=3, aggregation='lcb',
                         q_value_mask_future_state=True, devices=1)
  config.model.update(randomize_seed=True, use_variance_scale=True)
  cfg = command.planning_config(config)
  assert (cfg.value_source, cfg.value_steps, cfg.aggregation, cfg.q_value_mask_future_state) == ('q_value', (1, 1, 2),
                                                                                                 'lcb', True)
  assert cfg.randomize_seed and cfg.use_variance_scale and not cfg.predict_future
  config.planning.value_of_future_state = True  # V(s') masking with Q(s, a): refused, not ignored
  with pytest.raises(ValueError, match='value_of_future_state'):
    command.planning_config(config)
  config = serve_config.get_config('planning')
  config.planning.value = 'parallel'  # still predicting futures: refused (the official server cannot)
  with pytest.raises(ValueError, match='predict_future needs a value query'):
    command.planning_config(config)
  config.planning.update(predict_future=False, value_ensemble=0)
  assert command.planning_config(config).value_source == 'parallel'


def test_tiny_variant_end_to_end(aloha_protocol):
  process = _serve('websocket', '--config=configs/serve/aloha.py:tiny', '--config.host=127.0.0.1',
                   '--config.port=0', '--config.serving.max_queue=2', stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
  try:
    log, port = [], None
    deadline = time.monotonic() + 300
    while port is None:  # compiles before it listens (serving.warmup)
      line = process.stderr.readline()
      assert line or process.poll() is None, ''.join(log)
      assert time.monotonic() < deadline, ''.join(log)
      log.append(line)
      found = re.search(r'websocket policy server on ws://127\.0\.0\.1:(\d+)', line)
      port = int(found.group(1)) if found else None
    with websocket_client.WebsocketClient('127.0.0.1', port) as client:
      meta = client.metadata
      assert meta['max_queue'] == 2 and meta['image_fields']['primary_image'] == [64, 64, 3]
      assert meta['action_steps'] == 3 and meta['tasks'] == ['transfer cube'] and meta['planning'] is None
      response = client.infer(make_observation(aloha_protocol))
      assert response['actions'].shape == (50, 14) and np.all(np.isfinite(response['actions']))
      with pytest.raises(errors.ServerError, match='unknown task'):
        client.infer({**make_observation(aloha_protocol), 'task_description': 'fold shirt'})
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=10) as health:
      assert health.read() == b'OK\n'
    process.send_signal(signal.SIGINT)
    # communicate drains stderr while waiting (a full pipe would block the server's exit).
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 0, ''.join(log) + rest
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
