"""T5 text-embedding store: a safe on-disk format, and the one-time import of the official pickle.

The official embeddings are a pickle of `task string -> torch.Tensor (1, 512, 1024) bfloat16`, with every position
at or after the true token length exactly 0 (official cosmos_policy/datasets/t5_embedding_utils.py:save_embeddings).
Unpickling runs code, so the library never does
it at train or serve time. Convert once:

    python -m cosmos_jax.data.text import --pickle=aloha_t5_embeddings.pkl --out=aloha_text

which writes `aloha_text/embeddings.safetensors` (one bf16 tensor per task, trimmed to its non-zero prefix) and
`aloha_text/index.json` (task strings, lengths, provenance). `TextStore.load(dir)` reads them back and re-pads to
512 tokens, bit-identical to the pickle. Even the import unpickles through an allow-list (only the torch tensor
rebuild functions and OrderedDict), and loads tensor storages with `torch.load(weights_only=True)`.

New instructions are encoded in JAX with a converted T5 encoder (`python -m cosmos_jax.convert t5`):

    python -m cosmos_jax.data.text encode --t5=out/t5 --prompts=new_tasks.txt --store=aloha_text

as the official `encode_prompts` does: T5 tokens padded and truncated to 512, the last hidden state with every
position past the prompt's length set to zero, stored in bf16. Prompts already in the store are kept as they are.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
from absl import flags
from safetensors.numpy import load_file, save_file

from cosmos_jax import command_line
from cosmos_jax.data import tokenizer as tokenizer_lib
from cosmos_jax.nn import t5 as t5_lib

FORMAT = 'cosmos_jax.text_store/1'
INDEX_FILE = 'index.json'
TENSOR_FILE = 'embeddings.safetensors'
NUM_TOKENS = 512
EMBED_DIM = 1024


@dataclasses.dataclass(frozen=True)
class TextStore:
  """Task string -> (512, 1024) bf16 embedding (numpy, ml_dtypes.bfloat16). The width is T5-11B's 1024 for every
  real store; a store of a small test encoder holds its own width (the same for every task)."""

  embeddings: Mapping[str, np.ndarray]
  kind: str = 'official T5-11B'

  @property
  def tasks(self) -> tuple[str, ...]:
    return tuple(sorted(self.embeddings))

  def lookup(self, task: str) -> np.ndarray:
    """The (512, 1024) bf16 embedding of `task`; an unknown task is an error listing the known ones."""
    if task not in self.embeddings:
      raise KeyError(f'no text embedding for task {task!r}; known tasks: {list(self.tasks)} (embeddings are looked '
                     'up by the exact task string; add new ones with `python -m cosmos_jax.data.text encode '
                     '--t5=T5_DIR --prompts=FILE --store=STORE`)')
    return self.embeddings[task]

  def table(self, tasks: Sequence[str]) -> np.ndarray:
    """(len(tasks), 512, 1024) bf16, row i the embedding of tasks[i] (the `text_index` of a sample)."""
    return np.stack([self.lookup(t) for t in tasks])

  def save(self, directory: str | os.PathLike, *, source: str = '') -> None:
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tensors, entries = {}, []
    dim = np.shape(self.embeddings[self.tasks[0]])[-1] if self.tasks else EMBED_DIM
    for i, task in enumerate(self.tasks):
      value = np.asarray(self.embeddings[task])
      if value.shape != (NUM_TOKENS, dim):
        raise ValueError(f'embedding of {task!r} has shape {value.shape}, expected ({NUM_TOKENS}, {dim})')
      nonzero = np.flatnonzero(np.any(value.astype(np.float32) != 0, axis=-1))
      length = int(nonzero[-1]) + 1 if nonzero.size else 0
      key = f'task_{i}'
      tensors[key] = np.ascontiguousarray(value[:max(length, 1)].astype(ml_dtypes.bfloat16))
      entries.append({'task': task, 'key': key, 'length': length})
    save_file(tensors, os.path.join(directory, TENSOR_FILE))
    index = {'format': FORMAT, 'num_tokens': NUM_TOKENS, 'dim': int(dim), 'dtype': 'bfloat16', 'kind': self.kind,
             'source': source, 'tasks': entries,
             'note': 'rows at and after `length` are zero and not stored; loading re-pads to num_tokens'}
    with open(os.path.join(directory, INDEX_FILE), 'w', encoding='utf-8') as f:
      json.dump(index, f, indent=2)

  @classmethod
  def load(cls, directory: str | os.PathLike) -> 'TextStore':
    directory = os.fspath(directory)
    index_path = os.path.join(directory, INDEX_FILE)
    if not os.path.exists(index_path):
      hint = (' (this looks like an official pickle: convert it once with `python -m cosmos_jax.data.text import '
              '--pickle=FILE --out=DIR`)' if directory.endswith('.pkl') else '')
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
    # torch is optional (the [torch] extra): imported only to read an official pickle.
    import torch  # pylint: disable=g-import-not-at-top

    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return torch._utils._rebuild_tensor_v2  # pylint: disable=protected-access
    if (module, name) == ('torch.storage', '_load_from_bytes'):
      return lambda data: torch.load(io.BytesIO(data), weights_only=True)
    raise pickle.UnpicklingError(f'refusing to unpickle global {module}.{name} (not a plain dict of torch tensors)')


def read_official_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """task -> (512, 1024) bf16 numpy from the official `t5_embeddings.pkl` (needs torch, the `[torch]` extra)."""
  # torch is optional (the [torch] extra): imported only to read an official pickle.
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


def trim_padding(table: np.ndarray, multiple: int = 8) -> np.ndarray:
  """(tasks, 512, D) -> (tasks, N, D): the leading tokens up to the last one any task leaves non-zero, rounded up to
  a multiple of `multiple` (at least one). The tokens left out are all zero, which a DiT with
  `text_context_tokens=512` accounts for exactly without computing them (cosmos_jax.nn.attention)."""
  table = np.asarray(table)
  if table.ndim != 3 or table.shape[1] != NUM_TOKENS:
    raise ValueError(f'expected a (tasks, {NUM_TOKENS}, width) text table, got shape {table.shape}')
  used = np.flatnonzero(np.any(table != 0, axis=(0, 2)))
  length = int(used[-1]) + 1 if used.size else 1
  return table[:, :min(NUM_TOKENS, -(-length // multiple) * multiple)]


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


# ----------------------------------------------------------------------------------------------------------------
# Encoding new instructions with a converted T5 encoder.

T5_MODEL = 't5'
SPIECE_ASSET = 'spiece.model'
TOKENIZER_CONFIG_ASSET = 'tokenizer_config.json'
# The checkpoint layout of cosmos_jax/convert/checkpoint.py (read here directly: `data` sits below `convert`).
_CONFIG_FILE, _PARAMS_DIR, _ASSETS_DIR = 'config.json', 'params', 'assets'


def _read_params(params_dir: str) -> dict:
  """The orbax params tree of a converted checkpoint as numpy. The layout is the one `convert/checkpoint.py` writes;
  read here directly because `data` sits below `convert` in the import layers."""
  with ocp.PyTreeCheckpointer() as checkpointer:
    try:
      metadata = checkpointer.metadata(params_dir).item_metadata.tree
    except (FileNotFoundError, ValueError, OSError) as e:
      raise ValueError(f'{params_dir}: unreadable orbax checkpoint ({type(e).__name__}: {e})') from None
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    return checkpointer.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))


class T5TextEncoder:
  """A converted T5 encoder with its tokenizer: prompts -> official instruction embeddings (512 rows, bf16)."""

  def __init__(self, params, cfg: t5_lib.T5Config, tokenizer: tokenizer_lib.T5Tokenizer, *, name: str = 'T5',
               batch_size: int = 8):
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    self.cfg, self.tokenizer, self.name, self.batch_size = cfg, tokenizer, name, batch_size
    self.params = jax.tree.map(lambda x: jnp.asarray(x).astype(cfg.param_dtype), params)  # cast on the device
    self._embed = jax.jit(lambda p, ids, mask: t5_lib.encode(p, cfg, ids, mask).astype(jnp.float32))

  @property
  def kind(self) -> str:
    return f'T5 encoder {self.name} (cosmos_jax, {self.cfg.dtype})'

  @classmethod
  def load(cls, path: str | os.PathLike, *, dtype: str = 'float32', batch_size: int = 8) -> 'T5TextEncoder':
    """From a `python -m cosmos_jax.convert t5` checkpoint directory. `dtype` is the compute (and parameter) dtype:
    float32 as the official encoder runs, or bfloat16."""
    path = os.fspath(path)
    assets = os.path.join(path, _ASSETS_DIR)
    config_path = os.path.join(assets, _CONFIG_FILE)
    if not os.path.isfile(config_path):
      raise FileNotFoundError(f'{path} is not a converted T5 checkpoint: {_ASSETS_DIR}/{_CONFIG_FILE} is missing '
                              '(convert one with `python -m cosmos_jax.convert t5 --hf_dir=DIR --out=OUT`)')
    with open(config_path, encoding='utf-8') as f:
      config = json.load(f)
    if config.get('model') != T5_MODEL:
      raise ValueError(f'{path}: a converted {config.get("model")!r} checkpoint, not a T5 encoder')
    if dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    cfg = t5_lib.T5Config(**{**config['config'], 'dtype': dtype})
    if dtype == 'bfloat16':
      cfg = dataclasses.replace(cfg, param_dtype='bfloat16')
    extra_ids = tokenizer_lib.DEFAULT_EXTRA_IDS
    tokenizer_config = os.path.join(assets, TOKENIZER_CONFIG_ASSET)
    if os.path.isfile(tokenizer_config):
      with open(tokenizer_config, encoding='utf-8') as f:
        extra_ids = int(json.load(f).get('extra_ids', extra_ids))
    tokenizer = tokenizer_lib.T5Tokenizer.from_file(os.path.join(assets, SPIECE_ASSET), extra_ids=extra_ids)
    params = _read_params(os.path.join(os.path.abspath(path), _PARAMS_DIR))
    name = config.get('source', {}).get('file') or os.path.basename(os.path.normpath(path))
    return cls(params, cfg, tokenizer, name=name, batch_size=batch_size)

  def embeddings(self, prompts: Sequence[str],
                 progress: Callable[[int, int, float], None] | None = None) -> np.ndarray:
    """[len(prompts), 512, d_model] float32: the last hidden state, every padded position zero. In batches of
    `batch_size` (the last one padded with empty prompts, so one compiled program serves every batch);
    `progress(done, total, seconds)` is called after each batch."""
    if not prompts:
      return np.zeros((0, NUM_TOKENS, self.cfg.d_model), np.float32)
    batch = min(self.batch_size, len(prompts))
    out, start_time = [], time.perf_counter()
    for start in range(0, len(prompts), batch):
      chunk = list(prompts[start:start + batch])
      ids, mask = self.tokenizer.batch(chunk + [''] * (batch - len(chunk)), NUM_TOKENS)
      out.append(np.asarray(self._embed(self.params, ids, mask))[:len(chunk)])
      if progress is not None:
        progress(start + len(chunk), len(prompts), time.perf_counter() - start_time)
    return np.concatenate(out)

  def encode(self, prompts: Sequence[str],
             progress: Callable[[int, int, float], None] | None = None) -> dict[str, np.ndarray]:
    """prompt -> (512, d_model) bf16, as the official code stores it (float32 result rounded to bf16)."""
    unique = list(dict.fromkeys(prompts))
    return dict(zip(unique, self.embeddings(unique, progress).astype(ml_dtypes.bfloat16)))


def read_prompts(path: str | os.PathLike) -> list[str]:
  """One prompt per line (UTF-8; the line break is not part of the prompt, blank lines are skipped), or a JSON list
  of strings for a `.json` file. Prompts are the exact task strings the store is looked up by."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'prompts file not found: {path}')
  with open(path, encoding='utf-8') as f:
    text = f.read()
  if path.endswith('.json'):
    prompts = json.loads(text)
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
      raise ValueError(f'{path}: expected a JSON list of strings')
  else:
    prompts = [line for line in text.splitlines() if line.strip()]
  if not prompts:
    raise ValueError(f'{path}: no prompts')
  return prompts


def encode_into_store(encoder: T5TextEncoder, prompts: Sequence[str], store_dir: str | os.PathLike, *,
                      progress: Callable[[int, int, float], None] | None = None) -> tuple[TextStore, list[str]]:
  """Adds the prompts missing from the store at `store_dir` (created if absent); returns (store, encoded prompts)."""
  store_dir = os.fspath(store_dir)
  existing = TextStore.load(store_dir) if os.path.exists(os.path.join(store_dir, INDEX_FILE)) else None
  if existing is not None and 'NOT T5' in existing.kind:
    raise ValueError(f'{store_dir} is a stand-in store ({existing.kind}); real T5 embeddings do not belong in it')
  known = existing.embeddings if existing is not None else {}
  if known and next(iter(known.values())).shape[-1] != encoder.cfg.d_model:
    raise ValueError(f'{store_dir} holds {next(iter(known.values())).shape[-1]}-wide embeddings; this encoder '
                     f'gives {encoder.cfg.d_model}')
  missing = [p for p in dict.fromkeys(prompts) if p not in known]
  new = encoder.encode(missing, progress=progress)
  kind = encoder.kind if existing is None or existing.kind in ('', encoder.kind) else f'{existing.kind}; {encoder.kind}'
  store = TextStore({**known, **new}, kind=kind)
  if new or existing is None:
    store.save(store_dir, source=encoder.name)
  return store, missing


def complete_store(store: TextStore, tasks: Sequence[str], *, t5_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None, store_name: str = 'STORE',
                   write_cache: bool = True) -> TextStore:
  """`store` plus an embedding for every task in `tasks` that it lacks (a training run's start-up).

  Missing tasks come from `cache_dir` (a store written by an earlier start of the same run) when it holds them all,
  else they are encoded with the converted T5 encoder at `t5_dir` and the completed store is written to
  `cache_dir` (when `write_cache`). Without `t5_dir` a missing task is an error naming the tasks and the command
  that adds them.
  """
  missing = sorted(set(tasks) - set(store.embeddings))
  if not missing:
    return store
  if cache_dir is not None and os.path.exists(os.path.join(cache_dir, INDEX_FILE)):
    cached = TextStore.load(cache_dir)
    if all(t in cached.embeddings for t in missing):
      return TextStore({**store.embeddings, **{t: cached.embeddings[t] for t in missing}}, kind=cached.kind)
  if not t5_dir:
    raise ValueError(f'the text store {store_name} has no embedding for the task(s) {missing}; add them with '
                     f'`python -m cosmos_jax.data.text encode --t5=T5_DIR --prompts=FILE --store={store_name}` (FILE: '
                     'one instruction per line; T5_DIR from `python -m cosmos_jax.convert t5`), or name T5_DIR in the '
                     'config (data.t5) to encode them at start-up')
  if 'NOT T5' in store.kind:
    raise ValueError(f'the text store {store_name} is a stand-in ({store.kind}); real T5 embeddings of {missing} do '
                     'not belong next to it')
  encoder = T5TextEncoder.load(t5_dir)
  if store.embeddings and next(iter(store.embeddings.values())).shape[-1] != encoder.cfg.d_model:
    raise ValueError(f'the text store {store_name} holds {next(iter(store.embeddings.values())).shape[-1]}-wide '
                     f'embeddings; the T5 encoder at {t5_dir} gives {encoder.cfg.d_model}')
  kind = encoder.kind if store.kind in ('', encoder.kind) or not store.embeddings else f'{store.kind}; {encoder.kind}'
  completed = TextStore({**store.embeddings, **encoder.encode(missing)}, kind=kind)
  if cache_dir is not None and write_cache:
    completed.save(cache_dir, source=encoder.name)
  return completed


def _define_flags(flag_values) -> None:
  fv = {'flag_values': flag_values}
  flags.DEFINE_string('pickle', None, 'import: the official <bench>_t5_embeddings.pkl.', **fv)
  flags.DEFINE_string('out', None, 'import: output directory (index.json + embeddings.safetensors).', **fv)
  flags.DEFINE_string('t5', None, 'encode: a `python -m cosmos_jax.convert t5` output directory.', **fv)
  flags.DEFINE_string('prompts', None, 'encode: one prompt per line (or a .json list of strings).', **fv)
  flags.DEFINE_string('store', None, 'encode: text store directory to add to (created if absent).', **fv)
  flags.DEFINE_integer('batch_size', 8, 'encode: prompts per encoder call.', **fv)
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'encode: compute dtype (float32: as the official '
                    'encoder; the store is bf16 either way).', **fv)


_PROG = 'python -m cosmos_jax.data.text'
CLI = command_line.CommandLine(
    _PROG, _define_flags,
    {'import': command_line.Command((), ('pickle', 'out'), required=('pickle', 'out')),
     'show': command_line.Command(('STORE',), ()),
     'encode': command_line.Command((), ('t5', 'prompts', 'store', 'batch_size', 'dtype'),
                                    required=('t5', 'prompts', 'store'))},
    f"""usage: {_PROG} import --pickle=FILE --out=DIR   (an official pickle, once, into a safe store)
       {_PROG} show STORE                       (the tasks of a store)
       {_PROG} encode --t5=DIR --prompts=FILE --store=DIR [--batch_size=8] [--dtype=float32]""",
    description=__doc__.split('\n')[0])


def main(argv=None) -> int:
  parsed = CLI.parse_or_exit(argv)
  f = parsed.flags
  if parsed.command == 'import':
    store = import_pickle(f.pickle, f.out)
    print(f'wrote {len(store.tasks)} task embeddings to {f.out}: {list(store.tasks)}')
  elif parsed.command == 'encode':
    try:
      prompts = read_prompts(f.prompts)
      encoder = T5TextEncoder.load(f.t5, dtype=f.dtype, batch_size=f.batch_size)
      report = lambda done, total, seconds: print(f'encoded {done}/{total} prompts ({done / seconds:.2f} prompts/s)',
                                                  file=sys.stderr, flush=True)
      store, encoded = encode_into_store(encoder, prompts, f.store, progress=report)
    except (ValueError, FileNotFoundError, ImportError) as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    print(f'{f.store}: encoded {len(encoded)} new prompts, {len(store.tasks) - len(encoded)} already present '
          f'({len(store.tasks)} in the store)')
  else:
    store = TextStore.load(parsed.positional[0])
    print(f'{parsed.positional[0]} ({store.kind}): {list(store.tasks)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
