"""The LIBERO request protocol: what the official LIBERO evaluation (NVlabs/cosmos-policy 18a2acc,
experiments/robot/libero/run_libero_eval.py) hands to `cosmos_utils.get_action`, sent over the wire.

Request: `primary_image` (agentview) and `wrist_image` (eye in hand) uint8 [H, W, 3] of any size (the simulator
renders 256 x 256), already flipped upside down by the client as the official evaluation loop does
(`np.flipud`, its `flip_images`); `proprio` [9] = gripper qpos (2), end-effector position (3), quaternion (4);
`task_description` (the task's language); optional `return_all_query_results`.

Preprocessing here, as `get_action` -> `prepare_images_for_model` does it: JPEG round trip at quality 95
(`use_jpeg_compression`), resize to the policy input size (224), then the query's test-time crop; proprio min-max
normalised (`normalize_proprio`); actions un-normalised (`unnormalize_actions`).

Response as ALOHA's: `actions` [16, 7] float64 (the whole chunk; the official loop executes all 16), decoded
`future_image_predictions` {'future_wrist_image', 'future_image'}, `value_prediction(s)`, `timing`.
"""

from __future__ import annotations

import numpy as np

from cosmos_jax.data import decode
from cosmos_jax.serve.protocols import aloha

JPEG_QUALITY = 95  # official use_jpeg_compression quality
DUMMY_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # official get_libero_dummy_action: hold still, gripper open

# The language of every task of the four standard suites (LIBERO benchmark task order 0): the tiny policy's
# stand-in text store holds these, so an evaluation of any task runs without T5.
SUITE_TASKS = {
    'libero_spatial': (
        'pick up the black bowl between the plate and the ramekin and place it on the plate',
        'pick up the black bowl next to the ramekin and place it on the plate',
        'pick up the black bowl from table center and place it on the plate',
        'pick up the black bowl on the cookie box and place it on the plate',
        'pick up the black bowl in the top drawer of the wooden cabinet and place it on the plate',
        'pick up the black bowl on the ramekin and place it on the plate',
        'pick up the black bowl next to the cookie box and place it on the plate',
        'pick up the black bowl on the stove and place it on the plate',
        'pick up the black bowl next to the plate and place it on the plate',
        'pick up the black bowl on the wooden cabinet and place it on the plate',
    ),
    'libero_object': (
        'pick up the alphabet soup and place it in the basket',
        'pick up the cream cheese and place it in the basket',
        'pick up the salad dressing and place it in the basket',
        'pick up the bbq sauce and place it in the basket',
        'pick up the ketchup and place it in the basket',
        'pick up the tomato sauce and place it in the basket',
        'pick up the butter and place it in the basket',
        'pick up the milk and place it in the basket',
        'pick up the chocolate pudding and place it in the basket',
        'pick up the orange juice and place it in the basket',
    ),
    'libero_goal': (
        'open the middle drawer of the cabinet',
        'put the bowl on the stove',
        'put the wine bottle on top of the cabinet',
        'open the top drawer and put the bowl inside',
        'put the bowl on top of the cabinet',
        'push the plate to the front of the stove',
        'put the cream cheese in the bowl',
        'turn on the stove',
        'put the bowl on the plate',
        'put the wine bottle on the rack',
    ),
    'libero_10': (
        'put both the alphabet soup and the tomato sauce in the basket',
        'put both the cream cheese box and the butter in the basket',
        'turn on the stove and put the moka pot on it',
        'put the black bowl in the bottom drawer of the cabinet and close it',
        'put the white mug on the left plate and put the yellow and white mug on the right plate',
        'pick up the book and place it in the back compartment of the caddy',
        'put the white mug on the plate and put the chocolate pudding to the right of the plate',
        'put both the alphabet soup and the cream cheese box in the basket',
        'put both moka pots on the stove',
        'put the yellow and white mug in the microwave and close it',
    ),
}
ALL_TASKS = tuple(task for tasks in SUITE_TASKS.values() for task in tasks)


def jpeg_round_trip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
  """The official `apply_jpeg_compression_np`: encode and decode one uint8 [H, W, 3] frame."""
  return decode.decode_jpeg(decode.encode_jpeg(image, quality=quality))


def prepare_camera_image(image: np.ndarray, size: int, *, jpeg: bool = True) -> np.ndarray:
  """A raw (already flipped) camera frame -> the policy input [size, size, 3] (`prepare_images_for_model`
  without augmentation: JPEG q95 round trip, then resize)."""
  if jpeg:
    image = jpeg_round_trip(image)
  return decode.resize_square(image[None], size)[0]


class LiberoProtocol(aloha.AlohaProtocol):
  """Validation, official preprocessing and response formatting for the LIBERO layout."""

  name = 'libero'
  proprio_description = 'gripper qpos (2), end-effector position (3) and quaternion (4)'

  def __init__(self, *, image_size: int, jpeg_compression: bool = True, **kwargs):
    """`jpeg_compression`: the official `use_jpeg_compression` (on for the released LIBERO/RoboCasa policies)."""
    super().__init__(image_size=image_size, **kwargs)
    self.jpeg_compression = jpeg_compression

  def metadata(self) -> dict:
    meta = super().metadata()
    meta.update(image_fields={field: ['H', 'W', 3] for field in self.image_fields}, image_input_size=self.image_size,
                images_flipped_by_client=True, jpeg_quality=JPEG_QUALITY if self.jpeg_compression else None)
    return meta

  def example_request(self, task: str | None = None) -> dict:
    request = super().example_request(task)
    for field in self.image_fields:  # the simulator's own size, so warm-up exercises the resize
      request[field] = np.zeros((256, 256, 3), np.uint8)
    return request

  def _prepare_image(self, image: np.ndarray) -> np.ndarray:
    return prepare_camera_image(np.ascontiguousarray(image), self.image_size, jpeg=self.jpeg_compression)
