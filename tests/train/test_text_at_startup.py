"""Training start-up with tasks missing from the text store: encoded once with data.t5 into the run's assets and
reused on resume; without data.t5 the run refuses, naming the tasks and the command that adds them."""

import numpy as np
import pytest

from configs import aloha
from cosmos_jax.convert import library
from cosmos_jax.data import text
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.train import data as train_data
from tests.convert import t5_folders


@pytest.fixture(scope='module')
def t5_dir(tmp_path_factory):
  """A one-layer T5 encoder as wide as T5-11B (1024), converted with our converter."""
  root = tmp_path_factory.mktemp('t5')
  t5_folders.write_folder(root / 'hf', t5_folders.train_spiece(), d_model=1024, d_kv=8, num_heads=2, d_ff=16,
                          num_layers=1)
  library.convert_t5(root / 'hf', root / 't5')
  return root / 't5'


def _data(tmp_path, **data):
  config = aloha.get_config('tiny')
  for key, value in data.items():
    config.data[key] = value
  layout = layout_lib.get_layout(config.layout)
  return train_data.TrainingData(config, layout, process_index=0, process_count=1,
                                 assets_dir=str(tmp_path / 'run' / 'assets'))


def test_missing_tasks_are_encoded_once_into_the_run_assets(tmp_path, t5_dir):
  empty = tmp_path / 'empty_store'
  text.TextStore({}, kind='').save(empty)
  with pytest.raises(ValueError, match=r"no embedding for the task\(s\) \[.*\].*python -m cosmos_jax.data.text encode"):
    _data(tmp_path, text_store=str(empty))

  data = _data(tmp_path, text_store=str(empty), t5=str(t5_dir))
  tasks = data.dataset.tasks
  want = text.T5TextEncoder.load(t5_dir).encode(tasks)
  full = np.stack([want[t] for t in tasks])
  np.testing.assert_array_equal(data.text_table, text.trim_padding(full))  # data.trim_text_padding (default)
  assert not np.any(full[:, data.text_table.shape[1]:].astype(np.float32))
  cached = text.TextStore.load(tmp_path / 'run' / 'assets' / 'text_store')
  assert set(cached.tasks) == set(tasks) and 'cosmos_jax' in cached.kind

  # Resume: the run's assets hold them, so no encoder is needed any more.
  again = _data(tmp_path, text_store=str(empty))
  np.testing.assert_array_equal(again.text_table, data.text_table)


def test_a_stand_in_store_is_not_mixed_with_t5(tmp_path, t5_dir):
  stand_in = tmp_path / 'stand_in'
  text.stand_in_store(['some other task']).save(stand_in)
  with pytest.raises(ValueError, match='stand-in'):
    _data(tmp_path, text_store=str(stand_in), t5=str(t5_dir))
