"""Training observability: a progress line (step, loss, step time, ETA), TensorBoard scalars (loss, per-slot L1
diagnostics, lr, grad norm, step time, TFLOP/s, MFU) and PNG grids of current vs predicted future frames."""

from __future__ import annotations

import functools
import io
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorboardX
from etils import epath
from PIL import Image

from cosmos_jax.nn import dit as dit_lib
from cosmos_jax.nn import vae as vae_lib
from cosmos_jax.policy import diffusion
from cosmos_jax.policy import inference
from cosmos_jax.policy import sampler
from cosmos_jax.policy import video as video_lib

# Dense bf16 peak TFLOP/s per chip, by substring of `jax.Device.device_kind` (first match wins).
DEVICE_PEAK_TFLOPS = (
    ('H200', 989.0), ('H100', 989.0), ('A100', 312.0), ('L40S', 362.0),
    ('TPU v6', 918.0), ('TPU v5p', 459.0), ('TPU v5 lite', 197.0), ('TPU v5e', 197.0), ('TPU v4', 275.0),
)


def device_peak_tflops(device: jax.Device | None = None) -> float:
  """Peak bf16 TFLOP/s of one device, or NaN when unknown (e.g. CPU: MFU is then not reported)."""
  kind = (device or jax.devices()[0]).device_kind
  for name, peak in DEVICE_PEAK_TFLOPS:
    if name.lower() in kind.lower():
      return peak
  return float('nan')


def train_flops_per_step(cfg, global_batch: int, data) -> float:
  """Model FLOPs of one optimiser step: 3× the DiT forward (forward + backward) over the global batch.

  The frozen VAE encode is not counted (it is not part of the trained model; MFU convention)."""
  t, h, w = data.latent_shape()
  return 3.0 * dit_lib.forward_flops(cfg.dit, global_batch, t, h, w, data.text_tokens())


def is_remote(path) -> bool:
  """A URL (gs://, s3://, ...) rather than a local path."""
  return '://' in os.fspath(path)


class _JsonLines:
  """metrics.jsonl: appended line by line on a local disk. Objects in a bucket cannot be appended to, so there the
  whole file (the earlier runs' lines included) is rewritten at each `flush`."""

  def __init__(self, path: epath.Path):
    self.path = path
    self.remote = is_remote(path)
    if self.remote:
      self._text = path.read_text(encoding='utf-8') if path.exists() else ''
      self._dirty = False
    else:
      self._file = open(path, 'a', encoding='utf-8')

  def write(self, line: str) -> None:
    if self.remote:
      self._text += line
      self._dirty = True
    else:
      self._file.write(line)
      self._file.flush()

  def flush(self) -> None:
    if self.remote and self._dirty:
      self.path.write_text(self._text, encoding='utf-8')
      self._dirty = False

  def close(self) -> None:
    self.flush()
    if not self.remote:
      self._file.close()


class Logger:
  """Writes a progress line to stdout and scalars/images to TensorBoard (process 0 only).

  The workdir may be a bucket (gs://): TensorBoard events are then written to a local temporary directory and
  copied up at every `flush` (each checkpoint) and at `close`; metrics.jsonl and images go up directly."""

  def __init__(self, workdir, *, total_steps: int, enabled: bool = True, flops_per_step: float = float('nan'),
               device_peak_tflops: float = 0.0):
    self.enabled = enabled
    self.total_steps = total_steps
    self.flops_per_step = flops_per_step
    peak = device_peak_tflops or _default_peak_tflops()
    self.peak_flops = peak * 1e12 * jax.device_count()
    self._times: list[float] = []
    self._writer = None
    self._jsonl = None
    self.workdir = epath.Path(workdir)
    self._events_cache = None
    if enabled:
      # Every scalar of every step, exact (repr floats), appended across resumed runs.
      self._jsonl = _JsonLines(self.workdir / 'metrics.jsonl')
      events = self.workdir / 'tensorboard'
      if is_remote(events):
        self._events_cache = tempfile.mkdtemp(prefix='cosmos_jax_tensorboard_')
      # A random suffix: two starts within one second (same time stamp and host) keep both files.
      self._writer = tensorboardX.SummaryWriter(self._events_cache or os.fspath(events),
                                                filename_suffix=f'.{uuid.uuid4().hex[:8]}')

  def scalars(self, step: int, metrics: dict[str, Any], *, step_time: float, lr: float) -> None:
    if not self.enabled:
      return
    self._times.append(step_time)
    tflops = self.flops_per_step / step_time / 1e12
    values = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
    values.update(lr=lr, step_time_s=step_time, tflops_per_s=tflops)
    if np.isfinite(self.peak_flops):
      values['mfu'] = self.flops_per_step / step_time / self.peak_flops
    for name, value in values.items():
      if np.isfinite(value):  # per-slot diagnostics are NaN when the batch has no sample of their type
        self._writer.add_scalar(f'train/{name}', value, step)
    self._jsonl.write(json.dumps({'step': step, **values}) + '\n')
    recent = self._times[-20:] if len(self._times) > 1 else self._times
    eta = (self.total_steps - step) * float(np.median(recent))
    done = int(30 * step / max(self.total_steps, 1))
    bar = '#' * done + '.' * (30 - done)
    extra = f" mfu {values['mfu']:.1%}" if 'mfu' in values else ''
    print(f'[{bar}] step {step}/{self.total_steps} loss {values["loss"]:.4f} '
          f'step {step_time * 1e3:.0f} ms {tflops:.3g} TFLOP/s{extra} eta {_format_seconds(eta)}',
          file=sys.stdout, flush=True)

  def scalars_only(self, step: int, values: dict[str, float]) -> None:
    if self.enabled:
      for name, value in values.items():
        self._writer.add_scalar(f'train/{name}', value, step)

  def image(self, step: int, name: str, grid: np.ndarray) -> str | None:
    """Logs an HWC uint8 image to TensorBoard and writes it as PNG under workdir/images/. Returns the path."""
    if not self.enabled:
      return None
    self._writer.add_image(name, grid, step, dataformats='HWC')
    path = self.workdir / 'images' / f'{name.replace("/", "_")}_{step:08d}.png'
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format='PNG')
    path.write_bytes(buffer.getvalue())
    return os.fspath(path)

  def flush(self) -> None:
    """Makes everything logged so far durable in the workdir (called with each checkpoint)."""
    if not self.enabled:
      return
    self._jsonl.flush()
    self._writer.flush()
    self._upload_events()

  def _upload_events(self) -> None:
    if self._events_cache is not None:
      events = self.workdir / 'tensorboard'
      events.mkdir(parents=True, exist_ok=True)
      for name in os.listdir(self._events_cache):
        (events / name).write_bytes(pathlib.Path(self._events_cache, name).read_bytes())

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._upload_events()
      if self._events_cache is not None:
        shutil.rmtree(self._events_cache, ignore_errors=True)
    if self._jsonl is not None:
      self._jsonl.close()


def _default_peak_tflops() -> float:
  return device_peak_tflops()


def _format_seconds(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  return time.strftime('%H:%M:%S', time.gmtime(max(seconds, 0)))


def image_grid(rows: list[list[np.ndarray]]) -> np.ndarray:
  """Tiles rows of HWC uint8 images (same size) into one image with a 2-px white gutter."""
  h, w, _ = rows[0][0].shape
  cols = max(len(r) for r in rows)
  gutter = 2
  grid = np.full((len(rows) * (h + gutter) - gutter, cols * (w + gutter) - gutter, 3), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, img in enumerate(row):
      grid[i * (h + gutter):i * (h + gutter) + h, j * (w + gutter):j * (w + gutter) + w] = img
  return grid


def predict_for_logging(params, vae_params, batch: dict, cfg, num_steps: int, mesh=None,
                        seed: int = 0) -> dict[str, Any]:
  """A policy query on the first sample of `batch` (the same code path as inference): predicted future images
  and value beside the current and true future images, as host numpy arrays.

  Every process calls this (it is one jitted program over the global, possibly multi-process, arrays); the result
  is computed onto a replicated sharding of `mesh`, so each process reads its own full copy."""
  return jax.device_get(_predict_program(cfg, num_steps, seed, mesh)(params, vae_params, batch))


@functools.lru_cache(maxsize=8)
def _predict_program(cfg, num_steps: int, seed: int, mesh):
  out_shardings = None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(functools.partial(_predict, cfg=cfg, num_steps=num_steps, seed=seed), out_shardings=out_shardings)


def _predict(params, vae_params, batch, *, cfg, num_steps, seed):
  layout = cfg.layout
  # The first sample, sliced inside the program: the batch may span devices of other processes.
  frames = batch['video'][:1]
  # Inference sees only the current images: the future and placeholder slots are black.
  current_only = jnp.zeros_like(frames).at[:, :layout.num_conditional].set(frames[:, :layout.num_conditional])
  video = video_lib.pixels_to_unit(video_lib.slot_frames_to_video(current_only), cfg.vae.dtype)
  latent = vae_lib.encode(vae_params, cfg.vae, video).astype(jnp.float32)
  noise = sampler.jax_noise(jax.random.key(seed), latent.shape)
  result = inference.action_query(diffusion.DiTNet(cfg.dit), params, batch['t5_text_embeddings'][:1], latent,
                                  batch['proprio'][:1], noise, layout=layout, num_steps=num_steps)
  predicted = inference.future_images(vae_params, cfg.vae, result['sample'], result['orig_latent'], layout)
  return {'current': [frames[0, k] for k in layout.current_image_slots],
          'true_future': [frames[0, k] for k in layout.future_image_slots],
          'predicted_future': [predicted[layout.slots[k]][0] for k in layout.future_image_slots],
          'value': result['value'][0]}


def prediction_grid(prediction: dict) -> np.ndarray:
  """Rows: current images, true future images, predicted future images (one column per camera)."""
  rows = [prediction['current'], prediction['true_future'], prediction['predicted_future']]
  return image_grid([[np.asarray(img) for img in row] for row in rows])
