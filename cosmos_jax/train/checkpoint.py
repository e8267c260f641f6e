"""The one checkpoint-manager wrapper: orbax `CheckpointManager` writing the checkpoint layout of
cosmos_jax/convert/checkpoint.py, one directory per saved step.

Items per step: `params` (of a LoRA run: the adapters; the base is referenced in assets), `ema_params` (when an EMA is kept), `train_state` (step, optimiser state, RNG key data),
`data_iter` (the grain iterator state of each process) and `assets` (config.json with the resolved training config,
dataset statistics, text store; written by process 0). Saves are asynchronous; the manager keeps the last N plus
every `keep_period`-th. Paths go through `etils.epath` (a `gs://` workdir works; orbax writes from every host).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import grain.python as grain_python
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import future as ocp_future

from cosmos_jax.convert import checkpoint as layout
from cosmos_jax.train import state as state_lib

AssetsWriter = Callable[[epath.Path], None]


class _AssetsHandler(ocp.AsyncCheckpointHandler):
  """Saves the assets item by calling a writer on process 0 (asynchronously, with the other items). The assets
  are read back by `layout.open_checkpoint`, not through orbax."""

  def save(self, directory: epath.Path, args: 'AssetsSave') -> None:
    if jax.process_index() == 0:
      args.writer(epath.Path(directory))

  async def async_save(self, directory: epath.Path, args: 'AssetsSave'):
    return [ocp_future.CommitFutureAwaitingContractedSignals(asyncio.to_thread(self.save, directory, args))]

  def restore(self, directory: epath.Path, args: Any = None):
    raise NotImplementedError('assets are read with cosmos_jax.convert.checkpoint.open_checkpoint')


@ocp.args.register_with_handler(_AssetsHandler, for_save=True)
@dataclasses.dataclass
class AssetsSave(ocp.args.CheckpointArgs):
  writer: AssetsWriter


@ocp.args.register_with_handler(_AssetsHandler, for_restore=True)
@dataclasses.dataclass
class AssetsRestore(ocp.args.CheckpointArgs):
  pass


def _train_state_item(state: state_lib.TrainState) -> dict:
  return {'step': state.step, 'opt_state': state.opt_state, 'rng': state.rng}


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
  """The workdir as an epath: local paths made absolute, URLs (gs://...) kept as they are."""
  text = os.fspath(workdir)
  return epath.Path(text if '://' in text else os.path.abspath(text))


class CheckpointManager:
  """`save(step, state, data_iter, assets)`, `restore(step, abstract_state, data_iter)`, `latest_step()`."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, keep_period: int | None = None,
               save_interval_steps: int = 1, async_save: bool = True):
    self.directory = workdir_path(directory)
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

  def save(self, step: int, state: state_lib.TrainState, *, data_iter=None, assets: AssetsWriter | None = None,
           force: bool = False) -> bool:
    items = {layout.PARAMS: ocp.args.StandardSave(state_lib.trained_params(state.params)),
             layout.TRAIN_STATE: ocp.args.StandardSave(_train_state_item(state))}
    if state.ema_params is not None:
      items[layout.EMA_PARAMS] = ocp.args.StandardSave(state.ema_params)
    if data_iter is not None:
      items[layout.DATA_ITER] = grain_python.PyGrainCheckpointSave(data_iter)
    if assets is not None:
      items[layout.ASSETS] = AssetsSave(assets)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int | None, abstract_state: state_lib.TrainState, *,
              data_iter=None, base_params=None) -> state_lib.TrainState:
    """Restores the train state into the shardings/dtypes of `abstract_state` (a TrainState of
    `jax.ShapeDtypeStruct`s with shardings) and, when given, the grain iterator in place. A LoRA state's base is
    not in the checkpoint (it references it): pass it, placed, as `base_params`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint to restore in {self.directory}')
    lora = state_lib.is_lora_params(abstract_state.params)
    if lora and base_params is None:
      raise ValueError(f'{self.directory} step {step}: restoring a LoRA state needs base_params (the checkpoint '
                       'holds the adapters only)')
    items = {layout.PARAMS: ocp.args.StandardRestore(state_lib.trained_params(abstract_state.params)),
             layout.TRAIN_STATE: ocp.args.StandardRestore(_train_state_item(abstract_state))}
    if abstract_state.ema_params is not None:
      items[layout.EMA_PARAMS] = ocp.args.StandardRestore(abstract_state.ema_params)
    if data_iter is not None:
      items[layout.DATA_ITER] = grain_python.PyGrainCheckpointRestore(data_iter)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    rest = restored[layout.TRAIN_STATE]
    params = restored[layout.PARAMS]
    if lora:
      params = state_lib.lora_params(base_params, params)
    return state_lib.TrainState(step=rest['step'], params=params, opt_state=rest['opt_state'],
                                rng=rest['rng'],
                                ema_params=restored[layout.EMA_PARAMS] if layout.EMA_PARAMS in items else None)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of `tree` carrying `shardings`, the target of a sharded restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
