"""A self-contained parameters checkpoint: an orbax PyTree of the params plus a config.json and asset files.

Layout of `<path>/`:
  params/        orbax PyTree checkpoint (OCDBT, uncompressed) of the nested params dict
  config.json    the caller's JSON config (the converter writes the model kind, its config and provenance)
  <assets>       copied files or directories (e.g. dataset_statistics.json, text_store/)

`save_params` writes everything into a temporary sibling directory and renames it into place only when complete,
so an interrupted or failed save never leaves a half-written checkpoint at `path`.

Memory: orbax's numpy handler deep-copies every host array before writing, and tensorstore's compression buffers
add another copy's worth; both are turned off here, so saving a params tree costs little beyond the tree itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PathLike = str | os.PathLike

CONFIG_FILE = 'config.json'
PARAMS_DIR = 'params'
_RESERVED = (CONFIG_FILE, PARAMS_DIR)


def _handler() -> ocp.PyTreeCheckpointHandler:
  registry = ocp.type_handlers.create_type_handler_registry(
      (int, ocp.type_handlers.ScalarHandler()),
      (float, ocp.type_handlers.ScalarHandler()),
      (np.number, ocp.type_handlers.ScalarHandler()),
      (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
      (jax.Array, ocp.type_handlers.ArrayHandler()),
  )
  return ocp.PyTreeCheckpointHandler(use_compression=False, type_handler_registry=registry)


def _check_asset_name(name: str) -> None:
  if not name or name in _RESERVED or os.sep in name or name.startswith('.') or (os.altsep and os.altsep in name):
    raise ValueError(f'asset name {name!r} must be a plain file name other than {_RESERVED}')


def save_params(path: PathLike, params, config: Mapping[str, Any], extra_files: Mapping[str, PathLike] | None = None,
                *, overwrite: bool = False) -> pathlib.Path:
  """Writes `params` (nested dict of numpy or jax arrays), `config` (JSON-serialisable) and `extra_files`
  (asset name in the checkpoint -> source file or directory, copied) to the directory `path`, atomically.

  Raises FileExistsError if `path` exists and not `overwrite`; FileNotFoundError for a missing asset source.
  """
  dest = pathlib.Path(path).absolute()
  extra_files = dict(extra_files or {})
  for name, source in extra_files.items():
    _check_asset_name(name)
    if not os.path.exists(source):
      raise FileNotFoundError(f'asset {name!r}: source {source} does not exist')
  if dest.exists() and not overwrite:
    raise FileExistsError(f'{dest} already exists (pass overwrite=True / --overwrite to replace it)')
  if not dest.parent.is_dir():
    raise FileNotFoundError(f'parent directory of {dest} does not exist')
  config_text = json.dumps(config, indent=2) + '\n'  # fails on a non-JSON config before anything is written

  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', suffix='.tmp', dir=dest.parent))
  try:
    with ocp.Checkpointer(_handler()) as checkpointer:
      checkpointer.save(tmp / PARAMS_DIR, args=ocp.args.PyTreeSave(params))
    (tmp / CONFIG_FILE).write_text(config_text, encoding='utf-8')
    for name, source in extra_files.items():
      if os.path.isdir(source):
        shutil.copytree(source, tmp / name)
      else:
        shutil.copyfile(source, tmp / name)
    if dest.exists():
      old = pathlib.Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', suffix='.old', dir=dest.parent))
      os.rename(dest, old / 'previous')
      os.rename(tmp, dest)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, dest)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dest


def load_config(path: PathLike) -> dict:
  config_path = pathlib.Path(path) / CONFIG_FILE
  if not config_path.is_file():
    raise FileNotFoundError(f'{path} is not a params checkpoint: {CONFIG_FILE} is missing')
  try:
    return json.loads(config_path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise ValueError(f'{config_path}: not valid JSON ({e})') from None


def load_params(path: PathLike) -> tuple[dict, dict]:
  """(params as a nested dict of numpy arrays in their stored dtypes, config dict) of a `save_params` directory.

  Callers place the arrays on devices themselves (e.g. `jax.device_put` with their sharding).
  """
  path = pathlib.Path(path).absolute()
  config = load_config(path)
  params_dir = path / PARAMS_DIR
  if not params_dir.is_dir():
    raise FileNotFoundError(f'{path} is not a params checkpoint: {PARAMS_DIR}/ is missing')
  with ocp.Checkpointer(_handler()) as checkpointer:
    try:
      metadata = checkpointer.metadata(params_dir).item_metadata.tree
    except (FileNotFoundError, ValueError, OSError) as e:
      raise ValueError(f'{params_dir}: unreadable orbax checkpoint ({type(e).__name__}: {e})') from None
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    params = checkpointer.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return params, config

