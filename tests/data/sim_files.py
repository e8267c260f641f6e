"""Writers of small LIBERO / RoboCasa files in the official layouts (robomimic `data/demo_<k>` demo files from the
official regenerate scripts, and the flat rollout files of the official eval data collection), for the tests."""

import io

import h5py
import numpy as np
from PIL import Image

JPEG = h5py.vlen_dtype(np.dtype('uint8'))


def frames(num_steps, camera, size=20):
  """Solid colours distinct per step and camera (visible through JPEG and resizing)."""
  t = np.arange(num_steps)[:, None]
  colours = np.concatenate([(t * 9 + 70 * camera) % 256, (t * 5 + 60) % 256, np.full_like(t, 50 * camera + 20)], 1)
  return np.broadcast_to(colours[:, None, None, :].astype(np.uint8), (num_steps, size, size, 3)).copy()


def jpeg_dataset(images):
  data = np.empty(len(images), object)  # a plain list of equal-length byte arrays would become a 2-D array
  for i, image in enumerate(images):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='JPEG', quality=95)
    data[i] = np.frombuffer(buffer.getvalue(), np.uint8)
  return data


def put_images(group, name, images, jpeg):
  if jpeg:
    group.create_dataset(f'{name}_jpeg', data=jpeg_dataset(images), dtype=JPEG)
  else:
    group.create_dataset(name, data=images)


def write_demo_file(path, demos, cameras, *, action_dim, task_attr=None):
  """`demos`: {demo_key: (num_steps, jpeg)}; `cameras`: obs dataset names in camera order (colour index)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, 'w') as f:
    data = f.create_group('data')
    for key, (num_steps, jpeg) in demos.items():
      rng = np.random.default_rng(int(key.split('_')[1]))
      demo = data.create_group(key)
      obs = demo.create_group('obs')
      for c, name in enumerate(cameras):
        put_images(obs, name, frames(num_steps, c), jpeg)
      obs['gripper_states'] = rng.uniform(size=(num_steps, 2))
      demo['actions'] = rng.uniform(-1, 1, (num_steps, action_dim))
      demo['robot_states'] = rng.uniform(-1, 1, (num_steps, 9))
      demo['states'] = rng.uniform(size=(num_steps, 5))
      rewards = np.zeros(num_steps, np.uint8)
      rewards[-1] = 1
      demo['rewards'] = rewards
      demo['dones'] = rewards
      if task_attr is not None:
        demo.attrs['task_description'] = task_attr
  return path


def write_rollout_file(path, num_steps, cameras, *, action_dim, task, success, jpeg=True, frame_steps=None):
  """Flat rollout file as the official data collection writes it: images (`<key>_jpeg` if compressed), proprio,
  actions, then scalars (success) as attrs, then attrs['task_description']."""
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(num_steps)
  with h5py.File(path, 'w') as f:
    for c, name in enumerate(cameras):
      put_images(f, name, frames(frame_steps or num_steps, c), jpeg)
    f['proprio'] = rng.uniform(-1, 1, (num_steps, 9)).astype(np.float32)
    f['actions'] = rng.uniform(-1, 1, (num_steps, action_dim)).astype(np.float32)
    f.attrs['success'] = success
    f.attrs['task_description'] = task
  return path
