"""The policies an evaluation can run, chosen by `config.policy.kind` (configs/eval/aloha.py):

  checkpoint  an in-process `PolicyRunner` from converted checkpoints (DiT, VAE, optional planning model);
  tiny        the in-process random tiny policy on the bundled sample's assets (smoke runs);
  server      a served policy: `http://host:port[/act]` (the official json_numpy protocol) or `ws://host:port`;
  replay      a demonstration's recorded actions, chunk by chunk, for the episode with the demonstration's seed:
              the check that the loop's timing and conventions reproduce the recorded episode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import h5py
import numpy as np

from cosmos_jax.convert import checkpoint as checkpoint_lib
from cosmos_jax.data import aloha
from cosmos_jax.data import simulator
from cosmos_jax.eval import episode as episode_lib
from cosmos_jax.serve import client
from cosmos_jax.serve import runner

KINDS = ('checkpoint', 'tiny', 'server', 'replay')


def server_policy(url: str) -> episode_lib.Policy:
  """A served policy (python -m cosmos_jax.serve): http(s):// speaks the official /act protocol, ws(s):// the
  websocket/msgpack one."""
  if url.startswith(('http://', 'https://')):
    return client.HTTPClient(url if url.rstrip('/').endswith('/act') else url.rstrip('/') + '/act').act
  if url.startswith(('ws://', 'wss://')):
    return client.WebsocketClient(url).infer
  raise ValueError(f'policy.server must be an http://, https://, ws:// or wss:// URL, got {url!r}')


class DemoReplay:
  """Answers query k of an episode with actions [k * chunk, (k + 1) * chunk) of the demonstration recorded with
  that episode's seed (the last action repeated past the end, as training pads action chunks). With
  num_open_loop_steps == chunk_size the executed actions are exactly the recorded ones; `proprio_errors` records,
  per query, how far the observed state is from the state recorded at that step."""

  def __init__(self, demo_files: list[str], chunk_size: int = 50):
    if chunk_size < 1:
      raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    self.chunk_size = chunk_size
    self._demos = {}
    for path in demo_files:
      with h5py.File(path, 'r') as f:
        if 'seed' not in f.attrs:
          raise ValueError(f'{path}: no "seed" attribute; only demonstrations written by cosmos_jax.data.make_sample '
                           'record the simulator seed a replay needs')
        self._demos[int(f.attrs['seed'])] = (np.asarray(f[aloha.ACTION_KEY][:], np.float64),
                                             np.asarray(f[aloha.PROPRIO_KEY][:], np.float64))
    self._actions = self._qpos = None
    self._step = 0
    self.proprio_errors: list[float] = []

  @classmethod
  def from_directory(cls, demo_dir: str, chunk_size: int = 50) -> 'DemoReplay':
    files = aloha.find_episode_files(demo_dir, split=None)
    if not files:
      raise FileNotFoundError(f'no demonstrations (HDF5) under {demo_dir}')
    return cls(files, chunk_size)

  @property
  def seeds(self) -> list[int]:
    return sorted(self._demos)

  def start_episode(self, seed: int) -> None:
    if seed not in self._demos:
      raise ValueError(f'no demonstration recorded with seed {seed}; recorded seeds: {self.seeds}')
    self._actions, self._qpos = self._demos[seed]
    self._step = 0
    self.proprio_errors = []

  def __call__(self, observation: Mapping) -> dict:
    if self._actions is None:
      raise ValueError('DemoReplay needs start_episode(seed) before the first query')
    step = min(self._step, len(self._actions) - 1)
    self.proprio_errors.append(float(np.abs(np.asarray(observation['proprio']) - self._qpos[step]).max()))
    chunk = self._actions[self._step:self._step + self.chunk_size]
    if len(chunk) < self.chunk_size:
      chunk = np.concatenate([chunk, np.repeat(self._actions[-1:], self.chunk_size - len(chunk), axis=0)])
    self._step += self.chunk_size
    return {'actions': chunk}


def check_trained_cameras(checkpoint: str | os.PathLike, step: int | None = None) -> None:
  """A checkpoint trained on simulated demonstrations carries their demos.json in its assets (the trainer copies
  it); it is refused when this simulator renders the cameras otherwise than those demonstrations showed them."""
  resolved = checkpoint_lib.open_checkpoint(checkpoint, step)
  metadata = simulator.read_demos_metadata(resolved.directory / checkpoint_lib.ASSETS)
  simulator.check_demos_cameras(metadata, f'checkpoint {resolved.directory} (its {checkpoint_lib.ASSETS}/'
                                          f'{simulator.DEMOS_METADATA_FILENAME})')


def make_policy(config) -> tuple[episode_lib.Policy, str]:
  """(callable, name) for `config.policy` (see configs/eval/aloha.py)."""
  p = config.policy
  if p.kind not in KINDS:
    raise ValueError(f'policy.kind must be one of {KINDS}, got {p.kind!r}')
  if p.kind == 'server':
    if not p.server:
      raise ValueError('policy.kind=server needs policy.server (http://HOST:8777 or ws://HOST:PORT)')
    return server_policy(p.server), f'server {p.server}'
  if p.kind == 'replay':
    if not p.demos:
      raise ValueError('policy.kind=replay needs policy.demos (a directory of demonstrations with seeds)')
    if config.num_open_loop_steps != p.chunk_size:
      raise ValueError(f'policy.kind=replay executes whole chunks: num_open_loop_steps '
                       f'({config.num_open_loop_steps}) must equal policy.chunk_size ({p.chunk_size})')
    return DemoReplay.from_directory(p.demos, p.chunk_size), f'replay of {os.path.abspath(p.demos)}'
  # No proprio range check in the simulator: a policy that drives the arms far outside its training range has
  # failed the episode, and the runner's check (meant to catch unit mix-ups in real requests) would instead abort
  # the whole evaluation with an error.
  if p.kind == 'tiny':
    policy = runner.PolicyRunner.tiny(seed=p.tiny_seed, image_size=config.image_size, proprio_margin=None)
    return policy.act, policy.name
  if not p.checkpoint:
    raise ValueError('policy.kind=checkpoint needs the policy: --checkpoint=WORKDIR_OR_CHECKPOINT '
                     '(= --config.policy.checkpoint)')
  check_trained_cameras(p.checkpoint, p.step)
  policy = runner.PolicyRunner.from_checkpoints(p.checkpoint, p.vae or None, step=p.step, use_ema=p.use_ema,
                                                planning_dir=p.planning_checkpoint or None,
                                                statistics=p.statistics or None, text_store=p.text_store or None,
                                                image_size=config.image_size, proprio_margin=None,
                                                merge_lora=p.get('merge_lora', True),
                                                lora_base=p.get('lora_base') or None)
  return policy.act, policy.name
