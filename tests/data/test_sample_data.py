"""The bundled gym-aloha sample: read end to end into a training batch; the generator reproduces its format."""

import json
import os

import h5py
import numpy as np

from cosmos_jax.data import aloha, bundled, datasets, make_sample, pipeline, sample as sample_lib, simulator, stats, text

SAMPLE = str(bundled.sample_dir('aloha'))


def test_bundled_sample_end_to_end_into_a_training_batch():
  dataset = datasets.load_dataset('aloha', SAMPLE, sample_lib.SampleConfig(image_size=224, augment=True))
  assert dataset.tasks == ('transfer cube',)
  assert [p.episode.num_steps for p in dataset.sections[0]] == [400, 400, 400]  # full-length demos
  assert len(dataset) == 2400  # 1200 demo steps + the same steps as success rollouts (ALOHA main mixture)
  store = text.TextStore.load(bundled.text_store_dir('aloha'))
  assert 'NOT T5' in store.kind
  batch = next(pipeline.make_loader(dataset, 4, seed=0, process_index=0, process_count=1, text_store=store))
  assert batch['video'].shape == (4, 11, 224, 224, 3) and batch['video'].dtype == np.uint8
  assert batch['actions'].shape == (4, 50, 14) and batch['actions'].dtype == np.float32
  assert batch['t5_text_embeddings'].shape == (4, 512, 1024)
  assert np.all(np.abs(batch['actions']) <= 1 + 1e-6) and np.all(np.abs(batch['proprio']) <= 1 + 1e-6)
  assert batch['video'][:, [2, 3, 4, 7, 8, 9]].mean() > 20  # rendered camera frames, not black
  official = sample_lib.to_official_video(batch['video'][0])
  assert official.shape == (3, 41, 224, 224)


def test_bundled_statistics_match_its_episodes():
  demos = [aloha.read_demo(p, lazy=True) for p in aloha.find_episode_files(SAMPLE)]
  computed = stats.compute_statistics({'actions': d.actions, 'proprio': d.proprio} for d in demos)
  stored = stats.load_statistics(SAMPLE)
  for name, value in computed.items():
    np.testing.assert_array_equal(np.asarray(value, np.float64), stored[name], err_msg=name)


def _structure(path):
  items = {}
  with h5py.File(path, 'r') as f:
    f.visititems(lambda name, obj: items.__setitem__(
        name, (obj.dtype.str, obj.shape[1:]) if isinstance(obj, h5py.Dataset) else 'group'))
    items['attrs'] = sorted(f.attrs)
  return items


def test_generator_reproduces_the_bundled_format(tmp_path):
  make_sample.generate(str(tmp_path), num_episodes=1, num_steps=6, seed=11)
  new = aloha.find_episode_files(str(tmp_path))
  bundled = aloha.find_episode_files(SAMPLE)
  assert [os.path.relpath(p, tmp_path) for p in new] == [os.path.relpath(bundled[0], SAMPLE)]
  assert _structure(new[0]) == _structure(bundled[0])
  episode = aloha.read_demo(new[0], 224)
  assert episode.command == 'transfer cube' and episode.num_steps == 6
  assert {k: v.shape for k, v in episode.frames.items()} == {r: (6, 224, 224, 3) for r in aloha.CAMERA_ROLES.values()}
  assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(SAMPLE))
  assert text.TextStore.load(tmp_path / 'text_store').tasks == ('transfer cube',)


def test_bundled_demonstrations_are_full_length_successes_with_their_seeds():
  with open(os.path.join(SAMPLE, simulator.DEMOS_METADATA_FILENAME), encoding='utf-8') as f:
    metadata = json.load(f)['transfer_cube']
  files = aloha.find_episode_files(SAMPLE)
  seeds = []
  for path in files:
    with h5py.File(path, 'r') as f:
      assert f.attrs['success'] and f['rewards'][:].max() == f.attrs['max_reward'] == 4.0, path
      assert f['action'].shape == (metadata['num_steps'], 14) == (400, 14)
      seeds.append(int(f.attrs['seed']))
  assert seeds == metadata['seeds'] and len(files) == 3
  stale = {k: (metadata.get(k), v) for k, v in make_sample.generator_settings('transfer_cube').items() if metadata.get(k) != v}
  assert not stale, f'the bundled sample was made with other generator settings (recorded, current): {stale}'
