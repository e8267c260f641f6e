"""Tiny Hugging Face T5 folders for the T5 tests: a SentencePiece model trained here (T5's special ids: <pad> 0,
</s> 1, <unk> 2) and random `T5EncoderModel`s of both flavours written with `save_pretrained`."""

from __future__ import annotations

import io
import pathlib
import random

SYLLABLES = ('ka', 'to', 'ri', 'mu', 'sen', 'pla', 'dro', 've', 'qui', 'zon', 'el', 'ap', 'cube', 'bowl', 'pick')
WORDS = ('pick up the red cube and place it in the bowl put candy bag fold shirt open drawer close microwave turn '
         'on stove move left arm right gripper slowly carefully onto plate').split()

# The instructions of the tokenizer and parity tests: punctuation, numbers, spacing, unknown characters, special
# tokens written in the text, and one far longer than 512 tokens.
INSTRUCTIONS = (
    'pick up the red cube and place it in the bowl',
    'Put candy in bag, then fold the shirt!',
    'move the left arm 12.5 cm to the right; rotate 90 degrees (slowly).',
    '  open   the drawer\tand close the microwave  ',
    'turn on stove #3 at 100% — caf\u00e9 \u2603 \u4e2d\u6587 \ufb01 \u2460?',
    'a </s> b <extra_id_0> c<extra_id_99>d <unk><pad>',
    'kato rimu, senpla: dro-ve "quizon" el\'ap',
    ' '.join(['fold shirt carefully'] * 400),
)


def train_spiece(vocab_size: int = 300) -> bytes:
  """A unigram SentencePiece model with T5's special-token ids, trained in well under a second."""
  import sentencepiece  # pylint: disable=g-import-not-at-top

  rng = random.Random(0)
  words = list(WORDS) + [''.join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(300)]
  sentences = [' '.join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice(['.', '!', ', 2 times', '?'])
               for _ in range(2000)]
  sentences += ['0123456789 ,.;:!?\'"()-_/ +=%#@&*'] * 5
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size, model_type='unigram',
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
  return model.getvalue()


def hf_config(feed_forward_proj: str, **overrides):
  import transformers  # pylint: disable=g-import-not-at-top

  sizes = dict(vocab_size=400, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
               relative_attention_max_distance=20)
  return transformers.T5Config(feed_forward_proj=feed_forward_proj, **{**sizes, **overrides})


def write_folder(path: pathlib.Path, spiece: bytes, feed_forward_proj: str = 'relu', seed: int = 0, **sizes):
  """A random T5EncoderModel saved with `save_pretrained` (safetensors) plus `spiece.model`; returns the model."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  model = transformers.T5EncoderModel(hf_config(feed_forward_proj, **sizes)).eval()
  with torch.no_grad():  # the default init leaves the norm gains at 1: make them matter
    for name, param in model.named_parameters():
      if 'layer_norm' in name:
        param.uniform_(0.5, 1.5)
  model.save_pretrained(path)
  (path / 'spiece.model').write_bytes(spiece)
  return model
