"""Serving with --t5: an instruction missing from the text store is encoded on first use, answered, and cached (the
second request does not encode again); without an encoder the clear refusal stays."""

import dataclasses

import numpy as np
import pytest

from cosmos_jax.convert import library
from cosmos_jax.data import text
from cosmos_jax.serve import query as query_lib
from cosmos_jax.serve import runner as runner_lib
from cosmos_jax.serve.protocols import base
from tests.convert import t5_folders
from tests.serve.conftest import make_observation

NEW_TASK = 'put the cube in the bowl, then wave!'


@pytest.fixture(scope='module')
def t5_dir(tmp_path_factory):
  """A one-layer T5 encoder as wide as T5-11B (1024, what the DiT cross-attends to), converted with our converter."""
  root = tmp_path_factory.mktemp('t5')
  t5_folders.write_folder(root / 'hf', t5_folders.train_spiece(), d_model=1024, d_kv=8, num_heads=2, d_ff=16,
                          num_layers=1)
  library.convert_t5(root / 'hf', root / 't5')
  return root / 't5'


def test_unknown_task_is_encoded_once_and_answered(tiny_runner, t5_dir, monkeypatch):
  observation = make_observation(tiny_runner.protocol, seed=3)
  observation['task_description'] = NEW_TASK
  with pytest.raises(base.InvalidObservation, match='--config.model.t5'):
    tiny_runner.validate(observation)

  encoder = text.T5TextEncoder.load(t5_dir)
  calls = []
  encode = encoder.encode
  monkeypatch.setattr(encoder, 'encode', lambda prompts, *a, **k: calls.append(list(prompts)) or encode(prompts))
  # The shared runner gets the encoder for this test only (restored afterwards, store included).
  query = tiny_runner.query
  monkeypatch.setattr(query, 'text_encoder', encoder)
  monkeypatch.setattr(query, 'text_store', query.text_store)
  monkeypatch.setattr(query, 'encoded_tasks', [])
  monkeypatch.setattr(tiny_runner.protocol, 'accept_new_tasks', True)

  first = tiny_runner.act(observation)
  assert calls == [[NEW_TASK]] and query.encoded_tasks == [NEW_TASK]
  assert np.all(np.isfinite(first['actions']))
  np.testing.assert_array_equal(query.text_store.lookup(NEW_TASK), encode([NEW_TASK])[NEW_TASK])
  assert NEW_TASK in tiny_runner.metadata()['tasks'] and 'first use' in tiny_runner.metadata()['text_embeddings']

  second = tiny_runner.act(observation)
  assert calls == [[NEW_TASK]], 'the second request encoded again'
  np.testing.assert_array_equal(second['actions'], first['actions'])
  # Known tasks never touch the encoder.
  tiny_runner.act(make_observation(tiny_runner.protocol, seed=4))
  assert calls == [[NEW_TASK]]


def test_t5_reaches_the_runner_and_its_width_is_checked(tiny_runner, t5_dir, tmp_path):
  runner = runner_lib.PolicyRunner.tiny(image_size=tiny_runner.protocol.image_size, t5_dir=t5_dir)
  assert runner.protocol.accept_new_tasks and runner.query.text_encoder is not None
  assert runner.metadata()['new_tasks']
  narrow = tmp_path / 'narrow'
  t5_folders.write_folder(narrow / 'hf', t5_folders.train_spiece())
  library.convert_t5(narrow / 'hf', narrow / 't5')
  models = dataclasses.replace(tiny_runner.query.models, text_encoder=text.T5TextEncoder.load(narrow / 't5'))
  with pytest.raises(ValueError, match='32-wide embeddings'):
    query_lib.PolicyQuery(models, image_size=tiny_runner.protocol.image_size)
