"""A synthetic full-size 2B checkpoint (bf16, official names/shapes, ~4 GB) converts with peak RSS under 2x its size.

Slow (minutes, ~8 GB of disk): excluded by default; run with
    JAX_PLATFORMS=cpu python -m pytest -m slow tests/convert/test_convert_2b.py
"""

from __future__ import annotations

import shutil

import ml_dtypes
import numpy as np
import pytest

from cosmos_jax.convert import checkpoint
from cosmos_jax.convert import torch_io
from benchmarks import synthetic_checkpoint as synthetic


@pytest.fixture
def workdir(tmp_path):
  yield tmp_path
  shutil.rmtree(tmp_path, ignore_errors=True)  # ~8 GB: do not leave it to pytest's tmp retention


@pytest.mark.slow
def test_convert_synthetic_2b_streams(workdir):
  source, dest = workdir / 'Cosmos-Policy-synthetic-2B.pt', workdir / 'converted'
  file_bytes = synthetic.write_official_dit(source, synthetic.official_2b_entries(), dtype='bfloat16')
  measured = synthetic.measure_cli(['dit', str(source), str(dest), '--preset', '2B'])
  ratio = measured['peak_rss_bytes'] / file_bytes
  print(f'file {file_bytes / 1e9:.2f} GB, peak RSS {measured["peak_rss_bytes"] / 1e9:.2f} GB ({ratio:.2f}x), '
        f'{measured["seconds"]:.1f} s')
  assert ratio < 2.0, f'peak RSS {measured["peak_rss_bytes"]} is {ratio:.2f}x the file size {file_bytes}'

  params, config = checkpoint.load_params(dest)
  assert config['config']['param_dtype'] == 'bfloat16'
  assert config['source']['prefix'] == 'net.' and config['source']['num_tensors'] == 567
  assert len(config['source']['dropped_keys']) == 7 + 113  # buffers, and TE _extra_state of every RMSNorm
  with torch_io.open_state_dict(source) as original:
    for layer in (0, 27):
      kernel = params['blocks']['mlp']['layer1']['kernel'][layer]
      assert kernel.dtype == np.dtype(ml_dtypes.bfloat16)
      np.testing.assert_array_equal(kernel, original[f'net.blocks.{layer}.mlp.layer1.weight'].T)
    np.testing.assert_array_equal(params['final_layer']['linear']['kernel'],
                                  original['net.final_layer.linear.weight'].T)
    np.testing.assert_array_equal(params['t_embedding_norm']['scale'], original['net.t_embedding_norm.weight'])
