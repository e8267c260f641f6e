"""What an evaluation shows a person: per-episode MP4 (left wrist | right wrist | cam_high | predicted future
cam_high, with step, predicted value and reward printed on each frame) and a plot of the predicted value at every
query against the simulator's reward."""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, ImageDraw

from cosmos_jax.data import decode, make_sample
from cosmos_jax.eval import episode as episode_lib


def video_frames(episode: episode_lib.EpisodeResult) -> np.ndarray:
  """(T, S + 20, 3|4 * S, 3) uint8: left wrist | right wrist | cam_high (| the last predicted future cam_high)."""
  size = episode.frames['cam_high'].shape[1]
  with_future = any(image is not None for image in episode.future_images)
  columns = 4 if with_future else 3
  out = np.zeros((episode.length, size + 20, columns * size, 3), np.uint8)
  query = -1
  for t in range(episode.length):
    while query + 1 < len(episode.query_steps) and episode.query_steps[query + 1] <= t:
      query += 1
    for c, cam in enumerate(('cam_left_wrist', 'cam_right_wrist', 'cam_high')):
      out[t, 20:, c * size:(c + 1) * size] = episode.frames[cam][t]
    future = episode.future_images[query] if with_future else None
    if future is not None:
      out[t, 20:, 3 * size:] = decode.resize_square(future[None], size)[0]
    value = episode.values[query]
    text = (f't={t}  V={value:.3f}  r={episode.rewards[t]:g}/{episode.max_reward:g}'
            + ('   [last column: predicted future cam_high]' if with_future and size >= 128 else ''))
    cv2.putText(out[t], text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45 if size >= 128 else 0.3, (255, 255, 255), 1,
                cv2.LINE_AA)
  return out


def write_video(path: str, episode: episode_lib.EpisodeResult, fps: float) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  make_sample.write_mp4(path, video_frames(episode), fps=int(round(fps)))
  return path


def value_plot(episode: episode_lib.EpisodeResult, title: str, size: tuple[int, int] = (720, 360)) -> np.ndarray:
  """(H, W, 3) uint8 plot: predicted value at each query (blue) and env reward / max reward (orange) vs step."""
  width, height = size
  left, right, top, bottom = 52, 16, 30, 40
  image = Image.new('RGB', size, 'white')
  draw = ImageDraw.Draw(image)
  steps = max(episode.length, 1)

  def to_px(step, y):
    return (left + (width - left - right) * step / steps, top + (height - top - bottom) * (1.0 - y))

  for i in range(5):
    y = i / 4
    _, py = to_px(0, y)
    draw.line([(left, py), (width - right, py)], fill=(225, 225, 225))
    draw.text((8, py - 6), f'{y:.2f}', fill='black')
  for i in range(6):
    step = round(steps * i / 5)
    px, _ = to_px(step, 0)
    draw.line([(px, height - bottom), (px, height - bottom + 4)], fill='black')
    draw.text((px - 8, height - bottom + 6), str(step), fill='black')
  draw.rectangle([left, top, width - right, height - bottom], outline='black')
  draw.text((width // 2 - 40, height - 16), 'control step', fill='black')
  draw.text((left, 8), title, fill='black')
  reward = np.clip(episode.rewards / episode.max_reward, 0, 1)
  stairs, previous = [to_px(0, 0)], 0.0
  for t, r in enumerate(reward):  # reward[t] is observed after action t, i.e. at step t + 1
    stairs += [to_px(t + 1, previous), to_px(t + 1, r)]
    previous = r
  draw.line(stairs, fill=(230, 120, 20), width=2)
  points = [to_px(s, v) for s, v in zip(episode.query_steps, episode.values) if np.isfinite(v)]
  if len(points) > 1:
    draw.line(points, fill=(30, 80, 200), width=2)
  for px, py in points:
    draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(30, 80, 200))
  legend_x = width - right - 260
  draw.text((legend_x, 8), 'o predicted value', fill=(30, 80, 200))
  draw.text((legend_x + 120, 8), '_ reward / max reward', fill=(230, 120, 20))
  if not points:
    draw.text((left + 10, top + 10), 'the policy returned no value predictions', fill=(200, 0, 0))
  return np.asarray(image)


def write_plot(path: str, episode: episode_lib.EpisodeResult, title: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(value_plot(episode, title)).save(path)
  return path
