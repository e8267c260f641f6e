"""Does a policy trained here act? Train from scratch on scripted gym-aloha demonstrations, then run it closed loop.

    nice -n 10 python benchmarks/learn_sim.py [--workdir /tmp/learn_sim] [--minutes 60] [--demo_dir DIR | --generate N]

One command, CPU by default (JAX_PLATFORMS=cpu unless set):
  1. demonstrations: --demo_dir (default: the bundled sample, 3 successful full-length transfer-cube demos, seeds
     0-2) or --generate N fresh ones (python -m cosmos_jax.data.make_sample into <workdir>/demos, reused when
     there); one more demo with a seed outside both seed sets goes to <workdir>/heldout (frames never trained on).
     With --perturbed_copies K (default 2) each demonstration is regenerated into <workdir>/demos together with K
     noise-injected copies (DART: arm-joint offsets of up to 0.05 rad on the executed actions over the first 60
     steps, the scripted actions recorded), which show the arm beside the demonstration's path with the actions
     that lead back to it; the closed-loop seeds and the open-loop figures stay the demonstrations' own;
  2. training: `python -m cosmos_jax.train --config=configs/aloha.py:<--variant> --workdir=<workdir>/train
     --config.data.dataset_dir=<demos> --config.init.vae_checkpoint=<workdir>/vae_standardised.safetensors` (the
     variant's VAE with its latents standardised on the demonstrations, see `standardised_vae`; --raw_vae: as it
     is), stopped (SIGINT) after --minutes; a workdir with checkpoints resumes, so a second call trains --minutes
     more;
  3. the latest training checkpoint is the policy (the one checkpoint layout: params, statistics, text store, and
     the VAE the run trained with), read from the training workdir by PolicyRunner and the evaluation command;
  4. open loop: the policy queried on the demonstrations' own observations every 25 steps: action L1 against the
     recorded chunk (raw units and min-max normalised) on training frames and on held-out frames, and the predicted
     value at each query; at step 0, where only the cube's place tells the demonstrations apart, how their first
     chunks differ (first_query_discrimination) and which demonstration the policy follows from each first scene
     over fresh sampler seeds (first_query_modes);
  5. closed loop through the evaluation command (`python -m cosmos_jax.eval.aloha_sim`, configs/eval/aloha.py) on
     the training seeds and on --new_seeds new seeds; its MP4s stay under <workdir>/eval_*/videos;
  6. a table, and JSON (--out): success rate and mean highest reward for both seed sets, the loss curve every
     log.every_steps, the action errors, training steps and wall time, the commands run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# pylint: disable=wrong-import-position
import h5py
import numpy as np

from cosmos_jax.convert import checkpoint as checkpoint_lib
from cosmos_jax.data import aloha, bundled, make_sample, simulator
from cosmos_jax.eval import episode as episode_lib
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.serve import runner as runner_lib
# pylint: enable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ is a folder of the checkout, not of the installed package
from configs import aloha as aloha_config  # pylint: disable=wrong-import-position
HELDOUT_SEED = 500  # outside the bundled/generated training seeds and the new evaluation seeds
NEW_SEEDS_START = 1000
OPEN_LOOP_EVERY = 25  # steps between open-loop queries on a demonstration
ROLE_FIELDS = {role: episode_lib.REQUEST_FIELDS[cam] for cam, role in aloha.CAMERA_ROLES.items()}


def _run(command: list[str], log_path: pathlib.Path, env=None) -> None:
  print('$ ' + ' '.join(command), flush=True)
  with open(log_path, 'a', encoding='utf-8') as log:
    result = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
  if result.returncode:
    raise RuntimeError(f'{command[:4]} failed with status {result.returncode}; see {log_path}')


def _env() -> dict:
  return {**os.environ, 'PYTHONPATH': f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}',
          'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu'), 'MUJOCO_GL': os.environ.get('MUJOCO_GL', 'egl')}


def variant_image_size(variant: str) -> int:
  """The camera size the variant trains on (the evaluation must feed the policy the same size; checkpoints do not
  record it)."""
  return int(aloha_config.get_config(variant).data.image_size)


def scripted_demo_files(demo_dir: str) -> list[str]:
  """The demonstrations themselves, without their noise-injected copies (make_sample --perturbed_copies): one per
  training seed, what the open-loop figures and the closed-loop seeds are taken from."""
  files = []
  for path in aloha.find_episode_files(demo_dir):
    with h5py.File(path, 'r') as f:
      if 'seed' not in f.attrs:
        raise ValueError(f'{path}: no "seed" attribute (demonstrations must come from cosmos_jax.data.make_sample)')
      if int(f.attrs.get('perturbed_copy', 0)) == 0:
        files.append(path)
  return files


def demo_seeds(demo_dir: str) -> list[int]:
  seeds = []
  for path in scripted_demo_files(demo_dir):
    with h5py.File(path, 'r') as f:
      seeds.append(int(f.attrs['seed']))
  return seeds


def check_demo_cameras(demo_dir: str) -> None:
  """The evaluation renders cam_high through the simulator as it is now (simulator.check_demos_cameras)."""
  metadata = simulator.read_demos_metadata(demo_dir)
  if 'transfer_cube' not in metadata:
    raise ValueError(f'{demo_dir}: no transfer_cube entry in a {simulator.DEMOS_METADATA_FILENAME} (demonstrations '
                     'must come from python -m cosmos_jax.data.make_sample)')
  simulator.check_demos_cameras(metadata, demo_dir)


def ensure_demos(directory: pathlib.Path, count: int, seed: int, image_size: int, log: pathlib.Path,
                 perturbation: make_sample.Perturbation = make_sample.Perturbation()) -> str:
  """Reuses demonstrations in `directory` only when the current generator would make the same ones."""
  entry = simulator.read_demos_metadata(directory).get('transfer_cube', {}) if directory.is_dir() else {}
  settings = make_sample.generator_settings('transfer_cube', perturbation)
  if (entry and len(entry.get('seeds', ())) >= count and entry.get('seeds', [None])[0] == seed
      and entry.get('image_size') == image_size and entry.get('perturbation') == settings.get('perturbation')
      and all(entry.get(key) == value for key, value in settings.items())):
    print(f'reusing the demonstrations in {directory}', flush=True)
    return str(directory)
  _run([sys.executable, '-m', 'cosmos_jax.data.make_sample', '--out', str(directory), '--episodes', str(count),
        '--seed', str(seed), '--image_size', str(image_size), '--overwrite',
        f'--perturbed_copies={perturbation.copies}', f'--perturbation_scale={perturbation.scale}',
        f'--perturbation_until={perturbation.until}', f'--perturbation_hold={perturbation.hold}'], log, _env())
  return str(directory)


def camera_latents(variant: str, demo_dir: str, vae_path: str | None = None, num_samples: int = 64,
                   seed: int = 0) -> np.ndarray:
  """Normalised VAE latents [n, cameras, h, w, z] of the camera slots of `num_samples` training samples drawn with
  `seed`, encoded by the variant's VAE (or the state_dict file `vae_path`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from cosmos_jax.data import datasets, sample as sample_lib  # pylint: disable=g-import-not-at-top
  from cosmos_jax.train import state as state_lib, trainer  # pylint: disable=g-import-not-at-top

  config = aloha_config.get_config(variant)
  if vae_path:
    config.init.vae_checkpoint = str(vae_path)
  _, vae_cfg = trainer.model_configs(config)
  layout = layout_lib.get_layout('aloha')
  dataset = datasets.load_dataset('aloha', demo_dir, sample_lib.SampleConfig(
      layout=layout, image_size=int(config.data.image_size), augment=False))
  picks = np.random.default_rng(seed).choice(len(dataset), min(num_samples, len(dataset)), replace=False)
  videos = np.stack([dataset.sample(int(i), np.random.default_rng(seed), world_model=False)['video'] for i in picks])
  params = trainer.load_vae_params(config, vae_cfg)
  encode = jax.jit(lambda frames: state_lib.encode_slot_frames(params, vae_cfg, frames))
  latents = np.concatenate([np.asarray(encode(videos[i:i + 8])) for i in range(0, len(videos), 8)])
  return latents[:, list(layout.current_image_slots) + list(layout.future_image_slots)]


def standardised_vae(variant: str, demo_dir: str, out: pathlib.Path, num_samples: int = 64, seed: int = 0) -> dict:
  """The variant's VAE with its latents standardised per channel on the demonstrations' camera slots
  (`vae_rules.standardise_latents`), written to `out` (official state_dict names) with its statistics beside it
  (`out` + .json); a later call (a resumed run) reuses both.

  The small variant's VAE has random weights: its normalised latents (Wan2.1's released statistics) vary by about
  0.1-0.3 per channel, so the 4 cm cube moves them by a few hundredths, and a DiT trained from scratch does not
  learn to read it within the hour. At unit scale the same DiT tells the training seeds' first scenes apart."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  from cosmos_jax.convert import vae_rules  # pylint: disable=g-import-not-at-top

  info_path = out.with_name(out.name + '.json')
  if out.exists() and info_path.exists():
    return json.loads(info_path.read_text(encoding='utf-8'))
  source = aloha_config.get_config(variant).init.vae_checkpoint
  if not str(source).endswith('.safetensors'):
    raise ValueError(f'init.vae_checkpoint {source}: standardising needs an official-name .safetensors file')
  latents = camera_latents(variant, demo_dir, num_samples=num_samples, seed=seed)
  mean, std = latents.mean(axis=(0, 1, 2, 3)), latents.std(axis=(0, 1, 2, 3))
  safetensors_numpy.save_file(vae_rules.standardise_latents(safetensors_numpy.load_file(source), mean, std), str(out))
  info = {'path': str(out), 'source': str(source), 'demo_dir': str(demo_dir), 'samples': len(latents),
          'channel_mean': mean.tolist(), 'channel_std': std.tolist()}
  info_path.write_text(json.dumps(info, indent=2), encoding='utf-8')
  return info


def train(args, demo_dir: str, train_dir: pathlib.Path, log: pathlib.Path, vae_flags: list[str]) -> dict:
  """Runs the trainer until --minutes have passed (then SIGINT: it finishes pending checkpoint writes)."""
  command = [sys.executable, '-m', 'cosmos_jax.train', f'--config=configs/aloha.py:{args.variant}',
             f'--workdir={train_dir}', f'--config.data.dataset_dir={demo_dir}', *vae_flags, *args.train_override]
  if (train_dir / 'checkpoints').is_dir() and any(p.name.isdigit() for p in (train_dir / 'checkpoints').iterdir()):
    command.append('--resume')
  print('$ ' + ' '.join(command) + f'   (stopped after {args.minutes} min)', flush=True)
  start = time.perf_counter()
  with open(log, 'a', encoding='utf-8') as out:
    # A shell's background job inherits SIGINT ignored; the trainer needs it to stop cleanly (KeyboardInterrupt ->
    # pending checkpoint writes finish).
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
      process.wait(timeout=args.minutes * 60)
    except subprocess.TimeoutExpired:
      process.send_signal(signal.SIGINT)
      process.wait(timeout=600)
  seconds = time.perf_counter() - start
  if process.returncode not in (0, 1, 130, -signal.SIGINT, -signal.SIGTERM):
    raise RuntimeError(f'training failed with status {process.returncode}; see {log}')
  return {'command': ' '.join(command), 'wall_seconds': round(seconds, 1), 'returncode': process.returncode}


CURVE_KEYS = ('loss', 'demo_sample_action_l1_loss', 'step_time_s')


def loss_curve(train_dir: pathlib.Path) -> list[dict]:
  """The trainer's logged metrics (every log.every_steps): total loss, the action-slot L1 of the policy samples
  in the batch (NaN when the batch had none), seconds per step."""
  path = train_dir / 'metrics.jsonl'
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines() if line.strip()]
  return [{'step': r['step'], **{k: r[k] for k in CURVE_KEYS if k in r}} for r in rows]


def latest_step(train_dir: pathlib.Path) -> int:
  """The latest finished checkpoint step of the run (one checkpoint layout: params, statistics, text store and the
  VAE the run trained with, which the evaluation command and PolicyRunner read from the workdir)."""
  checkpoint = checkpoint_lib.open_checkpoint(train_dir).require('dit', what='learn_sim', policy=True)
  return int(checkpoint.step)


def demo_observation(demo, t: int) -> dict:
  """The policy request a demonstration's step `t` makes (its frames, proprio and command)."""
  observation = {field: demo.frames[role][t] for role, field in ROLE_FIELDS.items()}
  observation.update(proprio=demo.proprio[t].astype(np.float64), task_description=demo.command)
  return observation


def open_loop(runner, demo_path: str, image_size: int, statistics, chunk: int) -> dict:
  """The policy on a demonstration's own observations every OPEN_LOOP_EVERY steps: action L1 against the
  recorded chunk, raw (radians; grippers in normalised units) and min-max normalised, and the predicted value."""
  demo = aloha.read_demo(demo_path, image_size)
  low, high = np.asarray(statistics['actions_min']), np.asarray(statistics['actions_max'])
  rows = []
  for t in range(0, demo.num_steps - 1, OPEN_LOOP_EVERY):
    observation = demo_observation(demo, t)
    response = runner.act(observation)
    predicted = np.asarray(response['actions'], np.float64)
    target = demo.actions[t:t + chunk].astype(np.float64)
    target = np.concatenate([target, np.repeat(target[-1:], chunk - len(target), axis=0)])
    error = np.abs(predicted - target)
    hold = np.abs(demo.proprio[t].astype(np.float64) - target)  # baseline: stay where the arms are
    rows.append({'step': t, 'l1': float(error.mean()), 'l1_normalised': float((2 * error / (high - low)).mean()),
                 'hold_baseline_l1': float(hold.mean()),
                 'l1_arms_rad': float(error[:, episode_lib.ARM_JOINTS].mean()),
                 'l1_grippers': float(error[:, [6, 13]].mean()),
                 'first_action_l1': float(error[0].mean()), 'value': float(response['value_prediction'])})
  return {'demo': os.path.relpath(demo_path, REPO) if demo_path.startswith(str(REPO)) else demo_path,
          'mean_l1': float(np.mean([r['l1'] for r in rows])),
          'mean_l1_normalised': float(np.mean([r['l1_normalised'] for r in rows])),
          'mean_l1_arms_rad': float(np.mean([r['l1_arms_rad'] for r in rows])),
          'mean_l1_grippers': float(np.mean([r['l1_grippers'] for r in rows])),
          'hold_baseline_mean_l1': float(np.mean([r['hold_baseline_l1'] for r in rows])), 'per_query': rows}


def first_query_discrimination(runner, demo_paths: list[str], image_size: int, chunk: int) -> dict:
  """Does the policy see where the cube is? Every episode starts from the same arm pose, so at step 0 the camera
  images (the cube's place) are the only input that tells the demonstrations apart. Per demonstration: the action
  L1 of the policy's first chunk against its own demonstration's first chunk and against the other
  demonstrations'; the spread (std across demonstrations, averaged over chunk steps and joints) of the predictions
  and of the demonstrations' own first chunks; and the L1 of the demonstrations' mean first chunk, the best a
  policy blind to the images can do on average."""
  demos = [aloha.read_demo(path, image_size) for path in demo_paths]
  if len(demos) < 2:
    return {}
  targets = [d.actions[:chunk].astype(np.float64) for d in demos]
  predictions = []
  for demo in demos:
    observation = demo_observation(demo, 0)
    predictions.append(np.asarray(runner.act(observation)['actions'], np.float64))
  own = [float(np.abs(p - targets[i]).mean()) for i, p in enumerate(predictions)]
  other = [float(np.mean([np.abs(p - t).mean() for j, t in enumerate(targets) if j != i]))
           for i, p in enumerate(predictions)]
  mean_target = np.mean(targets, axis=0)
  return {'own_l1': own, 'other_l1': other, 'mean_own_l1': float(np.mean(own)),
          'mean_other_l1': float(np.mean(other)),
          'image_blind_baseline_l1': float(np.mean([np.abs(mean_target - t).mean() for t in targets])),
          'prediction_spread': float(np.std(predictions, axis=0).mean()),
          'demonstration_spread': float(np.std(targets, axis=0).mean())}


def first_query_modes(runner, demo_paths: list[str], image_size: int, chunk: int, draws: int = 10) -> dict:
  """Which demonstration does the policy follow from each first scene? A diffusion policy that cannot tell the
  scenes apart does not answer their mean: it samples one demonstration's chunk (a mode). `runner` must draw a
  fresh sampler seed per request (randomize_seed); each demonstration's step-0 observation is queried `draws`
  times and each answer counted under the demonstration whose first chunk is nearest (L1). Rows: the
  demonstration shown; columns: the one followed. A policy that reads the cube puts every count on the diagonal."""
  demos = [aloha.read_demo(path, image_size) for path in demo_paths]
  if len(demos) < 2:
    return {}
  targets = [d.actions[:chunk].astype(np.float64) for d in demos]
  counts = np.zeros((len(demos), len(demos)), np.int64)
  for i, demo in enumerate(demos):
    observation = demo_observation(demo, 0)
    for _ in range(draws):
      predicted = np.asarray(runner.act(observation)['actions'], np.float64)
      counts[i, int(np.argmin([np.abs(predicted - t).mean() for t in targets]))] += 1
  return {'draws': draws, 'nearest_demonstration_counts': counts.tolist(),
          'own_fraction': float(np.trace(counts) / counts.sum())}


def action_noise_tolerance(demo_dir: str, scales=(0.0, 0.01, 0.02, 0.05, 0.1), repeats: int = 5,
                           seed: int = 0) -> list[dict]:
  """How accurate must the actions be? Each training demonstration's recorded actions replayed in the simulator
  (no cameras), `repeats` times, with one random offset per 50-step chunk added to every joint (uniform in +-scale, radians; the
  grippers' normalised units alike): success rate and mean highest reward per scale."""
  rng = np.random.default_rng(seed)
  files = scripted_demo_files(demo_dir)
  sim = simulator.AlohaSim('transfer_cube')
  rows = []
  for scale in scales:
    highest = []
    for path in files * repeats:
      with h5py.File(path, 'r') as f:
        demo_seed, actions = int(f.attrs['seed']), np.asarray(f['action'][:], np.float64)
      offsets = np.repeat(rng.uniform(-scale, scale, (len(actions) // 50 + 1, 14)), 50, axis=0)[:len(actions)]
      sim.reset(demo_seed)
      highest.append(max(sim.step(a) for a in actions + offsets))
    rows.append({'scale': scale, 'mean_abs_offset': scale / 2, 'success_rate': float(np.mean(np.array(highest) >= 4)),
                 'mean_highest_reward': float(np.mean(highest))})
  return rows


def closed_loop(args, train_dir: pathlib.Path, step: int, seeds: list[int], out: pathlib.Path, log: pathlib.Path) -> dict:
  """The evaluation command on `seeds`; with --reuse_evaluations, an existing summary of the same checkpoint and
  seeds is read instead."""
  command = [sys.executable, '-m', 'cosmos_jax.eval.aloha_sim', '--config=configs/eval/aloha.py',
             f'--config.out={out}', f'--config.seeds={",".join(map(str, seeds))}',
             f'--config.image_size={args.image_size}', f'--config.preprocess_size={args.demo_image_size}',
             f'--config.policy.checkpoint={train_dir}', f'--config.policy.step={step}',
             f'--config.num_open_loop_steps={args.open_loop_steps}']
  summary_path = out / 'summary.json'
  previous = json.loads(summary_path.read_text(encoding='utf-8')) if summary_path.exists() else None
  if not (args.reuse_evaluations and previous and previous['seeds'] == seeds
          and previous['config']['policy']['checkpoint'] == str(train_dir)
          and previous['config']['policy']['step'] == step
          and previous['config']['num_open_loop_steps'] == args.open_loop_steps):
    _run(command, log, _env())
  summary = json.loads(summary_path.read_text(encoding='utf-8'))
  return {'command': ' '.join(command), 'seeds': seeds, 'success_rate': summary['success_rate'],
          'mean_highest_reward': summary['mean_highest_reward'],
          'highest_rewards': [e['highest_reward'] for e in summary['per_episode']],
          'values': [e['values'] for e in summary['per_episode']],
          'videos': [str(out / e['video']) for e in summary['per_episode']],
          'wall_seconds': summary['timings']['wall_seconds']}


def episode_media(video_path: str, out_stem: pathlib.Path, frames_in_strip: int = 8, gif_every: int = 8) -> dict:
  """A frame strip (PNG, `frames_in_strip` frames evenly spaced over the episode, stacked top to bottom) and an
  animated GIF (every `gif_every`-th control step) of an evaluation MP4."""
  import cv2  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  capture = cv2.VideoCapture(video_path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(frame[..., ::-1])
  capture.release()
  if not frames:
    raise ValueError(f'{video_path}: no frames could be read')
  picks = np.linspace(0, len(frames) - 1, frames_in_strip).round().astype(int)
  out_stem.parent.mkdir(parents=True, exist_ok=True)
  strip, gif = out_stem.with_suffix('.png'), out_stem.with_suffix('.gif')
  Image.fromarray(np.concatenate([frames[i] for i in picks], axis=0)).save(strip)
  images = [Image.fromarray(f) for f in frames[::gif_every]]
  images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 * gif_every / 50), loop=0)
  return {'video': video_path, 'strip': str(strip), 'gif': str(gif), 'strip_steps': picks.tolist()}


def first_success_media(closed: dict, out_stem: pathlib.Path) -> dict | None:
  """Media of the first successful episode (highest reward 4) of a closed-loop result, or None."""
  for video, reward in zip(closed['videos'], closed['highest_rewards']):
    if reward >= 4:
      return episode_media(video, out_stem)
  return None


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='/tmp/cosmos_jax_learn_sim')
  parser.add_argument('--minutes', type=float, default=60.0, help='training time of this call (resumes if run again)')
  parser.add_argument('--demo_dir', default=str(bundled.sample_dir('aloha')),
                      help='successful demonstrations with seeds (default: the bundled sample)')
  parser.add_argument('--generate', type=int, default=0, help='generate N demonstrations into <workdir>/demos instead')
  parser.add_argument('--demo_image_size', type=int, default=128, help='stored camera size of generated demos')
  parser.add_argument('--variant', default='small', help='configs/aloha.py variant')
  parser.add_argument('--image_size', type=int, default=None,
                      help="the policy's input size (default: the variant's data.image_size; pass it too when a "
                           '--train_override changes data.image_size)')
  parser.add_argument('--perturbed_copies', type=int, default=2,
                      help='noise-injected (DART) copies of each demonstration to train on as well '
                           '(make_sample.Perturbation; --demo_dir\'s seeds regenerated with them into <workdir>/demos unless '
                           '--generate; 0: the demonstrations alone)')
  parser.add_argument('--new_seeds', type=int, default=20)
  parser.add_argument('--open_loop_steps', type=int, default=10,
                      help='closed loop: actions executed per query (the official client executes all 50; a policy '
                           'trained on 3 demos drifts off them within a chunk, replanning every 10 steps recovers)')
  parser.add_argument('--raw_vae', action='store_true',
                      help="train with the variant's VAE as it is (default: its latents standardised per channel on "
                           'the demonstrations, <workdir>/vae_standardised.safetensors; see standardised_vae)')
  parser.add_argument('--skip_training', action='store_true', help='evaluate the latest checkpoint only')
  parser.add_argument('--reuse_evaluations', action='store_true',
                      help='with --skip_training: read closed-loop summaries already made for this checkpoint')
  parser.add_argument('--train_override', action='append', default=[],
                      help='extra trainer flag, e.g. --train_override=--config.batch_size=4 (repeatable)')
  parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'learn_sim.json'))
  parser.add_argument('--media', default='',
                      help='path stem for a frame strip (.png) and GIF (.gif) of the first successful episode '
                           "('' = <workdir>/success)")
  args = parser.parse_args(argv)
  if args.image_size is None:
    args.image_size = variant_image_size(args.variant)

  workdir = pathlib.Path(args.workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  log = workdir / 'learn_sim.log'
  start = time.perf_counter()
  perturbation = make_sample.Perturbation(copies=args.perturbed_copies)
  first_seed, wanted_seeds = 0, None
  if perturbation.copies and not args.generate:  # --demo_dir's seeds again, each with its copies
    wanted_seeds = demo_seeds(args.demo_dir)
    first_seed, args.generate = min(wanted_seeds), len(wanted_seeds)
  demo_dir = (ensure_demos(workdir / 'demos', args.generate, first_seed, args.demo_image_size, log, perturbation)
              if args.generate
              else args.demo_dir)
  if wanted_seeds is not None and sorted(demo_seeds(demo_dir)) != sorted(wanted_seeds):
    raise ValueError(f'--perturbed_copies regenerates the demonstrations of {args.demo_dir} (seeds {wanted_seeds}) '
                     f'but the generator made seeds {demo_seeds(demo_dir)} in {demo_dir}; pass --perturbed_copies 0 '
                     'to train on them as they are')
  train_seeds = demo_seeds(demo_dir)
  check_demo_cameras(demo_dir)
  heldout_dir = ensure_demos(workdir / 'heldout', 1, HELDOUT_SEED, args.demo_image_size, log)
  new_seeds = list(range(NEW_SEEDS_START, NEW_SEEDS_START + args.new_seeds))
  if set(new_seeds) & set(train_seeds) or HELDOUT_SEED in train_seeds:
    raise ValueError(f'training seeds {train_seeds} overlap the held-out seed {HELDOUT_SEED} or the new seeds')

  vae = None if args.raw_vae else standardised_vae(args.variant, demo_dir, workdir / 'vae_standardised.safetensors')
  vae_flags = [f'--config.init.vae_checkpoint={vae["path"]}'] if vae else []
  train_dir = workdir / 'train'
  calls_path = workdir / 'training_calls.json'
  calls = json.loads(calls_path.read_text(encoding='utf-8')) if calls_path.exists() else []
  if not args.skip_training:
    calls.append(train(args, demo_dir, train_dir, log, vae_flags))
    calls_path.write_text(json.dumps(calls, indent=2), encoding='utf-8')
  step = latest_step(train_dir)
  curve = loss_curve(train_dir)

  runner = runner_lib.PolicyRunner.from_checkpoints(train_dir, step=step, image_size=args.image_size)
  statistics = checkpoint_lib.open_checkpoint(train_dir, step).statistics()
  chunk = layout_lib.get_layout('aloha').chunk_size
  open_loop_train = [open_loop(runner, path, args.image_size, statistics, chunk)
                     for path in scripted_demo_files(demo_dir)]
  open_loop_heldout = [open_loop(runner, path, args.image_size, statistics, chunk)
                       for path in aloha.find_episode_files(heldout_dir)]
  first_query = first_query_discrimination(runner, scripted_demo_files(demo_dir), args.image_size, chunk)
  del runner
  if first_query:
    runner = runner_lib.PolicyRunner.from_checkpoints(train_dir, step=step, image_size=args.image_size,
                                                      randomize_seed=True)
    first_query['modes'] = first_query_modes(runner, scripted_demo_files(demo_dir), args.image_size, chunk)
    del runner

  results = {
      'benchmark': 'learn_sim',
      'command': ' '.join([sys.executable, *sys.argv]) if argv is None else f'learn_sim.main({argv})',
      'machine': {'cpu_count': os.cpu_count(), 'jax_platforms': os.environ.get('JAX_PLATFORMS'),
                  'load_average': os.getloadavg()},
      'demos': {'dir': demo_dir, 'train_seeds': train_seeds, 'heldout_seed': HELDOUT_SEED,
                'made_by': simulator.read_demos_metadata(demo_dir)['transfer_cube']},
      'vae': vae,
      'training': {'variant': args.variant, 'checkpoint_step': step, 'calls': calls,
                   'wall_seconds': round(sum(c['wall_seconds'] for c in calls), 1), 'loss_curve': curve},
      'open_loop': {
          'train_frames_mean_l1': float(np.mean([r['mean_l1'] for r in open_loop_train])),
          'train_frames_mean_l1_normalised': float(np.mean([r['mean_l1_normalised'] for r in open_loop_train])),
          'heldout_frames_mean_l1': float(np.mean([r['mean_l1'] for r in open_loop_heldout])),
          'heldout_frames_mean_l1_normalised': float(np.mean([r['mean_l1_normalised'] for r in open_loop_heldout])),
          'train_frames_hold_baseline_l1': float(np.mean([r['hold_baseline_mean_l1'] for r in open_loop_train])),
          'train': open_loop_train, 'heldout': open_loop_heldout, 'first_query': first_query},
      'action_noise_tolerance': action_noise_tolerance(demo_dir),
  }
  results['closed_loop'] = {
      'train_seeds': closed_loop(args, train_dir, step, train_seeds, workdir / 'eval_train_seeds', log),
      'new_seeds': closed_loop(args, train_dir, step, new_seeds, workdir / 'eval_new_seeds', log),
  }
  results['media'] = (first_success_media(results['closed_loop']['train_seeds'],
                                         pathlib.Path(args.media or workdir / 'success'))
                      or first_success_media(results['closed_loop']['new_seeds'],
                                             pathlib.Path(args.media or workdir / 'success')))
  results['wall_seconds'] = round(time.perf_counter() - start, 1)

  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  c, o = results['closed_loop'], results['open_loop']
  print(f'\ntraining: checkpoint step {step} after {results["training"]["wall_seconds"] / 60:.1f} min in '
        f'{len(calls)} call(s); last logged loss {curve[-1]["loss"] if curve else float("nan"):.4f}')
  print(f'{"":<22}{"success":>8}{"mean max reward":>17}{"episodes":>10}')
  for name in ('train_seeds', 'new_seeds'):
    print(f'{name:<22}{c[name]["success_rate"]:>8.2f}{c[name]["mean_highest_reward"]:>17.2f}'
          f'{len(c[name]["seeds"]):>10}')
  print(f'open-loop action L1 (raw / normalised): training frames {o["train_frames_mean_l1"]:.4f} / '
        f'{o["train_frames_mean_l1_normalised"]:.4f}; held-out frames {o["heldout_frames_mean_l1"]:.4f} / '
        f'{o["heldout_frames_mean_l1_normalised"]:.4f}')
  if o['first_query']:
    q = o['first_query']
    print(f'first query (step 0, where only the images tell the demonstrations apart): L1 to its own demonstration '
          f'{q["mean_own_l1"]:.4f}, to the others {q["mean_other_l1"]:.4f}, image-blind baseline '
          f'{q["image_blind_baseline_l1"]:.4f}; prediction spread {q["prediction_spread"]:.4f} against the '
          f'demonstrations\' {q["demonstration_spread"]:.4f}')
    if q.get('modes'):
      print(f'first query, {q["modes"]["draws"]} draws per scene with fresh sampler seeds: the nearest '
            f'demonstration is the one shown in {q["modes"]["own_fraction"]:.0%} (rows shown, columns followed: '
            f'{q["modes"]["nearest_demonstration_counts"]})')
  print('replayed demonstrations with a random offset per chunk (success rate): ' + ', '.join(
      f'+-{r["scale"]:g}: {r["success_rate"]:.2f}' for r in results['action_noise_tolerance']))
  print(f'wrote {args.out}; videos under {workdir}/eval_*/videos')
  return results


if __name__ == '__main__':
  main()
