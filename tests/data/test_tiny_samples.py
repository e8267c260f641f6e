"""The bundled LIBERO- and RoboCasa-format samples: the generator reproduces them, and each reads into a training
batch of its layout."""

import json
import os

import h5py
import numpy as np
import pytest

from cosmos_jax.data import bundled, datasets, make_tiny_samples, pipeline, sample as sample_lib, text
from cosmos_jax.policy import layout as layout_lib

BENCHMARKS = ('libero', 'robocasa')


def _tree(path):
  """{HDF5 key: (shape, dtype)} and the attributes of every group."""
  out = {}

  def visit(name, node):
    out[name] = (node.shape, str(node.dtype)) if isinstance(node, h5py.Dataset) else dict(node.attrs)

  with h5py.File(path, 'r') as f:
    f.visititems(visit)
  return out


@pytest.mark.parametrize('benchmark', BENCHMARKS)
def test_generator_reproduces_the_bundled_sample(benchmark, tmp_path):
  bundled_dir = bundled.sample_dir(benchmark)
  path = make_tiny_samples.write_sample(benchmark, tmp_path)
  assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(bundled_dir))
  original = bundled_dir / path.name
  assert _tree(path) == _tree(original)
  with h5py.File(path, 'r') as new, h5py.File(original, 'r') as old:
    for key in ('data/demo_0/actions', 'data/demo_0/robot_states'):
      np.testing.assert_array_equal(new[key][:], old[key][:], err_msg=key)
  for name in ('dataset_statistics.json', 'text_store/index.json'):
    assert json.loads((tmp_path / name).read_text()) == json.loads((bundled_dir / name).read_text()), name
  new_store, old_store = text.TextStore.load(tmp_path / 'text_store'), text.TextStore.load(bundled_dir / 'text_store')
  np.testing.assert_array_equal(new_store.table(new_store.tasks).astype(np.float32),
                                old_store.table(old_store.tasks).astype(np.float32))
  # JPEG bytes can differ between libjpeg builds; the decoded frames must not (beyond a rounding step).
  config = sample_lib.SampleConfig.for_layout(benchmark, image_size=64)
  new_frames = datasets.load_dataset(benchmark, str(tmp_path), config).sections[0][0].episode.frames
  old_frames = datasets.load_dataset(benchmark, str(bundled_dir), config).sections[0][0].episode.frames
  for role, frames in old_frames.items():
    assert np.abs(new_frames[role].astype(int) - frames.astype(int)).max() <= 2, role


@pytest.mark.parametrize('benchmark', BENCHMARKS)
def test_bundled_sample_reads_into_a_training_batch(benchmark):
  layout = layout_lib.get_layout(benchmark)
  dataset = datasets.load_dataset(benchmark, str(bundled.sample_dir(benchmark)),
                                  sample_lib.SampleConfig.for_layout(benchmark, image_size=64))
  assert dataset.tasks == (make_tiny_samples.TASK,)
  store = text.TextStore.load(bundled.text_store_dir(benchmark))
  assert 'NOT T5' in store.kind
  batch = next(pipeline.make_loader(dataset, 2, seed=0, process_index=0, process_count=1, text_store=store))
  assert batch['video'].shape == (2, layout.state_t, 64, 64, 3)
  assert batch['actions'].shape == (2, layout.chunk_size, layout.action_dim)
  assert batch['proprio'].shape == (2, layout.proprio_dim)
  assert np.all(np.abs(batch['actions']) <= 1 + 1e-6) and np.all(np.abs(batch['proprio']) <= 1 + 1e-6)
  assert batch['video'][:, list(layout.current_image_slots)].mean() > 20  # rendered frames, not black
