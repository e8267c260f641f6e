"""The samples shipped inside the package: the default data of the tiny configs and of the tiny policy runner.

Each sample directory holds episodes in its benchmark's on-disk format, `dataset_statistics.json`, and a
`text_store/` whose embeddings are STAND-INS (not T5), so nothing here needs a download.
"""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent

# Benchmark (policy layout name) -> its sample. ALOHA: scripted gym-aloha "transfer cube" demos (make_sample.py);
# LIBERO and RoboCasa: one of those demos in their file layouts (make_tiny_samples.py).
SAMPLE_DIRS = {
    'aloha': ROOT / 'sample_aloha',
    'libero': ROOT / 'sample_libero',
    'robocasa': ROOT / 'sample_robocasa',
}
TEXT_STORE = 'text_store'


def sample_dir(benchmark: str) -> pathlib.Path:
  """The bundled sample of `benchmark` ('aloha', ...)."""
  if benchmark not in SAMPLE_DIRS:
    raise ValueError(f'no bundled sample for {benchmark!r}; bundled: {sorted(SAMPLE_DIRS)}')
  return SAMPLE_DIRS[benchmark]


def text_store_dir(benchmark: str) -> pathlib.Path:
  """The stand-in text store of `benchmark`'s bundled sample."""
  return sample_dir(benchmark) / TEXT_STORE
