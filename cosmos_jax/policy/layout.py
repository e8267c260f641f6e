"""Which latent slot holds what, per benchmark: one table (official
cosmos_policy/datasets/aloha_dataset.py:ALOHADataset.__getitem__ and its LIBERO / RoboCasa twins).

A *slot* is one latent frame (one index along T). Every benchmark uses the same sequence grammar:

  blank | current proprio | current images | action | future proprio | future images | value

and differs only in the cameras, the vector sizes and the number of conditioning slots. `SlotLayout` holds those
facts; every other module (slot injection, masks, queries, planning) derives indices from it, so there is one code
path for ALOHA, LIBERO and RoboCasa.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cosmos_jax.nn import vae as vae_lib

BLANK = 'blank'
CURRENT_PROPRIO = 'current_proprio'
ACTION = 'action'
FUTURE_PROPRIO = 'future_proprio'
VALUE = 'value'


@dataclasses.dataclass(frozen=True)
class SlotLayout:
  """The latent sequence of one benchmark.

  Attributes:
    name: benchmark name ('aloha', 'libero', 'robocasa').
    cameras: the camera items in slot order; slot names are `current_<camera>` and `future_<camera>`, using the
      official batch-key stems (`wrist_image`, `wrist_image2`, `image`, `image2`).
    camera_sources: the observation / dataset camera each stem stands for, in the same order (documentation and
      data-pipeline lookups).
    action_dim, chunk_size: the action chunk is (chunk_size, action_dim), flattened row-major before injection.
    proprio_dim: length of the proprio vector (current and future).
    num_conditional: the policy's `min_num_conditional_frames` (= max): slots 0..num_conditional-1 are given.
    gamma: discount of the Monte-Carlo value target.
    open_loop_steps: actions executed per query at evaluation.
  """

  name: str
  cameras: tuple[str, ...]
  camera_sources: tuple[str, ...]
  action_dim: int
  chunk_size: int
  proprio_dim: int
  num_conditional: int
  gamma: float
  open_loop_steps: int

  def __post_init__(self):
    if len(self.cameras) != len(self.camera_sources):
      raise ValueError(f'{self.name}: {len(self.cameras)} cameras but {len(self.camera_sources)} camera sources')
    if self.num_conditional != 2 + len(self.cameras):
      raise ValueError(f'{self.name}: num_conditional {self.num_conditional} must cover blank + proprio + '
                       f'{len(self.cameras)} current images = {2 + len(self.cameras)}')

  @property
  def slots(self) -> tuple[str, ...]:
    """Slot names; the index of a name is its latent T index."""
    return ((BLANK, CURRENT_PROPRIO) + tuple(f'current_{c}' for c in self.cameras) + (ACTION, FUTURE_PROPRIO) +
            tuple(f'future_{c}' for c in self.cameras) + (VALUE,))

  @property
  def state_t(self) -> int:
    """Number of latent frames."""
    return len(self.slots)

  @property
  def pixel_frames(self) -> int:
    """Pixel frames fed to the VAE: one blank frame plus 4 per further slot."""
    return vae_lib.pixel_frames(self.state_t)

  @property
  def action_elements(self) -> int:
    return self.action_dim * self.chunk_size

  def index(self, slot: str) -> int:
    try:
      return self.slots.index(slot)
    except ValueError:
      raise ValueError(f'{self.name} layout has no slot {slot!r}; slots are {self.slots}') from None

  def latent_indices(self) -> dict[str, int]:
    """The official batch's `<name>_latent_idx` entries (-1 for an absent item, as the official code uses)."""
    names = ('current_proprio', 'current_wrist_image', 'current_wrist_image2', 'current_image', 'current_image2',
             'action', 'future_proprio', 'future_wrist_image', 'future_wrist_image2', 'future_image',
             'future_image2', 'value')
    return {f'{n}_latent_idx': (self.slots.index(n) if n in self.slots else -1) for n in names}

  @property
  def current_state_slots(self) -> tuple[int, ...]:
    """Current proprio and current images (slots 1..num_conditional-1)."""
    return tuple(range(1, self.num_conditional))

  @property
  def future_state_slots(self) -> tuple[int, ...]:
    """Future proprio and future images, in the same order as `current_state_slots`."""
    start = self.index(FUTURE_PROPRIO)
    return tuple(range(start, start + len(self.current_state_slots)))

  @property
  def current_image_slots(self) -> tuple[int, ...]:
    return tuple(self.index(f'current_{c}') for c in self.cameras)

  @property
  def future_image_slots(self) -> tuple[int, ...]:
    return tuple(self.index(f'future_{c}') for c in self.cameras)

  @property
  def injected_slots(self) -> tuple[int, ...]:
    """Slots whose latents are overwritten by vectors, except the value slot: restored from the pre-injection
    latent before decoding future images (official INDICES_TO_REPLACE: ALOHA/RoboCasa [0, 1, 5, 6], LIBERO
    [0, 1, 4, 5])."""
    return (0, self.index(CURRENT_PROPRIO), self.index(ACTION), self.index(FUTURE_PROPRIO))

  def pixel_frame_of(self, slot: int) -> int:
    """First decoded pixel frame of a slot ((k-1)*4+1; official `get_future_images_from_generated_samples`)."""
    if not 1 <= slot < self.state_t:
      raise ValueError(f'{self.name}: slot {slot} has no pixel frame (valid 1..{self.state_t - 1})')
    return (slot - 1) * vae_lib.TEMPORAL_COMPRESSION + 1


# The one table. Values from the official experiment configs
# (cosmos_policy/config/experiment/cosmos_policy_experiment_configs.py) and the datasets' slot order.
LAYOUTS: dict[str, SlotLayout] = {
    'aloha': SlotLayout(
        name='aloha',
        cameras=('wrist_image', 'wrist_image2', 'image'),
        camera_sources=('cam_left_wrist', 'cam_right_wrist', 'cam_high'),
        action_dim=14, chunk_size=50, proprio_dim=14, num_conditional=5, gamma=0.998, open_loop_steps=50),
    'libero': SlotLayout(
        name='libero',
        cameras=('wrist_image', 'image'),
        camera_sources=('eye_in_hand_rgb', 'agentview_rgb'),
        action_dim=7, chunk_size=16, proprio_dim=9, num_conditional=4, gamma=0.99, open_loop_steps=16),
    'robocasa': SlotLayout(
        name='robocasa',
        cameras=('wrist_image', 'image', 'image2'),
        camera_sources=('robot0_eye_in_hand_rgb', 'robot0_agentview_left_rgb', 'robot0_agentview_right_rgb'),
        action_dim=7, chunk_size=32, proprio_dim=9, num_conditional=5, gamma=0.99, open_loop_steps=16),
}


def get_layout(name: str) -> SlotLayout:
  try:
    return LAYOUTS[name]
  except KeyError:
    raise ValueError(f'unknown layout {name!r}; known: {sorted(LAYOUTS)}') from None


def check_latent(layout: SlotLayout, latent_shape: Sequence[int]) -> None:
  """A channels-last latent [B, T, H, W, C] must have one frame per slot of the layout."""
  if len(latent_shape) != 5:
    raise ValueError(f'latent must be [B, T, H, W, C], got shape {tuple(latent_shape)}')
  if latent_shape[1] != layout.state_t:
    raise ValueError(f'{layout.name} layout has {layout.state_t} slots but the latent has T={latent_shape[1]} '
                     f'frames (shape {tuple(latent_shape)}, channels-last [B, T, H, W, C])')
