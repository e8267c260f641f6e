"""Input-pipeline throughput: samples/s of the grain pipeline for the ALOHA layout (3 cameras, 224x224, the
official training augmentation on), on the bundled sample (or --data_dir), per worker count.

    python benchmarks/data.py [--out benchmarks/results/data.json] [--workers 0,2] [--batches 8]

Each sample decodes nothing at run time (episodes are decoded once, as the official reader does), builds 11 slot
frames, augments the 6 camera images with one parameter draw (crop+resize, rotation, 4 colour ops), and gathers
targets. The tiny training-step time measured by benchmarks/train_step.py (its JSON, `--train_step_json`) is
printed and stored beside it, so the two can be compared: the pipeline keeps up when
samples/s >= batch_size / step_time. Run train_step.py first on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from cosmos_jax.data import bundled, datasets, pipeline, sample as sample_lib


def measure(dataset, batch_size: int, workers: int, batches: int, warmup: int, threads: int) -> dict:
  iterator = pipeline.make_loader(dataset, batch_size, seed=0, process_index=0, process_count=1,
                                  read_threads=threads, worker_count=workers)
  for _ in range(warmup):  # worker start-up and first batches excluded
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - start
  return {'workers': workers, 'read_threads': threads, 'batch_size': batch_size, 'batches': batches, 'seconds': seconds,
          'samples_per_second': batches * batch_size / seconds}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='benchmarks/results/data.json')
  parser.add_argument('--data_dir', default=str(bundled.sample_dir('aloha')))
  parser.add_argument('--workers', default='0,2')
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--batches', type=int, default=8)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--read_threads', type=int, default=4, help='sample-building threads per process/worker')
  parser.add_argument('--train_step_json', default='benchmarks/results/train_step.json',
                      help='JSON written by benchmarks/train_step.py (the tiny step time to compare with)')
  args = parser.parse_args()

  config = sample_lib.SampleConfig(image_size=224, augment=True)
  start = time.perf_counter()
  dataset = datasets.load_dataset('aloha', args.data_dir, config)
  load_seconds = time.perf_counter() - start
  rows = [measure(dataset, args.batch_size, int(w), args.batches, args.warmup, args.read_threads)
          for w in args.workers.split(',')]

  print(f'ALOHA layout, 3 cameras, 224x224, augmentation on; {os.cpu_count()} CPU cores; data {args.data_dir}')
  print(f'dataset load (decode + resize all episodes): {load_seconds:.2f} s')
  print(f'{"workers":>8} {"batch":>6} {"samples/s":>10} {"ms/sample":>10}')
  for r in rows:
    print(f'{r["workers"]:>8} {r["batch_size"]:>6} {r["samples_per_second"]:>10.1f} '
          f'{1000 / r["samples_per_second"]:>10.1f}')
  result = {
      'benchmark': 'data_pipeline',
      'layout': 'aloha: 11 slots, cameras cam_left_wrist/cam_right_wrist/cam_high at t and t\'',
      'image_size': 224, 'augmentation': True, 'data_dir': args.data_dir,
      'cpu_count': os.cpu_count(), 'platform': platform.platform(), 'dataset_load_seconds': load_seconds,
      'results': rows,
      'train_step': train_step_figure(args.train_step_json, rows),
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)
  print(f'wrote {args.out}')


def train_step_figure(path: str, rows: list) -> dict | None:
  """The tiny config's step time from benchmarks/train_step.py, and whether the pipeline keeps up with it."""
  if not os.path.exists(path):
    print(f'(no {path}: run benchmarks/train_step.py first to compare with the training-step time)')
    return None
  with open(path, encoding='utf-8') as f:
    tiny = json.load(f)['rows'][0]
  needed = tiny['global_batch'] / tiny['median_step_s']
  best = max(r['samples_per_second'] for r in rows)
  print(f"training step ({tiny['name']}): {tiny['median_step_s'] * 1e3:.0f} ms for {tiny['global_batch']} samples "
        f'= {needed:.1f} samples/s needed; pipeline best {best:.1f} samples/s -> '
        f"{'keeps up' if best >= needed else 'does NOT keep up'}")
  return {'config': tiny['name'], 'seconds_per_step': tiny['median_step_s'], 'batch_size': tiny['global_batch'],
          'samples_per_second_needed': needed, 'pipeline_keeps_up': best >= needed}


if __name__ == '__main__':
  main()
