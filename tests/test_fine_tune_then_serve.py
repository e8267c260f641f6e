"""From a training run to a robot, on the tiny config: train a few steps into a workdir; serve from that workdir and
answer an official-protocol /act request; run one short closed-loop episode from the workdir; export to .pt,
convert that .pt back and get parameters equal to the trained ones. Every step reads the workdir through the one
checkpoint reader (cosmos_jax/convert/checkpoint.py)."""

import json

import jax
import numpy as np
import pytest

from configs import aloha
from configs.eval import aloha as eval_config
from configs.serve import aloha as serve_config
from cosmos_jax.convert import __main__ as convert_main
from cosmos_jax.convert import checkpoint as checkpoint_lib
from cosmos_jax.convert import library as convert_lib
from cosmos_jax.eval import evaluation
from cosmos_jax.serve import command
from cosmos_jax.train import trainer
from tests import official_client

IMAGE_SIZE = 64  # the tiny config's training size


def _train(workdir):
  config = aloha.get_config('tiny')
  config.total_steps = 2
  config.checkpoint.every_steps = 2
  config.checkpoint.async_save = False
  config.log.image_every_steps = 0
  config.optim.ema_decay = 0.5  # keep an EMA: serving and export use it by default
  trainer.train(config, str(workdir))


def _serve_and_act(workdir):
  config = serve_config.get_config()
  config.model.checkpoint = str(workdir)
  config.model.image_size = IMAGE_SIZE
  config.model.action_steps = 2
  runner = command.make_runner(config)
  return runner, official_client.act_over_http(runner, config, IMAGE_SIZE)


@pytest.mark.slow
def test_train_serve_evaluate_export_from_one_workdir(tmp_path):
  workdir = tmp_path / 'run'
  _train(workdir)
  trained = checkpoint_lib.open_checkpoint(workdir)
  assert trained.step == 2 and trained.has_ema and trained.has_train_state

  runner, answer = _serve_and_act(workdir)
  assert 'step 2, EMA' in runner.name
  actions = np.asarray(answer['actions'])
  assert actions.shape == (50, 14) and np.all(np.isfinite(actions))
  assert 0.0 <= answer['value_prediction'] <= 1.0

  pytest.importorskip('gym_aloha')
  config = eval_config.get_config('tiny')
  config.policy.kind = 'checkpoint'
  config.policy.checkpoint = str(workdir)
  config.out = str(tmp_path / 'eval')
  # One query answers the whole short episode: a policy trained for two steps drives the arms out of the training
  # range, which the server's range check (meant for unit mix-ups in real requests) would refuse at the next query.
  config.num_open_loop_steps = config.max_steps
  summary = evaluation.run(config)
  assert summary['episodes'] == 1 and 'step 2, EMA' in summary['policy']

  exported = tmp_path / 'policy.pt'
  convert_main.run(['export', '--checkpoint', str(workdir), '--out', str(exported)])
  architecture = tmp_path / 'architecture.json'
  architecture.write_text(json.dumps(trained.config['config']), encoding='utf-8')
  convert_main.run(['dit', str(exported), str(tmp_path / 'back'), '--config', str(architecture)])
  back, _, _ = convert_lib.load_converted(tmp_path / 'back')
  ema = trained.load_params()
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(back), jax.tree.leaves(ema)):
    np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))
