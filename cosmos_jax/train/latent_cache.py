"""Latents of the frozen VAE kept on the host, keyed by the content of the slot frames they encode.

Without augmentation a run sees the same slot frames again every epoch, and on a CPU the VAE encode costs several
times the DiT's forward and backward pass of a small model (configs/aloha.py:small: 0.32 of 0.43 s per step at
batch 2). The VAE is frozen and deterministic, so a latent computed once is the latent every later step would
compute: the cache encodes each distinct sample once (one sample per call, the shape the training step encodes
too) and hands the trainer latents instead of asking the step to encode.

The key is a digest of the frames' bytes, not the sample's index, so nothing about the data pipeline (sample types,
shuffling, resumption, process count) has to be known here, and a changed frame can never hit a stale latent.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable

import numpy as np


def frames_digest(frames: np.ndarray) -> bytes:
  """Digest of one sample's slot frames [state_t, H, W, 3] uint8 (shape included: equal bytes, other shape)."""
  h = hashlib.blake2b(digest_size=16)
  h.update(repr((frames.shape, frames.dtype.str)).encode())
  h.update(np.ascontiguousarray(frames).tobytes())
  return h.digest()


class LatentCache:
  """Host-side latents of slot-frame samples, at most `max_entries` (least recently used ones go first).

  `encode_one` maps one sample's frames [1, state_t, H, W, 3] uint8 to its latent [1, state_t, h, w, z] float32.
  """

  def __init__(self, encode_one: Callable[[np.ndarray], np.ndarray], max_entries: int):
    if max_entries < 1:
      raise ValueError(f'LatentCache needs max_entries >= 1, got {max_entries}')
    self._encode_one = encode_one
    self._max_entries = int(max_entries)
    self._latents: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()
    self.hits = 0
    self.misses = 0

  def __len__(self) -> int:
    return len(self._latents)

  def latents(self, video: np.ndarray) -> np.ndarray:
    """[B, state_t, h, w, z] float32 latents of a batch of slot frames [B, state_t, H, W, 3] uint8."""
    if video.dtype != np.uint8 or video.ndim != 5:
      raise ValueError(f'LatentCache expects uint8 slot frames [B, state_t, H, W, 3], got {video.dtype} {video.shape}')
    out = []
    for frames in video:
      key = frames_digest(frames)
      latent = self._latents.get(key)
      if latent is None:
        self.misses += 1
        latent = np.asarray(self._encode_one(frames[None]), np.float32)[0]
        self._latents[key] = latent
        if len(self._latents) > self._max_entries:
          self._latents.popitem(last=False)
      else:
        self.hits += 1
        self._latents.move_to_end(key)
      out.append(latent)
    return np.stack(out)

  def hit_rate(self) -> float:
    total = self.hits + self.misses
    return self.hits / total if total else 0.0
