"""Text store: import of the official pickle (fixture), round trip, unknown task, refusal of foreign pickles."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from cosmos_jax.data import text
from tests import parity

FIXTURE = parity.golden_dir() / 'aloha_episode_fixture'


def test_import_command_round_trips_the_official_pickle(tmp_path):
  out = tmp_path / 'store'
  subprocess.run([sys.executable, '-m', 'cosmos_jax.data.text', 'import', '--pickle',
                  str(FIXTURE / 't5_embeddings.pkl'), '--out', str(out)], check=True, capture_output=True)
  store = text.TextStore.load(out)
  assert store.tasks == ('fold shirt', 'put candy in bag')
  with open(FIXTURE / 't5_embeddings.pkl', 'rb') as f:
    official = pickle.load(f)  # the test may trust its own fixture; the library never unpickles
  for task, tensor in official.items():
    expected = tensor.to(torch.float32).squeeze(0).numpy()
    got = store.lookup(task)
    assert got.shape == (512, 1024) and got.dtype.name == 'bfloat16'
    np.testing.assert_array_equal(got.astype(np.float32), expected, err_msg=task)
  table = store.table(['put candy in bag', 'fold shirt'])
  np.testing.assert_array_equal(table[1], store.lookup('fold shirt'))
  # Stored trimmed: far smaller than 2 x 1 MiB.
  assert (out / text.TENSOR_FILE).stat().st_size < 64 * 1024


def test_show_and_command_line_errors(tmp_path, capsys):
  text.stand_in_store(['transfer cube']).save(tmp_path / 'store')
  assert text.main(['show', str(tmp_path / 'store')]) == 0
  assert "['transfer cube']" in capsys.readouterr().out
  for argv, message in ((['import', f'--out={tmp_path / "x"}'], 'import needs --pickle'),
                        (['show', str(tmp_path), '--t5=x'], 'show does not take --t5'),
                        (['encode', '--t5=a', '--prompts=b', '--store=c', '--batch-size=2'], "flag 'batch-size'")):
    with pytest.raises(SystemExit) as exit_info:
      text.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err, message


def test_unknown_task_lists_known_ones():
  store = text.stand_in_store(['transfer cube'])
  with pytest.raises(KeyError, match=r"'fold shirt'.*known tasks: \['transfer cube'\]"):
    store.lookup('fold shirt')


def test_foreign_pickle_is_refused(tmp_path):
  path = tmp_path / 'evil.pkl'
  path.write_bytes(pickle.dumps({'task': subprocess.Popen}))
  with pytest.raises(pickle.UnpicklingError, match='refusing to unpickle global subprocess.Popen'):
    text.read_official_pickle(path)


def test_loading_a_pickle_path_explains_the_import(tmp_path):
  with pytest.raises(FileNotFoundError, match='python -m cosmos_jax.data.text import'):
    text.TextStore.load(str(FIXTURE / 't5_embeddings.pkl'))


def test_stand_in_store_is_deterministic_and_labelled(tmp_path):
  a, b = text.stand_in_store(['transfer cube'], seed=3), text.stand_in_store(['transfer cube'], seed=3)
  np.testing.assert_array_equal(a.lookup('transfer cube'), b.lookup('transfer cube'))
  assert 'NOT T5' in a.kind
  a.save(tmp_path)
  assert 'NOT T5' in text.TextStore.load(tmp_path).kind
  np.testing.assert_array_equal(text.TextStore.load(tmp_path).lookup('transfer cube'), a.lookup('transfer cube'))


def test_trim_padding_keeps_every_non_zero_token_rounded_up():
  table = np.zeros((2, text.NUM_TOKENS, 4), np.float32)
  table[0, :3] = 1.0
  table[1, 9, 2] = -0.5  # the longest task decides: 10 tokens -> 16
  trimmed = text.trim_padding(table)
  assert trimmed.shape == (2, 16, 4)
  np.testing.assert_array_equal(trimmed, table[:, :16])
  assert not np.any(table[:, 16:])
  assert text.trim_padding(np.zeros((1, text.NUM_TOKENS, 4))).shape == (1, 8, 4)
  full = np.ones((1, text.NUM_TOKENS, 4))
  assert text.trim_padding(full).shape == full.shape
  with pytest.raises(ValueError, match=r'expected a \(tasks, 512, width\) text table, got shape \(1, 7, 4\)'):
    text.trim_padding(np.zeros((1, 7, 4)))
