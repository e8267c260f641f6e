"""The T5 tokenizer: the model's own SentencePiece model (`spiece.model`), giving transformers' `T5TokenizerFast`
ids, as the official encoder calls it (`truncation=True, padding='max_length', max_length=512`).

What `T5TokenizerFast` adds around SentencePiece, reproduced here:
- the special tokens `</s>`, `<unk>`, `<pad>` and the sentinels `<extra_id_0..N-1>` written in the text are
  matched first (longest first), each becoming its id; the text between them is tokenized on its own;
- the sentinels' ids follow the SentencePiece vocabulary in reverse: `<extra_id_0>` is the last id;
- `</s>` (id 1) is appended; truncation keeps the first `max_length - 1` pieces so the EOS always fits;
- padding with `<pad>` (id 0) to `max_length`, attention mask 1 on the tokens and the EOS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

MAX_LENGTH = 512
DEFAULT_EXTRA_IDS = 100


class T5Tokenizer:
  """Text -> T5 token ids with SentencePiece. `sentencepiece` is the `text` extra."""

  def __init__(self, model_proto: bytes, *, extra_ids: int = DEFAULT_EXTRA_IDS, where: str = 'spiece.model'):
    try:
      import sentencepiece  # pylint: disable=g-import-not-at-top  (optional: the `text` extra)
    except ImportError as e:
      raise ImportError('T5 tokenization needs sentencepiece: pip install "cosmos_jax[text]"') from e
    self._sp = sentencepiece.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(model_proto)
    except (RuntimeError, OSError) as e:
      raise ValueError(f'{where}: not a SentencePiece model ({e})') from None
    self.where = where
    self.extra_ids = int(extra_ids)
    self.pad_id, self.eos_id, self.unk_id = 0, 1, 2
    pieces = {self._sp.id_to_piece(i): i for i in (self.pad_id, self.eos_id, self.unk_id)}
    if pieces != {'<pad>': 0, '</s>': 1, '<unk>': 2}:
      raise ValueError(f'{where}: ids 0, 1, 2 are {list(pieces)}; a T5 SentencePiece model has <pad>, </s>, <unk>')
    base = self._sp.get_piece_size()
    self.special_ids = {'<pad>': self.pad_id, '</s>': self.eos_id, '<unk>': self.unk_id}
    self.special_ids.update({f'<extra_id_{i}>': base + self.extra_ids - 1 - i for i in range(self.extra_ids)})
    self._special = re.compile('|'.join(re.escape(t) for t in sorted(self.special_ids, key=len, reverse=True)))

  @classmethod
  def from_file(cls, path: str | os.PathLike, *, extra_ids: int = DEFAULT_EXTRA_IDS) -> 'T5Tokenizer':
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'SentencePiece model not found: {path}')
    with open(path, 'rb') as f:
      return cls(f.read(), extra_ids=extra_ids, where=path)

  @property
  def vocab_size(self) -> int:
    """SentencePiece pieces plus sentinels (transformers' `len(tokenizer)`; the model's table may be larger)."""
    return self._sp.get_piece_size() + self.extra_ids

  def encode(self, text: str, max_length: int = MAX_LENGTH) -> list[int]:
    """Token ids of one text with the EOS, truncated to `max_length` (EOS included)."""
    if not isinstance(text, str):
      raise ValueError(f'T5 tokenizer: expected a string, got {type(text).__name__} {text!r}')
    if max_length < 1:
      raise ValueError(f'max_length must be >= 1 (room for the EOS), got {max_length}')
    ids: list[int] = []
    start = 0
    for match in self._special.finditer(text):
      ids.extend(self._sp.encode(text[start:match.start()]))
      ids.append(self.special_ids[match.group()])
      start = match.end()
    ids.extend(self._sp.encode(text[start:]))
    return ids[:max_length - 1] + [self.eos_id]

  def batch(self, texts: Sequence[str], max_length: int = MAX_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), both [len(texts), max_length] int32, padded with <pad> on the right."""
    ids = np.full((len(texts), max_length), self.pad_id, np.int32)
    mask = np.zeros((len(texts), max_length), np.int32)
    for row, text in enumerate(texts):
      tokens = self.encode(text, max_length)
      ids[row, :len(tokens)] = tokens
      mask[row, :len(tokens)] = 1
    return ids, mask
