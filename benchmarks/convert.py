"""Converter benchmark: a synthetic full-size Cosmos-Predict2-2B DiT checkpoint (official names and shapes from the
manifest, `net.` prefix, bf16 random values, buffers and TE `_extra_state`) -> orbax, timing and peak RSS.

    JAX_PLATFORMS=cpu python benchmarks/convert.py [--dtype bfloat16] [--workdir DIR] [--out FILE] [--keep]

The conversion runs in a fresh process (the same code as `python -m cosmos_jax.convert dit`), whose peak resident
set size (`ru_maxrss`) is compared with the checkpoint file size; streaming should keep it well under 2x.
Files are written under --workdir (default: a temporary directory) and deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import synthetic_checkpoint as synthetic  # noqa: E402  pylint: disable=g-import-not-at-top


def du(path: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'), help='stored dtype')
  parser.add_argument('--workdir', default=None)
  parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'convert.json'))
  parser.add_argument('--keep', action='store_true', help='keep the synthetic checkpoint and the output')
  args = parser.parse_args()

  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='convert_bench_'))
  workdir.mkdir(parents=True, exist_ok=True)
  source, dest = workdir / 'Cosmos-Predict2-2B-synthetic.pt', workdir / 'converted'
  try:
    start = time.perf_counter()
    # Written in a child so that this process stays small while the conversion runs.
    subprocess.run([sys.executable, '-c', 'import pathlib, sys; from benchmarks import synthetic_checkpoint as synthetic; '
                    'synthetic.write_official_dit(pathlib.Path(sys.argv[1]), synthetic.official_2b_entries(), '
                    'dtype=sys.argv[2])', str(source), args.dtype], cwd=REPO, check=True)
    write_seconds = time.perf_counter() - start
    file_bytes = source.stat().st_size
    measured = synthetic.measure_cli(['dit', str(source), str(dest), '--preset', '2B'])
    output_bytes = du(dest)
  finally:
    if not args.keep:
      shutil.rmtree(workdir, ignore_errors=True)

  result = {
      'benchmark': 'convert_dit_2b',
      'stored_dtype': args.dtype,
      'file_bytes': file_bytes,
      'write_synthetic_seconds': round(write_seconds, 2),
      'convert_seconds': round(measured['seconds'], 2),
      'convert_gb_per_second': round(file_bytes / measured['seconds'] / 1e9, 3),
      'peak_rss_bytes': measured['peak_rss_bytes'],
      'rss_after_imports_bytes': measured['rss_after_imports_bytes'],
      'peak_rss_over_file_size': round(measured['peak_rss_bytes'] / file_bytes, 3),
      'output_bytes': output_bytes,
      'cli_output': measured['stdout'],
      'host': platform.node(),
      'python': platform.python_version(),
  }
  rows = [('stored dtype', args.dtype), ('file size', f'{file_bytes / 1e9:.2f} GB'),
          ('write synthetic', f'{write_seconds:.1f} s'), ('convert', f'{measured["seconds"]:.1f} s'),
          ('peak RSS', f'{measured["peak_rss_bytes"] / 1e9:.2f} GB'),
          ('RSS after imports', f'{measured["rss_after_imports_bytes"] / 1e9:.2f} GB'),
          ('peak RSS / file size', f'{result["peak_rss_over_file_size"]:.2f}'),
          ('orbax output', f'{output_bytes / 1e9:.2f} GB')]
  width = max(len(name) for name, _ in rows)
  for name, value in rows:
    print(f'{name:<{width}}  {value}')
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + '\n')
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
