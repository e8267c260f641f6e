"""One checkpoint layout for trained and converted models, and the one reader that serve, eval, export and the
trainer use.

A checkpoint directory, one step of a training run or a converted released model (openpi's split of items):

  params/        orbax PyTree of the model parameters; restores alone, without the optimiser state
  ema_params/    the EMA of the parameters (training runs that keep one)
  train_state/   step, optimiser state, RNG key data (training runs only)
  data_iter/     the grain iterator state of each process (training runs only)
  assets/
    config.json              what this is (`FORMAT`): the model kind ('dit', 'vae' or 't5') and its config, the layout
                             name, the VAE a policy runs with, the step, whether an EMA is kept, and the resolved
                             training config (trained) or the conversion provenance (converted). Written last: a
                             directory without it is not a (complete) checkpoint.
    dataset_statistics.json  min-max statistics of the training data (policies)
    text_store/              T5 embeddings of the tasks (policies; cosmos_jax.data.text)

A training workdir holds `checkpoints/<step>/` directories of this layout (orbax `CheckpointManager`, see
cosmos_jax/train/checkpoint.py); a converted model is one such directory without training state.
`open_checkpoint(path, step=None)` takes either (or the `checkpoints/` directory) and resolves the step.

LoRA fine-tuning runs write the same layout with `params/` (and `ema_params/`) holding the adapters only, and
config.json's `lora` naming the adapter config and the base they belong to: {'config': {targets, rank, alpha,
dropout}, 'base': {'path', 'step', 'use_ema', 'sha256'}}, the hash over the base's parameters as loaded. Reading the
params of such a checkpoint loads the base, checks the hash, and merges the adapters in (or, asked to, returns the
base with the adapters beside its kernels: cosmos_jax/nn/lora.py).

Paths go through `etils.epath`, so any of them may be a `gs://` URL.

Memory: orbax's numpy handler deep-copies every host array before writing, and tensorstore's compression buffers
add another copy's worth; both are turned off for converted parameters, so saving costs little beyond the tree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cosmos_jax.convert import dit_rules
from cosmos_jax.convert import torch_io
from cosmos_jax.convert import vae_rules
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.nn import dit
from cosmos_jax.nn import lora as lora_lib
from cosmos_jax.nn import t5
from cosmos_jax.nn import vae

PathLike = str | os.PathLike

FORMAT = 'cosmos_jax.checkpoint/1'
# Items of a checkpoint directory.
PARAMS = 'params'
EMA_PARAMS = 'ema_params'
TRAIN_STATE = 'train_state'
DATA_ITER = 'data_iter'
ASSETS = 'assets'
# Files of the assets item.
CONFIG_FILE = 'config.json'
STATISTICS_ASSET = stats_lib.STATISTICS_FILENAME
TEXT_STORE_ASSET = 'text_store'
# Where a training workdir keeps its steps.
WORKDIR_CHECKPOINTS = 'checkpoints'

MODELS = ('dit', 'vae', 't5')
_COMMIT_MARKER = 'commit_success.txt'
# Official state_dict files, read directly where a converted checkpoint is also accepted.
OFFICIAL_SUFFIXES = ('.safetensors', '.pth', '.pt')
_RESERVED_ASSETS = (CONFIG_FILE,)


class CheckpointError(ValueError):
  """A path that is not the checkpoint a command needs (wrong layout, wrong model kind, no policy assets)."""


# --------------------------------------------------------------------------------------------------------------
# Model configs as JSON.


def model_config_to_dict(model: str, cfg) -> dict:
  out = dataclasses.asdict(cfg)
  if model == 'vae':
    out['dtype'] = np.dtype(cfg.dtype).name
  return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def model_config_from_dict(model: str, d: Mapping[str, Any]):
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
  if model == 'dit':
    return dit.DiTConfig(**fields)
  if model == 'vae':
    fields['dtype'] = getattr(jnp, fields.get('dtype', 'float32'))
    return vae.VAEConfig(**fields)
  if model == 't5':
    return t5.T5Config(**fields)
  raise ValueError(f'unknown model kind {model!r} (known: {MODELS})')


def describe(model: str, model_config, *, layout: str | None = None, vae_checkpoint: str | None = None,
             vae_config=None, step: int | None = None, ema: bool = False, train_config: Mapping[str, Any] | None = None,
             source: Mapping[str, Any] | None = None, assets: Mapping[str, str] | None = None,
             lora: Mapping[str, Any] | None = None) -> dict:
  """The assets/config.json of a checkpoint (see the module docstring); `lora` = {'config', 'base'} for adapters."""
  if model not in MODELS:
    raise ValueError(f'unknown model kind {model!r} (known: {MODELS})')
  if lora is not None and (set(lora) != {'config', 'base'} or not lora['base'].get('sha256')):
    raise ValueError(f"lora must be {{'config': ..., 'base': {{'path', 'step', 'use_ema', 'sha256'}}}}, got {lora}")
  return {
      'format': FORMAT,
      'model': model,
      'config': model_config if isinstance(model_config, dict) else model_config_to_dict(model, model_config),
      'layout': layout,
      'vae_checkpoint': vae_checkpoint,
      'vae_config': model_config_to_dict('vae', vae_config) if vae_config is not None else None,
      'step': step,
      'ema': bool(ema),
      'train_config': dict(train_config) if train_config is not None else None,
      'source': dict(source) if source is not None else None,
      'assets': dict(assets or {}),
      'lora': dict(lora) if lora is not None else None,
  }


# --------------------------------------------------------------------------------------------------------------
# Writing.


def _is_local(path: epath.Path) -> bool:
  return '://' not in os.fspath(path)


def _copy_tree(source: epath.Path, dest: epath.Path) -> None:
  if source.is_dir():
    dest.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
      _copy_tree(child, dest / child.name)
  else:
    dest.write_bytes(source.read_bytes())


def local_copy(path: PathLike) -> epath.Path:
  """`path` itself when it is local; for a URL (gs://...), a copy in a temporary cache directory (for readers that
  need local files: safetensors, torch, HDF5)."""
  path = epath.Path(path)
  if _is_local(path):
    return path
  cached = epath.Path(tempfile.mkdtemp(prefix='cosmos_jax_cache_')) / path.name
  _copy_tree(path, cached)
  return cached


def _check_asset_name(name: str) -> None:
  if not name or name in _RESERVED_ASSETS or '/' in name or name.startswith('.') or (os.sep in name):
    raise ValueError(f'asset name {name!r} must be a plain file name other than {_RESERVED_ASSETS}')


def write_assets(assets_dir: PathLike, config: Mapping[str, Any], *, files: Mapping[str, Any] | None = None,
                 statistics: Mapping[str, Any] | None = None, text_store: text_lib.TextStore | None = None) -> None:
  """Writes the assets item: `files` (asset name -> source file or directory, copied; any epath), `statistics`
  (a dict, written as dataset_statistics.json), `text_store` and, last, config.json. Callers on many processes
  call this on process 0 only."""
  assets_dir = epath.Path(assets_dir)
  config_text = json.dumps(config, indent=2) + '\n'  # fails on a non-JSON config before anything is written
  assets_dir.mkdir(parents=True, exist_ok=True)
  for name, source in (files or {}).items():
    _copy_tree(epath.Path(source), assets_dir / name)
  if statistics is not None:
    (assets_dir / STATISTICS_ASSET).write_text(
        json.dumps({k: np.asarray(v).tolist() for k, v in statistics.items()}, indent=4), encoding='utf-8')
  if text_store is not None:
    if _is_local(assets_dir):
      text_store.save(assets_dir / TEXT_STORE_ASSET)
    else:  # the store writes local files: assemble it in a temporary directory, then copy it up
      with tempfile.TemporaryDirectory(prefix='cosmos_jax_text_store_') as scratch:
        text_store.save(scratch)
        _copy_tree(epath.Path(scratch), assets_dir / TEXT_STORE_ASSET)
  (assets_dir / CONFIG_FILE).write_text(config_text, encoding='utf-8')


def _params_handler() -> ocp.PyTreeCheckpointHandler:
  registry = ocp.type_handlers.create_type_handler_registry(
      (int, ocp.type_handlers.ScalarHandler()),
      (float, ocp.type_handlers.ScalarHandler()),
      (np.number, ocp.type_handlers.ScalarHandler()),
      (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
      (jax.Array, ocp.type_handlers.ArrayHandler()),
  )
  return ocp.PyTreeCheckpointHandler(use_compression=False, type_handler_registry=registry)


def save_params(path: PathLike, params, config: Mapping[str, Any], extra_files: Mapping[str, PathLike] | None = None,
                *, overwrite: bool = False) -> epath.Path:
  """Writes a checkpoint without training state (the converter's output): `params` (nested dict of numpy or jax
  arrays), `config` (assets/config.json, JSON-serialisable) and `extra_files` (asset name -> source file or
  directory, copied into assets/).

  On a local disk the directory is assembled beside `path` and renamed into place when complete, so a failed save
  never leaves a half-written checkpoint; on a bucket, orbax's commit_success.txt is written last and marks
  completion.
  Raises FileExistsError if `path` exists and not `overwrite`; FileNotFoundError for a missing asset source.
  """
  dest = epath.Path(path)
  if _is_local(dest):
    dest = epath.Path(os.path.abspath(os.fspath(dest)))
  extra_files = dict(extra_files or {})
  for name, source in extra_files.items():
    _check_asset_name(name)
    if not epath.Path(source).exists():
      raise FileNotFoundError(f'asset {name!r}: source {source} does not exist')
  if dest.exists() and not overwrite:
    raise FileExistsError(f'{dest} already exists (pass overwrite=True / --overwrite to replace it)')
  json.dumps(config)  # fails on a non-JSON config before anything is written

  def write(directory: epath.Path) -> None:
    with ocp.Checkpointer(_params_handler()) as checkpointer:
      checkpointer.save(directory / PARAMS, args=ocp.args.PyTreeSave(params))
    write_assets(directory / ASSETS, config, files=extra_files)

  if not _is_local(dest):
    if dest.exists():
      dest.rmtree()
    write(dest)
    # Orbax's completion marker for buckets (no atomic rename there): a finished step of a workdir carries it.
    (dest / _COMMIT_MARKER).write_text('', encoding='utf-8')
    return dest
  if not dest.parent.is_dir():
    raise FileNotFoundError(f'parent directory of {dest} does not exist')
  tmp = epath.Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', suffix='.tmp', dir=dest.parent))
  try:
    write(tmp)
    if dest.exists():
      old = epath.Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', suffix='.old', dir=dest.parent))
      os.rename(dest, old / 'previous')
      os.rename(tmp, dest)
      old.rmtree(missing_ok=True)
    else:
      os.rename(tmp, dest)
  except BaseException:
    tmp.rmtree(missing_ok=True)
    raise
  return dest


# --------------------------------------------------------------------------------------------------------------
# Reading.


def _read_config(directory: epath.Path) -> dict:
  config_path = directory / ASSETS / CONFIG_FILE
  try:
    text = config_path.read_text(encoding='utf-8')
  except FileNotFoundError:
    raise FileNotFoundError(f'{directory} is not a checkpoint: {ASSETS}/{CONFIG_FILE} is missing') from None
  try:
    config = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{config_path}: not valid JSON ({e})') from None
  if not isinstance(config, dict):
    raise ValueError(f'{config_path}: expected a JSON object, got {type(config).__name__}')
  return config


def _tree_metadata(item_dir: epath.Path, handler: ocp.PyTreeCheckpointHandler):
  if not item_dir.is_dir():
    raise FileNotFoundError(f'{item_dir} does not exist')
  try:
    return handler.metadata(item_dir).tree
  except (FileNotFoundError, ValueError, OSError) as e:
    raise ValueError(f'{item_dir}: unreadable orbax checkpoint ({type(e).__name__}: {e})') from None


def restore_tree(item_dir: PathLike, target=None):
  """An orbax PyTree item: as numpy arrays in their stored dtypes, or (given `target`, a tree of
  `jax.ShapeDtypeStruct`s with shardings) as arrays placed and cast like the target."""
  item_dir = epath.Path(item_dir)
  handler = _params_handler()
  try:
    metadata = _tree_metadata(item_dir, handler)
    if target is None:
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    else:
      restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    return handler.restore(item_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args))
  finally:
    handler.close()


def item_shapes(item_dir: PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
  """'a/b/c' -> (shape, dtype name) of every array stored in an orbax PyTree item, from its metadata only."""
  handler = _params_handler()
  try:
    metadata = _tree_metadata(epath.Path(item_dir), handler)
  finally:
    handler.close()
  return {tree_path_name(path): (tuple(m.shape), np.dtype(m.dtype).name)
          for path, m in jax.tree_util.tree_leaves_with_path(metadata)}


def tree_path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """One resolved checkpoint directory and its assets/config.json."""

  directory: epath.Path
  config: dict

  @property
  def model(self) -> str:
    return self.config['model']

  @property
  def step(self) -> int | None:
    return self.config.get('step')

  @property
  def layout(self) -> str | None:
    return self.config.get('layout')

  @property
  def has_ema(self) -> bool:
    return bool(self.config.get('ema')) and (self.directory / EMA_PARAMS).exists()

  @property
  def has_train_state(self) -> bool:
    return (self.directory / TRAIN_STATE).exists()

  @property
  def vae_checkpoint(self) -> str | None:
    return self.config.get('vae_checkpoint')

  @property
  def train_config(self) -> dict | None:
    return self.config.get('train_config')

  def model_config(self):
    return model_config_from_dict(self.model, self.config['config'])

  @property
  def is_lora(self) -> bool:
    """Whether the params items hold LoRA adapters of a base checkpoint (see the module docstring)."""
    return bool(self.config.get('lora'))

  def lora_config(self) -> lora_lib.LoRAConfig:
    if not self.is_lora:
      raise CheckpointError(f'{self.directory} is not a LoRA checkpoint')
    return lora_lib.LoRAConfig.from_dict(self.config['lora']['config'])

  def load_lora_base(self, override: PathLike | None = None):
    """The base parameters the adapters belong to (numpy), content hash checked. `override` is the base at another
    path (moved or copied: a workdir, of which the recorded step is read, or that step's directory; the same EMA
    choice; the hash must still match)."""
    self.lora_config()  # refuses a checkpoint without adapters
    reference = dict(self.config['lora']['base'])
    if override:
      reference['path'] = os.fspath(override)
      if (epath.Path(override) / ASSETS / CONFIG_FILE).exists():
        reference['step'] = None  # the step's own directory, not a workdir
    return load_dit(reference, self.model_config(), expect_sha256=reference['sha256'],
                    what=f'the LoRA base of {self.directory}')

  def load_vae(self, override: PathLike | None = None):
    """(params, VAEConfig) of the VAE this policy runs with: `override` (a converted VAE or an official file), else
    the one the run trained with (recorded in assets/config.json)."""
    source = override or self.vae_checkpoint
    if not source:
      raise CheckpointError(f'{self.directory} records no VAE (a converted policy): give the converted VAE '
                            '(python -m cosmos_jax.convert vae ...)')
    if not override and not epath.Path(source).exists():
      raise FileNotFoundError(f'the VAE {self.directory} was trained with, {source}, does not exist here: give the '
                              'VAE explicitly (a converted VAE or the official file)')
    vae_config = self.config.get('vae_config')
    return load_vae(source, model_config_from_dict('vae', vae_config) if vae_config else None)

  def params_item(self, use_ema: bool | None = None) -> str:
    """`ema_params` when the run kept an EMA (or `use_ema=True`, which requires one), else `params`."""
    if use_ema and not self.has_ema:
      raise CheckpointError(f'{self.directory} has no EMA parameters (the run did not keep an EMA: '
                            'optim.ema_decay = 0); drop --use_ema')
    return EMA_PARAMS if (self.has_ema if use_ema is None else use_ema) else PARAMS

  def load_params(self, *, use_ema: bool | None = None, target=None, merge_lora: bool = True,
                  lora_base: PathLike | None = None):
    """The model parameters (EMA ones by default when kept): numpy in their stored dtypes, or placed like
    `target`. No optimiser state is read. For a LoRA checkpoint: the base (`load_lora_base`) with the adapters
    merged in (`merge_lora`), or with them beside its kernels (the unmerged tree the DiT forward also takes)."""
    item = self.params_item(use_ema)
    if not (self.directory / item).exists():
      raise FileNotFoundError(f'{self.directory} has no {item}/ item')
    if not self.is_lora:
      return restore_tree(self.directory / item, target)
    if target is not None:
      raise ValueError(f'{self.directory} is a LoRA checkpoint: its params are read whole (no target placement)')
    lora_cfg = self.lora_config()
    adapters = restore_tree(self.directory / item)
    base = self.load_lora_base(lora_base)
    combine = lora_lib.merge if merge_lora else lora_lib.unmerged
    return jax.tree.map(np.asarray, combine(base, adapters, lora_cfg))

  def asset(self, name: str) -> epath.Path:
    path = self.directory / ASSETS / name
    if not path.exists():
      raise FileNotFoundError(f'{self.directory} lacks the asset {name!r} ({path} does not exist)')
    return path

  def statistics(self) -> dict[str, np.ndarray]:
    return stats_lib.load_statistics(self.asset(STATISTICS_ASSET))

  def text_store(self) -> text_lib.TextStore:
    return text_lib.TextStore.load(local_copy(self.asset(TEXT_STORE_ASSET)))

  def require(self, model: str, *, what: str, policy: bool = False) -> 'Checkpoint':
    """Raises CheckpointError unless this checkpoint holds a `model` (and, with `policy`, a layout plus the
    statistics and text store a policy needs); `what` names the command's argument in the message."""
    if self.model != model:
      raise CheckpointError(f'{what}: {self.directory} holds a {self.model!r} model, expected a {model!r} model')
    if policy:
      if not self.layout:
        raise CheckpointError(f'{what}: {self.directory} is a base model, not a policy: it names no layout (convert '
                              'a policy with --layout, --statistics and --text_store, or fine-tune one)')
      for name in (STATISTICS_ASSET, TEXT_STORE_ASSET):
        self.asset(name)
    return self


def _steps_in(directory: epath.Path) -> list[int]:
  """Finished steps of an orbax CheckpointManager directory (numeric subdirectories with a complete assets item)."""
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir()
                if re.fullmatch(r'\d+', p.name) and (p / ASSETS / CONFIG_FILE).exists()
                and ocp.path.step.is_path_finalized(p))


def checkpoint_steps(path: PathLike) -> list[int]:
  """The saved steps of a training workdir (or of its checkpoints/ directory)."""
  path = epath.Path(path)
  return _steps_in(path / WORKDIR_CHECKPOINTS) or _steps_in(path)


def open_checkpoint(path: PathLike, step: int | None = None) -> Checkpoint:
  """Resolves a checkpoint directory, a training workdir or its checkpoints/ directory to one checkpoint: the
  given `step`, else the latest one. Raises FileNotFoundError for a missing path or step, CheckpointError for a
  path of another layout."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'checkpoint path {path} does not exist')
  if (path / ASSETS / CONFIG_FILE).exists():
    if step is not None and _read_config(path).get('step') != step:
      raise FileNotFoundError(f'{path} is the single checkpoint of step {_read_config(path).get("step")}; '
                              f'--step {step} applies to a training workdir')
    directory = path
  elif (path / CONFIG_FILE).exists() and (path / PARAMS).exists():
    raise CheckpointError(f'{path} has the old converted layout (config.json beside params/); convert the released '
                          'checkpoint again with python -m cosmos_jax.convert')
  else:
    steps = checkpoint_steps(path)
    if not steps:
      raise CheckpointError(f'{path} is neither a checkpoint (no {ASSETS}/{CONFIG_FILE}) nor a training workdir '
                            f'(no finished step under {WORKDIR_CHECKPOINTS}/)')
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(f'{path} has no checkpoint of step {step}; saved steps: {steps}')
    root = path / WORKDIR_CHECKPOINTS if _steps_in(path / WORKDIR_CHECKPOINTS) else path
    directory = root / str(step)
  config = _read_config(directory)
  if config.get('format') != FORMAT or config.get('model') not in MODELS:
    raise CheckpointError(f'{directory}: {ASSETS}/{CONFIG_FILE} has format {config.get("format")!r} and model '
                          f'{config.get("model")!r}; expected {FORMAT!r} and one of {MODELS}')
  return Checkpoint(directory=directory, config=config)


def params_sha256(params) -> str:
  """SHA-256 over every array of a params tree (path, dtype, shape and bytes, in path order): what a LoRA
  checkpoint records of its base."""
  digest = hashlib.sha256()
  leaves = sorted((tree_path_name(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params))
  for name, leaf in leaves:
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f'{name}|{array.dtype.name}|{array.shape}\n'.encode())
    digest.update(memoryview(array).cast('B'))
  return digest.hexdigest()


def dit_reference(path: PathLike, *, ema_weights: bool = True) -> dict:
  """{'path', 'step', 'use_ema'} of a DiT to start from, resolved so that it names the same weights later: an
  official state_dict file (its EMA copy when it has one and `ema_weights`), or a checkpoint / training workdir (its
  latest step now; EMA parameters when the run kept them)."""
  text = os.fspath(path)
  if not epath.Path(text).exists():
    raise FileNotFoundError(f'DiT checkpoint {text} does not exist')
  if '://' not in text:
    text = os.path.abspath(text)
  if text.endswith(OFFICIAL_SUFFIXES):
    with torch_io.open_state_dict(local_copy(text)) as state_dict:
      has_ema = any(k.startswith('net_ema.') for k in state_dict.keys())
    return {'path': text, 'step': None, 'use_ema': bool(ema_weights and has_ema)}
  checkpoint = open_checkpoint(text).require('dit', what=f'DiT {text}')
  step = checkpoint.step if checkpoint.directory != epath.Path(text) else None
  return {'path': text, 'step': step, 'use_ema': checkpoint.params_item() == EMA_PARAMS}


def load_dit(reference: Mapping[str, Any], dit_cfg: dit.DiTConfig, *, expect_sha256: str | None = None,
             what: str = 'DiT'):
  """The DiT parameters (numpy) a `dit_reference` names, read with `dit_cfg` (official files) or as stored
  (checkpoints). With `expect_sha256`, raises CheckpointError naming both hashes when the content differs."""
  path = reference['path']
  if not epath.Path(path).exists():
    raise FileNotFoundError(f'{what}: {path} does not exist (give the base at its new place, e.g. --lora_base)')
  if path.endswith(OFFICIAL_SUFFIXES):
    with torch_io.open_state_dict(local_copy(path)) as state_dict:
      params = dit_rules.load_official(dit_cfg, state_dict, use_ema=bool(reference['use_ema']), where=path)
  else:
    checkpoint = open_checkpoint(path, reference.get('step')).require('dit', what=what)
    params = checkpoint.load_params(use_ema=bool(reference['use_ema']))
  if expect_sha256 is not None:
    found = params_sha256(params)
    if found != expect_sha256:
      step = f' step {reference.get("step")}' if reference.get('step') is not None else ''
      raise CheckpointError(f'{what}: {path}{step} ({"EMA" if reference["use_ema"] else "regular"} weights) has '
                            f'content sha256 {found}, but the adapters were trained on a base with sha256 '
                            f'{expect_sha256}: it is not the same base (retrained, reconverted or overwritten)')
  return params


def load_vae(source: PathLike, vae_config=None):
  """(params, VAEConfig) of a VAE: a converted VAE checkpoint, or an official state_dict file (.safetensors / .pth
  / .pt) read directly with `vae_config` (default: the released Wan2.1 VAE)."""
  text = os.fspath(source)
  if text.endswith(OFFICIAL_SUFFIXES):
    cfg = vae_config or vae.VAEConfig.wan21()
    if not epath.Path(text).exists():
      raise FileNotFoundError(f'VAE file {text} does not exist')
    with torch_io.open_state_dict(local_copy(text)) as state_dict:
      params = vae_rules.load_official(dataclasses.replace(cfg, dtype=jnp.float32), state_dict, where=text)
    return jax.tree.map(lambda p: np.asarray(p, cfg.dtype), params), cfg
  checkpoint = open_checkpoint(source).require('vae', what=f'VAE {text}')
  return checkpoint.load_params(), checkpoint.model_config()


def load_params(path: PathLike, *, step: int | None = None, use_ema: bool | None = None, merge_lora: bool = True,
                lora_base: PathLike | None = None) -> tuple[dict, dict]:
  """(params as numpy, assets/config.json) of the checkpoint at `path` (see `open_checkpoint`; a LoRA checkpoint's
  adapters merged into their base, or beside its kernels: `Checkpoint.load_params`). Callers place the arrays on
  devices themselves (e.g. `jax.device_put` with their sharding)."""
  path = epath.Path(path)
  if (path / ASSETS / CONFIG_FILE).exists() and not (path / PARAMS).exists():
    raise FileNotFoundError(f'{path} has no {PARAMS}/ item')
  direct = (path / ASSETS / CONFIG_FILE).exists() and step is None
  directory = path if direct else open_checkpoint(path, step).directory
  config = _read_config(directory)
  checkpoint = Checkpoint(directory=directory, config=config)
  return checkpoint.load_params(use_ema=use_ema, merge_lora=merge_lora, lora_base=lora_base), config
