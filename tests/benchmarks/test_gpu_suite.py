"""`benchmarks/gpu_suite.sh --dry-run`: every section of the GPU suite runs through the same code at tiny shapes on
the CPU and the JSON carries each figure the GPU run reports."""

import json
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_gpu_suite_dry_run_writes_every_figure(tmp_path):
  out = tmp_path / 'gpu_suite.json'
  env = {**os.environ, 'PYTHONPATH': str(ROOT), 'XDG_CACHE_HOME': str(tmp_path)}
  proc = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'gpu_suite.sh'), '--dry-run', '--out', str(out),
                         '--budget-s', '3000'], env=env, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result['dry_run'] and result['backend'] == 'cpu'
  sections = result['sections']
  assert set(sections) == {'dit_forward', 'action_query', 'planning', 'train_step', 'vae_encode'}
  for name, section in sections.items():
    assert section['status'] == 'ok', (name, section.get('error'), section.get('traceback'))
  figures = result['figures']
  for key in ('xla_ms', 'cudnn_ms', 'action_query_ms', 'action_query_with_decode_ms', 'planning_s',
              'train_step.per_device_batch', 'train_step.median_step_s', 'vae_encode_s', 'vae_encode_whole_s'):
    assert isinstance(figures.get(key), (int, float)) and figures[key] > 0, (key, figures.get(key))
  assert figures['train_mfu'] is None  # no peak FLOP/s for a CPU: MFU is not made up
  assert set(result['target_met']) == {'action_query_ms', 'planning_s', 'train_mfu'}
  train = sections['train_step']
  assert train['per_device_batch'] in (1, 2) and len(train['probe_memory_gib']) >= 1
  assert sections['planning']['num_candidates'] == 2
  vae = sections['vae_encode']
  assert vae['chunked_vs_whole']['max_rel_diff'] < 0.05  # bf16 chunked vs whole
  assert vae['chunked']['frames'] == 9
