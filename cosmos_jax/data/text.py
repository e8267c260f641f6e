"""T5 text-embedding store: a safe on-disk format, and the one-time import of the official pickle.

The official embeddings are a pickle of `task string -> torch.Tensor (1, 512, 1024) bfloat16`, with every position
at or after the true token length exactly 0 (policy_spec 11.4). Unpickling runs code, so the library never does
it at train or serve time. Convert once:

    python -m cosmos_jax.data.text import --pickle aloha_t5_embeddings.pkl --out aloha_text

which writes `aloha_text/embeddings.safetensors` (one bf16 tensor per task, trimmed to its non-zero prefix) and
`aloha_text/index.json` (task strings, lengths, provenance). `TextStore.load(dir)` reads them back and re-pads to
512 tokens, bit-identical to the pickle. Even the import unpickles through an allow-list (only the torch tensor
rebuild functions and OrderedDict), and loads tensor storages with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pickle
import sys
from collections.abc import Mapping, Sequence

import ml_dtypes
import numpy as np

FORMAT = 'cosmos_jax.text_store/1'
INDEX_FILE = 'index.json'
TENSOR_FILE = 'embeddings.safetensors'
NUM_TOKENS = 512
EMBED_DIM = 1024


@dataclasses.dataclass(frozen=True)
class TextStore:
  """Task string -> (512, 1024) bf16 embedding (numpy, ml_dtypes.bfloat16)."""

  embeddings: Mapping[str, np.ndarray]
  kind: str = 'official T5-11B'

  @property
  def tasks(self) -> tuple[str, ...]:
    return tuple(sorted(self.embeddings))

  def lookup(self, task: str) -> np.ndarray:
    """The (512, 1024) bf16 embedding of `task`; an unknown task is an error listing the known ones."""
    if task not in self.embeddings:
      raise KeyError(f'no text embedding for task {task!r}; known tasks: {list(self.tasks)} (embeddings are looked '
                     'up by the exact task string; compute new ones with the official T5-11B encoder and import them)')
    return self.embeddings[task]

  def table(self, tasks: Sequence[str]) -> np.ndarray:
    """(len(tasks), 512, 1024) bf16, row i the embedding of tasks[i] (the `text_index` of a sample)."""
    return np.stack([self.lookup(t) for t in tasks])

  def save(self, directory: str | os.PathLike, *, source: str = '') -> None:
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tensors, entries = {}, []
    for i, task in enumerate(self.tasks):
      value = np.asarray(self.embeddings[task])
      if value.shape != (NUM_TOKENS, EMBED_DIM):
        raise ValueError(f'embedding of {task!r} has shape {value.shape}, expected ({NUM_TOKENS}, {EMBED_DIM})')
      nonzero = np.flatnonzero(np.any(value.astype(np.float32) != 0, axis=-1))
      length = int(nonzero[-1]) + 1 if nonzero.size else 0
      key = f'task_{i}'
      tensors[key] = np.ascontiguousarray(value[:max(length, 1)].astype(ml_dtypes.bfloat16))
      entries.append({'task': task, 'key': key, 'length': length})
    save_file(tensors, os.path.join(directory, TENSOR_FILE))
    index = {'format': FORMAT, 'num_tokens': NUM_TOKENS, 'dim': EMBED_DIM, 'dtype': 'bfloat16', 'kind': self.kind,
             'source': source, 'tasks': entries,
             'note': 'rows at and after `length` are zero and not stored; loading re-pads to num_tokens'}
    with open(os.path.join(directory, INDEX_FILE), 'w', encoding='utf-8') as f:
      json.dump(index, f, indent=2)

  @classmethod
  def load(cls, directory: str | os.PathLike) -> 'TextStore':
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

    directory = os.fspath(directory)
    index_path = os.path.join(directory, INDEX_FILE)
    if not os.path.exists(index_path):
      hint = (' (this looks like an official pickle: convert it once with `python -m cosmos_jax.data.text import '
              '--pickle FILE --out DIR`)' if directory.endswith('.pkl') else '')
      raise FileNotFoundError(f'text store index {index_path} does not exist{hint}')
    with open(index_path, encoding='utf-8') as f:
      index = json.load(f)
    if index.get('format') != FORMAT:
      raise ValueError(f'{index_path}: format {index.get("format")!r}, expected {FORMAT!r}')
    tensors = load_file(os.path.join(directory, TENSOR_FILE))
    embeddings = {}
    for entry in index['tasks']:
      if entry['key'] not in tensors:
        raise ValueError(f'{directory}/{TENSOR_FILE}: missing tensor {entry["key"]!r} for task {entry["task"]!r}')
      full = np.zeros((index['num_tokens'], index['dim']), ml_dtypes.bfloat16)
      full[:entry['length']] = tensors[entry['key']][:entry['length']]
      embeddings[entry['task']] = full
    return cls(embeddings, kind=index.get('kind', ''))


# ----------------------------------------------------------------------------------------------------------------
# One-time import of the official pickle.


class _AllowListUnpickler(pickle.Unpickler):
  """Only the globals a pickled dict of torch tensors needs; storages load with torch.load(weights_only=True)."""

  def find_class(self, module, name):
    import torch  # pylint: disable=g-import-not-at-top

    if (module, name) == ('collections', 'OrderedDict'):
      import collections  # pylint: disable=g-import-not-at-top
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return torch._utils._rebuild_tensor_v2  # pylint: disable=protected-access
    if (module, name) == ('torch.storage', '_load_from_bytes'):
      return lambda data: torch.load(io.BytesIO(data), weights_only=True)
    raise pickle.UnpicklingError(f'refusing to unpickle global {module}.{name} (not a plain dict of torch tensors)')


def read_official_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """task -> (512, 1024) bf16 numpy from the official `t5_embeddings.pkl` (needs torch, the `[torch]` extra)."""
  import torch  # pylint: disable=g-import-not-at-top

  with open(path, 'rb') as f:
    raw = _AllowListUnpickler(f).load()
  if not isinstance(raw, dict):
    raise ValueError(f'{path}: expected a dict of task string -> tensor, got {type(raw).__name__}')
  out = {}
  for task, tensor in raw.items():
    if not isinstance(task, str) or not isinstance(tensor, torch.Tensor):
      raise ValueError(f'{path}: entry {task!r} is not a (str, torch.Tensor) pair')
    value = tensor.detach().to(torch.float32).reshape(-1, tensor.shape[-1]).numpy()
    if value.shape != (NUM_TOKENS, EMBED_DIM):
      raise ValueError(f'{path}: embedding of {task!r} has shape {tuple(tensor.shape)}, expected (1, 512, 1024)')
    out[task] = value.astype(ml_dtypes.bfloat16)  # exact: the values are bf16 to begin with
  return out


def import_pickle(pickle_path: str, out_dir: str, kind: str = 'official T5-11B') -> TextStore:
  store = TextStore(read_official_pickle(pickle_path), kind=kind)
  store.save(out_dir, source=os.path.basename(pickle_path))
  return store


def stand_in_store(tasks: Sequence[str], seed: int = 0, scale: float = 0.2) -> TextStore:
  """A documented STAND-IN, not T5: per task, fixed-seed N(0, scale^2) on the first (word count + 1) tokens, zeros
  after (the official zero-padding pattern). For the bundled sample and tests only; real runs import the official
  T5 pickle."""
  embeddings = {}
  for i, task in enumerate(sorted(tasks)):
    rng = np.random.default_rng([seed, i])
    value = np.zeros((NUM_TOKENS, EMBED_DIM), np.float32)
    length = len(task.split()) + 1
    value[:length] = rng.normal(0.0, scale, (length, EMBED_DIM))
    embeddings[task] = value.astype(ml_dtypes.bfloat16)
  return TextStore(embeddings, kind=f'stand-in: fixed-seed random N(0,{scale}^2), seed {seed}, NOT T5')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m cosmos_jax.data.text', description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  imp = sub.add_parser('import', help='convert an official t5_embeddings.pkl once into a safe store')
  imp.add_argument('--pickle', required=True, help='the official <bench>_t5_embeddings.pkl')
  imp.add_argument('--out', required=True, help='output directory (index.json + embeddings.safetensors)')
  show = sub.add_parser('show', help='list the tasks of a store')
  show.add_argument('store')
  args = parser.parse_args(argv)
  if args.command == 'import':
    store = import_pickle(args.pickle, args.out)
    print(f'wrote {len(store.tasks)} task embeddings to {args.out}: {list(store.tasks)}')
  else:
    store = TextStore.load(args.store)
    print(f'{args.store} ({store.kind}): {list(store.tasks)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
