"""T5 encoder weights: the rule table between transformers' `T5EncoderModel` state_dict and `nn.t5`'s params,
and the reading of a Hugging Face model folder.

A folder is what `save_pretrained` writes or the hub holds: `config.json` plus the weights as `model.safetensors`,
`pytorch_model.bin` (read with `torch.load(weights_only=True)`), or either one sharded with its `*.index.json`;
and the tokenizer's `spiece.model`, which the converter copies into the checkpoint (the encoding CLI tokenizes
with it). A full encoder-decoder checkpoint (t5-11b on the hub is `T5ForConditionalGeneration`) converts too: the
decoder and LM head are dropped on purpose, and the tied copy `encoder.embed_tokens.weight` stands in for
`shared.weight` when only it is stored.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Iterator, Mapping, Sequence

from cosmos_jax.convert import rules as rules_lib
from cosmos_jax.convert import torch_io
from cosmos_jax.nn import t5

CONFIG_FILE = 'config.json'
SPIECE_FILE = 'spiece.model'
TOKENIZER_CONFIG_FILE = 'tokenizer_config.json'
MANIFEST = pathlib.Path(__file__).resolve().parents[2] / 'third_party' / 't5_11b_encoder_manifest.json'

EMBEDDING_KEY = 'shared.weight'
TIED_EMBEDDING_KEY = 'encoder.embed_tokens.weight'

# Official keys dropped on purpose: the decoder and LM head of a full T5 checkpoint, and the encoder's tied copy of
# the shared embedding.
T5_IGNORED_KEYS = (r'decoder\..*', r'lm_head\.weight', r'encoder\.embed_tokens\.weight')

# Weight files of a model folder, in order of preference: (single file, sharded index).
_WEIGHT_FILES = (('model.safetensors', 'model.safetensors.index.json'),
                 ('pytorch_model.bin', 'pytorch_model.bin.index.json'))


def t5_rules(cfg: t5.T5Config) -> list[rules_lib.Rule]:
  """The rule table (the feed-forward names depend on `feed_forward_proj`)."""
  block = 'encoder.block.{i}.layer'
  feed_forward = ('wi_0', 'wi_1', 'wo') if cfg.is_gated else ('wi', 'wo')
  return [
      rules_lib.Rule(EMBEDDING_KEY, 'token_embedding'),
      rules_lib.Rule('encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', 'relative_attention_bias'),
      rules_lib.Rule(f'{block}.0.layer_norm.weight', 'blocks/attention_norm/scale'),
      *[rules_lib.Rule(f'{block}.0.SelfAttention.{name}.weight', f'blocks/attention/{ours}/kernel', 'linear')
        for name, ours in (('q', 'query'), ('k', 'key'), ('v', 'value'), ('o', 'out'))],
      rules_lib.Rule(f'{block}.1.layer_norm.weight', 'blocks/mlp_norm/scale'),
      *[rules_lib.Rule(f'{block}.1.DenseReluDense.{name}.weight', f'blocks/mlp/{name}/kernel', 'linear')
        for name in feed_forward],
      rules_lib.Rule('encoder.final_layer_norm.weight', 'final_norm/scale'),
  ]


def read_hf_config(hf_dir: str | os.PathLike) -> t5.T5Config:
  path = pathlib.Path(hf_dir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f'{hf_dir} is not a Hugging Face model folder: {CONFIG_FILE} is missing')
  try:
    raw = json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None
  if not isinstance(raw, dict):
    raise ValueError(f'{path}: expected a JSON object')
  try:
    return t5.T5Config.from_hf(raw)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{path}: {e}') from None


def read_extra_ids(hf_dir: str | os.PathLike) -> int:
  """The number of sentinel tokens `<extra_id_N>` the tokenizer appends (transformers' default 100)."""
  path = pathlib.Path(hf_dir) / TOKENIZER_CONFIG_FILE
  if not path.is_file():
    return 100
  try:
    raw = json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None
  return int(raw.get('extra_ids', 100))


class _FolderStateDict(torch_io.LazyStateDict):
  """The union of a folder's weight files (one, or the shards of an index), each read lazily; `shared.weight` is
  served from the tied `encoder.embed_tokens.weight` when only that is stored."""

  def __init__(self, parts: Sequence[torch_io.LazyStateDict], where: pathlib.Path):
    self.path = where
    self._parts = list(parts)
    self._owner: dict[str, torch_io.LazyStateDict] = {}
    self._infos = {}
    self._alias: dict[str, str] = {}
    for part in self._parts:
      for key in part:
        if key in self._owner:
          raise ValueError(f'{where}: tensor {key!r} is stored in both {self._owner[key].path.name} and '
                           f'{part.path.name}')
        self._owner[key] = part
        self._infos[key] = part.info(key)
    if EMBEDDING_KEY not in self._infos and TIED_EMBEDDING_KEY in self._infos:
      self._alias[EMBEDDING_KEY] = TIED_EMBEDDING_KEY
      self._infos[EMBEDDING_KEY] = self._infos[TIED_EMBEDDING_KEY]

  def __getitem__(self, key: str):
    key = self._alias.get(key, key)
    return self._owner[key][key]

  def __iter__(self) -> Iterator[str]:
    return iter(self._infos)

  def close(self) -> None:
    for part in self._parts:
      part.close()


def _open_weight_file(path: pathlib.Path) -> torch_io.LazyStateDict:
  if path.suffix == '.safetensors':
    return torch_io.SafetensorsStateDict(path)
  return torch_io.TorchStateDict(path)  # pytorch_model.bin: a torch zip, loaded with weights_only=True


def open_hf_weights(hf_dir: str | os.PathLike) -> torch_io.LazyStateDict:
  """A lazy name -> numpy mapping over a model folder's weights (safetensors preferred over pytorch_model.bin)."""
  hf_dir = pathlib.Path(hf_dir)
  if not hf_dir.is_dir():
    raise FileNotFoundError(f'Hugging Face model folder not found: {hf_dir}')
  for single, index in _WEIGHT_FILES:
    if (hf_dir / single).is_file():
      return _FolderStateDict([_open_weight_file(hf_dir / single)], hf_dir)
    if (hf_dir / index).is_file():
      try:
        weight_map = json.loads((hf_dir / index).read_text(encoding='utf-8'))['weight_map']
        files = sorted(set(weight_map.values()))
      except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f'{hf_dir / index}: not a weight index ({type(e).__name__}: {e})') from None
      missing = [f for f in files if not (hf_dir / f).is_file()]
      if missing:
        raise FileNotFoundError(f'{hf_dir / index} names shards that are missing: {missing}')
      parts = []
      try:
        for f in files:
          parts.append(_open_weight_file(hf_dir / f))
      except BaseException:
        for part in parts:
          part.close()
        raise
      return _FolderStateDict(parts, hf_dir)
  wanted = [name for pair in _WEIGHT_FILES for name in pair]
  raise FileNotFoundError(f'{hf_dir} holds no T5 weights: expected one of {wanted}')


def load_manifest(path: str | os.PathLike = MANIFEST) -> dict:
  return json.loads(pathlib.Path(path).read_text(encoding='utf-8'))


def check_against_manifest(cfg: t5.T5Config, manifest: Mapping | None = None) -> None:
  """For the t5-11b architecture: our table and model must give exactly the manifest's encoder tensors.

  Raises ValueError listing the differences; other architectures (tiny test models, t5-base, ...) pass, and so does
  an installation without the repository's third_party/ (the loader still checks every tensor against eval_shape).
  """
  if manifest is None:
    if not MANIFEST.is_file():
      return
    manifest = load_manifest()
  arch = t5.T5Config.from_hf(manifest['hf_config'])
  if {**cfg.to_dict(), 'dtype': '', 'param_dtype': ''} != {**arch.to_dict(), 'dtype': '', 'param_dtype': ''}:
    return
  ours = rules_lib.official_shapes(t5_rules(cfg), t5.abstract_params(cfg))
  theirs = {e['name']: tuple(e['shape']) for e in manifest['tensors']}
  theirs = {k: v for k, v in theirs.items() if not any(re.fullmatch(p, k) for p in T5_IGNORED_KEYS)}
  diffs = sorted(set(ours.items()) ^ set(theirs.items()))
  if diffs:
    raise ValueError(f'the T5 rule table disagrees with {MANIFEST.name} (a bug in the table): {diffs[:10]}')
