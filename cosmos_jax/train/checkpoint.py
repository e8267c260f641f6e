"""The one checkpoint-manager wrapper: orbax `CheckpointManager` with the items of a training run.

Items per step: `state` (params, optimizer state, step, RNG key data, optional EMA — one pytree), `data_iter` (the
grain iterator state, when the loader has one) and `meta` (JSON: config, dataset statistics, anything needed to
use the checkpoint on its own). Saves are asynchronous; the manager keeps the last N plus every `keep_period`-th.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

try:  # grain's iterator state is saved through its own orbax handler.
  import grain.python as grain_python
except ImportError:  # pragma: no cover - grain is a hard dependency; keep the module importable regardless
  grain_python = None


class CheckpointManager:
  """Thin wrapper: `save(step, state, data_iter, meta)`, `restore(step, abstract_state, data_iter)`, `latest_step()`."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, keep_period: int | None = None,
               save_interval_steps: int = 1, async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, keep_period=keep_period,
                                           save_interval_steps=save_interval_steps,
                                           enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    return self._manager.should_save(step)

  def save(self, step: int, state: Any, *, data_iter=None, meta: dict | None = None, force: bool = False) -> bool:
    items = {'state': ocp.args.StandardSave(state)}
    if data_iter is not None:
      items['data_iter'] = grain_python.PyGrainCheckpointSave(data_iter)
    if meta is not None:
      items['meta'] = ocp.args.JsonSave(meta)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int | None, abstract_state: Any, *, data_iter=None) -> tuple[Any, dict | None]:
    """Restores `state` into the shardings/dtypes of `abstract_state` (a tree of `jax.ShapeDtypeStruct` with
    shardings) and, when given, the grain iterator in place. Returns (state, meta)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint to restore in {self.directory}')
    available = set(self._manager.item_metadata(step).keys()) if hasattr(self._manager, 'item_metadata') else set()
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items['data_iter'] = grain_python.PyGrainCheckpointRestore(data_iter)
    if not available or 'meta' in available:
      items['meta'] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], restored.get('meta') if 'meta' in items else None

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of `tree` carrying `shardings`, the target of a sharded restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
