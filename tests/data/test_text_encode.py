"""Encoding new instructions in JAX, end to end against transformers (torch, CPU, float32):

tiny random `T5EncoderModel`s of both flavours saved with `save_pretrained` -> `python -m cosmos_jax.convert t5`
-> `python -m cosmos_jax.data.text encode`, compared with the official recipe (`T5TokenizerFast` padded and
truncated to 512, `last_hidden_state`, rows past the length zeroed, bf16), with a SentencePiece model trained here.
"""

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
import transformers

from cosmos_jax.convert import __main__ as convert_main
from cosmos_jax.convert import library
from cosmos_jax.data import text
from cosmos_jax.data import tokenizer as tokenizer_lib
from tests.convert import t5_folders


def _relative_l2(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.linalg.norm(got - want) / np.linalg.norm(want)


@pytest.fixture(scope='module')
def spiece(tmp_path_factory):
  path = tmp_path_factory.mktemp('spiece') / 'spiece.model'
  path.write_bytes(t5_folders.train_spiece())
  return path


@pytest.fixture(scope='module')
def hf_tokenizer(spiece):
  return transformers.T5TokenizerFast.from_pretrained(spiece.parent)


@pytest.fixture(scope='module')
def converted(tmp_path_factory, spiece):
  """feed_forward_proj -> (transformers model, its save_pretrained folder, our converted checkpoint), made once;
  the conversion goes through the command-line entry point."""
  cache = {}

  def get(feed_forward_proj='relu'):
    if feed_forward_proj not in cache:
      root = tmp_path_factory.mktemp(feed_forward_proj)
      model = t5_folders.write_folder(root / 'hf', spiece.read_bytes(), feed_forward_proj)
      assert convert_main.main(['t5', '--hf_dir', str(root / 'hf'), '--out', str(root / 't5')]) == 0
      cache[feed_forward_proj] = model, root / 'hf', root / 't5'
    return cache[feed_forward_proj]

  return get


def _official(model, hf_tokenizer, prompts):
  """get_t5_emb.encode_prompts: float32 hidden states with every position past the length zeroed."""
  batch = hf_tokenizer(list(prompts), return_tensors='pt', truncation=True, padding='max_length', max_length=512)
  with torch.no_grad():
    hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
  lengths = batch.attention_mask.sum(dim=1)
  for row in range(hidden.shape[0]):
    hidden[row][lengths[row]:] = 0
  return hidden.numpy(), batch.attention_mask.numpy()


def test_token_ids_equal_t5_tokenizer_fast(spiece, hf_tokenizer):
  ours = tokenizer_lib.T5Tokenizer.from_file(spiece)
  assert ours.vocab_size == len(hf_tokenizer)
  ids, mask = ours.batch(t5_folders.INSTRUCTIONS)
  want = hf_tokenizer(list(t5_folders.INSTRUCTIONS), truncation=True, padding='max_length', max_length=512,
                      return_tensors='np')
  for row, prompt in enumerate(t5_folders.INSTRUCTIONS):
    np.testing.assert_array_equal(ids[row], want['input_ids'][row], err_msg=repr(prompt))
    np.testing.assert_array_equal(mask[row], want['attention_mask'][row], err_msg=repr(prompt))
  # The long prompt is truncated to 511 pieces + EOS; every prompt ends in EOS.
  lengths = mask.sum(axis=1)
  assert lengths.max() == 512 and lengths[-1] == 512
  assert all(ids[row, n - 1] == 1 for row, n in enumerate(lengths))
  # Unbatched encode with a short max_length truncates the same way.
  assert ours.encode(t5_folders.INSTRUCTIONS[0], max_length=4) == hf_tokenizer(
      t5_folders.INSTRUCTIONS[0], truncation=True, max_length=4)['input_ids']


def test_tokenizer_refuses_a_model_without_t5_special_ids(tmp_path):
  with pytest.raises(ValueError, match='not a SentencePiece model'):
    tokenizer_lib.T5Tokenizer(b'not a model', where='junk.model')
  with pytest.raises(FileNotFoundError, match='SentencePiece model not found'):
    tokenizer_lib.T5Tokenizer.from_file(tmp_path / 'missing.model')


@pytest.mark.parametrize('feed_forward_proj', ['relu', 'gated-gelu'])
def test_cli_encoding_matches_transformers(tmp_path, converted, hf_tokenizer, feed_forward_proj):
  model, _, checkpoint = converted(feed_forward_proj)
  prompts = tmp_path / 'prompts.txt'
  prompts.write_text('\n'.join(t5_folders.INSTRUCTIONS) + '\n', encoding='utf-8')
  store_dir = tmp_path / 'store'
  assert text.main(['encode', '--t5', str(checkpoint), '--prompts', str(prompts), '--store', str(store_dir),
                    '--batch_size', '3']) == 0

  want, mask = _official(model, hf_tokenizer, t5_folders.INSTRUCTIONS)
  # Float32 through the converted checkpoint: the official numbers, padded rows included.
  encoder = text.T5TextEncoder.load(checkpoint, batch_size=3)
  got = encoder.embeddings(t5_folders.INSTRUCTIONS)
  error = _relative_l2(got, want)
  print(f'{feed_forward_proj}: float32 vs transformers relative L2 {error:.2e}, max abs {np.abs(got - want).max():.2e}')
  assert error <= 1e-5, f'relative L2 {error:.3e}, max abs {np.abs(got - want).max():.3e}'
  assert np.all(got[mask == 0] == 0) and np.all(np.any(got[mask == 1] != 0, axis=-1))

  # The store the CLI wrote: the official bf16 rounding of those numbers, exactly zero past each length.
  store = text.TextStore.load(store_dir)
  assert set(store.tasks) == set(t5_folders.INSTRUCTIONS)
  assert 'cosmos_jax' in store.kind
  stored = store.table(list(t5_folders.INSTRUCTIONS))
  assert stored.dtype == ml_dtypes.bfloat16 and stored.shape == (len(t5_folders.INSTRUCTIONS), 512, 32)
  official_bf16 = torch.from_numpy(want).to(torch.bfloat16).to(torch.float32).numpy()
  assert np.all(stored.astype(np.float32)[mask == 0] == 0)
  error = _relative_l2(stored.astype(np.float32), official_bf16)
  print(f'{feed_forward_proj}: stored bf16 vs official bf16 relative L2 {error:.2e}')
  assert error <= 4e-3, f'stored bf16 vs official bf16: relative L2 {error:.3e}'  # a rounding flip at most

  # bf16 compute stays within 2e-2 of float32.
  bf16 = text.T5TextEncoder.load(checkpoint, dtype='bfloat16', batch_size=8).embeddings(t5_folders.INSTRUCTIONS)
  assert np.all(bf16[mask == 0] == 0)
  error = _relative_l2(bf16, got)
  print(f'{feed_forward_proj}: bf16 compute vs float32 relative L2 {error:.2e}')
  assert error <= 2e-2, f'bf16 vs float32: relative L2 {error:.3e}'


def test_encode_adds_only_missing_prompts_and_keeps_existing(tmp_path, converted):
  encoder = text.T5TextEncoder.load(converted()[2], batch_size=2)
  store_dir = tmp_path / 'store'
  first, encoded = text.encode_into_store(encoder, ['fold shirt', 'put candy in bag'], store_dir)
  assert sorted(encoded) == ['fold shirt', 'put candy in bag']
  calls = []
  second, encoded = text.encode_into_store(encoder, ['fold shirt', 'open drawer', 'open drawer'], store_dir,
                                           progress=lambda *a: calls.append(a))
  assert encoded == ['open drawer'] and calls and calls[-1][:2] == (1, 1)
  assert second.tasks == ('fold shirt', 'open drawer', 'put candy in bag')
  np.testing.assert_array_equal(text.TextStore.load(store_dir).lookup('fold shirt'), first.lookup('fold shirt'))


def test_encode_refuses_stand_in_store_and_bad_inputs(tmp_path, converted):
  stand_in = tmp_path / 'stand_in'
  text.stand_in_store(['transfer cube']).save(stand_in)
  encoder = text.T5TextEncoder.load(converted()[2])
  with pytest.raises(ValueError, match='stand-in store'):
    text.encode_into_store(encoder, ['fold shirt'], stand_in)
  with pytest.raises(FileNotFoundError, match='prompts file not found'):
    text.read_prompts(tmp_path / 'nope.txt')
  (tmp_path / 'empty.txt').write_text('\n\n', encoding='utf-8')
  with pytest.raises(ValueError, match='no prompts'):
    text.read_prompts(tmp_path / 'empty.txt')
  with pytest.raises(FileNotFoundError, match='not a converted T5 checkpoint'):
    text.T5TextEncoder.load(tmp_path)


def test_encode_command_line(tmp_path, converted):
  prompts = tmp_path / 'prompts.json'
  prompts.write_text('["fold shirt", "put candy in bag"]', encoding='utf-8')
  run = subprocess.run([sys.executable, '-m', 'cosmos_jax.data.text', 'encode', '--t5', str(converted()[2]), '--prompts',
                        str(prompts), '--store', str(tmp_path / 'store')], capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  assert 'encoded 2/2 prompts' in run.stderr and 'encoded 2 new prompts' in run.stdout
  assert text.TextStore.load(tmp_path / 'store').tasks == ('fold shirt', 'put candy in bag')
