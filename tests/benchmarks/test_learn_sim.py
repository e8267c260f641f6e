"""benchmarks/learn_sim.py's first-query diagnostic on the bundled demonstrations, with stand-in policies whose
answers are known: one that sees which demonstration it is shown, one blind to the images."""

import importlib.util
import pathlib

import numpy as np
import pytest

from cosmos_jax.data import aloha, bundled
from cosmos_jax.policy import layout as layout_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
IMAGE_SIZE = 64


@pytest.fixture(scope='module')
def learn_sim():
  spec = importlib.util.spec_from_file_location('learn_sim', REPO / 'benchmarks' / 'learn_sim.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class _Policy:
  """Answers each demonstration's own first chunk when it recognises the primary image (sighted), or the mean of
  the first chunks whatever it is shown (blind)."""

  def __init__(self, demos, chunk, sighted):
    self.demos, self.chunk, self.sighted = demos, chunk, sighted

  def act(self, observation):
    targets = [d.actions[:self.chunk].astype(np.float64) for d in self.demos]
    if not self.sighted:
      return {'actions': np.mean(targets, axis=0)}
    match = [i for i, d in enumerate(self.demos)
             if np.array_equal(d.frames['image'][0], observation['primary_image'])]
    assert len(match) == 1, 'the stand-in policy must recognise exactly one demonstration'
    return {'actions': targets[match[0]]}


def test_first_query_discrimination_tells_sighted_from_blind(learn_sim):
  paths = aloha.find_episode_files(str(bundled.sample_dir('aloha')))
  demos = [aloha.read_demo(p, IMAGE_SIZE) for p in paths]
  chunk = layout_lib.get_layout('aloha').chunk_size
  sighted = learn_sim.first_query_discrimination(_Policy(demos, chunk, True), paths, IMAGE_SIZE, chunk)
  blind = learn_sim.first_query_discrimination(_Policy(demos, chunk, False), paths, IMAGE_SIZE, chunk)
  assert sighted['mean_own_l1'] == 0.0 and sighted['mean_other_l1'] > 0.01, sighted
  assert sighted['prediction_spread'] == pytest.approx(sighted['demonstration_spread']), sighted
  assert blind['prediction_spread'] == 0.0, blind
  assert blind['mean_own_l1'] == pytest.approx(blind['image_blind_baseline_l1']), blind
  assert learn_sim.first_query_discrimination(_Policy(demos[:1], chunk, True), paths[:1], IMAGE_SIZE, chunk) == {}


class _OneModePolicy:
  """Answers demonstration `mode`'s first chunk plus a little sampler noise, whatever it is shown."""

  def __init__(self, demos, chunk, mode):
    self.target = demos[mode].actions[:chunk].astype(np.float64)
    self.rng = np.random.default_rng(0)

  def act(self, observation):
    del observation
    return {'actions': self.target + self.rng.normal(0.0, 1e-3, self.target.shape)}


def test_first_query_modes_count_which_demonstration_each_scene_leads_to(learn_sim):
  paths = aloha.find_episode_files(str(bundled.sample_dir('aloha')))
  demos = [aloha.read_demo(p, IMAGE_SIZE) for p in paths]
  chunk = layout_lib.get_layout('aloha').chunk_size
  sighted = learn_sim.first_query_modes(_Policy(demos, chunk, True), paths, IMAGE_SIZE, chunk, draws=2)
  assert sighted['nearest_demonstration_counts'] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]], sighted
  assert sighted['own_fraction'] == 1.0
  one_mode = learn_sim.first_query_modes(_OneModePolicy(demos, chunk, 1), paths, IMAGE_SIZE, chunk, draws=3)
  assert one_mode['nearest_demonstration_counts'] == [[0, 3, 0], [0, 3, 0], [0, 3, 0]], one_mode
  assert one_mode['own_fraction'] == pytest.approx(1 / 3)
  assert learn_sim.first_query_modes(_Policy(demos[:1], chunk, True), paths[:1], IMAGE_SIZE, chunk) == {}


def test_the_policy_input_size_follows_the_variant(learn_sim):
  configs = importlib.import_module('configs.aloha')
  for variant in ('small', 'tiny', ''):
    assert learn_sim.variant_image_size(variant) == configs.get_config(variant).data.image_size
  assert learn_sim.variant_image_size('small') == 64 and learn_sim.variant_image_size('') == 224


def test_demonstrations_must_show_cam_high_as_the_evaluation_renders_it(learn_sim, tmp_path):
  learn_sim.check_demo_cameras(str(bundled.sample_dir('aloha')))  # the bundled sample is rendered as evaluated
  with pytest.raises(ValueError, match='no transfer_cube entry in a demos.json'):
    learn_sim.check_demo_cameras(str(tmp_path))
  (tmp_path / 'demos.json').write_text('{"transfer_cube": {"seeds": [0]}}', encoding='utf-8')  # older generator
  with pytest.raises(ValueError, match=r"rendered with cam_high view None \(None: an older generator\)"):
    learn_sim.check_demo_cameras(str(tmp_path))


def test_standardised_vae_gives_unit_scale_camera_latents(learn_sim, tmp_path):
  """The VAE learn_sim trains with: on the samples it was measured on, the camera slots' normalised latents have
  zero mean and unit standard deviation per channel (the variant's VAE: about 0.1-0.3). A second call reuses it."""
  demo_dir = str(bundled.sample_dir('aloha'))
  out = tmp_path / 'vae.safetensors'
  info = learn_sim.standardised_vae('small', demo_dir, out, num_samples=8)
  assert out.exists() and info['samples'] == 8 and max(info['channel_std']) < 0.5, info
  cameras = learn_sim.camera_latents('small', demo_dir, vae_path=str(out), num_samples=8)
  np.testing.assert_allclose(cameras.mean(axis=(0, 1, 2, 3)), 0.0, atol=1e-3)
  np.testing.assert_allclose(cameras.std(axis=(0, 1, 2, 3)), 1.0, rtol=1e-3)
  written = out.stat().st_mtime_ns
  assert learn_sim.standardised_vae('small', demo_dir, out, num_samples=8) == info
  assert out.stat().st_mtime_ns == written


def test_perturbed_copies_train_but_do_not_count_as_seeds(learn_sim, tmp_path, monkeypatch):
  """Noise-injected copies (make_sample --perturbed_copies) join the training data only: the closed-loop seeds and
  the open-loop figures come from the demonstrations themselves; a second call reuses them, a changed perturbation
  regenerates them."""
  from cosmos_jax.data import make_sample  # pylint: disable=g-import-not-at-top
  directory = tmp_path / 'demos'
  perturbation = make_sample.Perturbation(copies=2, until=4, hold=2)
  make_sample.generate(str(directory), 2, num_steps=4, seed=3, image_size=32, perturbation=perturbation,
                       log=lambda _: None)
  assert len(aloha.find_episode_files(str(directory))) == 6
  assert learn_sim.demo_seeds(str(directory)) == [3, 4]
  assert len(learn_sim.scripted_demo_files(str(directory))) == 2
  log = tmp_path / 'log'
  written = (directory / 'demos.json').stat().st_mtime_ns
  assert learn_sim.ensure_demos(directory, 2, 3, 32, log, perturbation) == str(directory)
  assert (directory / 'demos.json').stat().st_mtime_ns == written and not log.exists()
  commands = []
  monkeypatch.setattr(learn_sim, '_run', lambda command, *_: commands.append(command))
  learn_sim.ensure_demos(directory, 2, 3, 32, log, make_sample.Perturbation(copies=1, until=4, hold=2))
  assert len(commands) == 1 and '--perturbed_copies=1' in commands[0] and '--perturbation_until=4' in commands[0]
