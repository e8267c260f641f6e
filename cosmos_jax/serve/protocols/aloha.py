"""The ALOHA request protocol of the official server (NVlabs/cosmos-policy 18a2acc,
cosmos_policy/experiments/robot/aloha/deploy.py:PolicyServer.get_server_action), which the official client
(run_aloha_eval.py) speaks.

Request: `primary_image`, `left_wrist_image`, `right_wrist_image` uint8 [H, W, 3] of any size, resized to the
model's S x S as the official server resizes to 224 (or nested lists of integers in [0, 255], as the official
server accepts), `proprio` [14] raw joint positions, `task_description` (a task with a
text embedding), optional `return_all_query_results`; `proprio_history` / `images_history` may be sent and are
ignored, as the official server ignores them.

Response: `actions` [chunk, 14] float64 un-normalised, `future_image_predictions` {'future_image',
'future_wrist_image', 'future_wrist_image2'} uint8, `value_prediction` and its alias `value_predictions` (the
official client reads the plural), `chosen_candidate` with planning, and with `return_all_query_results` the
`all_*` lists (`all_future_image_predictions_by_depth`: one entry per world-model query of the search, `[[]]` for
a plain query, as the official server); plus our `timing` (seconds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cosmos_jax.data import decode
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.policy import inference
from cosmos_jax.policy import layout as layout_lib
from cosmos_jax.policy import normalization
from cosmos_jax.serve.protocols import base

# Fields the official client may send that the official server ignores.
IGNORED_FIELDS = ('proprio_history', 'images_history')
RETURN_ALL_FIELD = 'return_all_query_results'
# A proprio value is refused when it lies further outside the training range [min, max] than this many range
# widths (min-max normalised value outside [-1 - 2m, 1 + 2m]): a unit mix-up or a corrupted reading, not a state.
DEFAULT_PROPRIO_MARGIN = 1.0


class AlohaProtocol(base.RobotProtocol):
  """Validation and response formatting for the ALOHA layout at one image size."""

  name = 'aloha'  # also the slot layout's name
  proprio_description = 'raw ALOHA qpos'

  def __init__(self, *, image_size: int, statistics: Mapping[str, Any], tasks: Sequence[str],
               proprio_margin: float | None = DEFAULT_PROPRIO_MARGIN, accept_new_tasks: bool = False):
    """`tasks`: those with a text embedding; `accept_new_tasks`: any task passes (the policy encodes new ones)."""
    self.layout = layout_lib.get_layout(self.name)
    stats_lib.validate_statistics(statistics, source='statistics')
    self.statistics = {k: np.asarray(v, np.float64) for k, v in statistics.items()}
    if self.statistics['proprio_min'].shape != (self.layout.proprio_dim,):
      raise ValueError(f'proprio statistics have shape {self.statistics["proprio_min"].shape}, the {self.name} '
                       f'protocol needs ({self.layout.proprio_dim},)')
    self.image_size = image_size
    self._tasks = tuple(tasks)
    self.proprio_margin = proprio_margin
    self.accept_new_tasks = accept_new_tasks
    # Request field -> layout camera stem, in the official camera order (left wrist, right wrist, primary).
    self.image_fields = {field: camera for camera, field in inference.observation_image_fields(self.layout).items()}

  @property
  def tasks(self) -> tuple[str, ...]:
    """The tasks with a text embedding when the protocol was made (the query's store may grow)."""
    return self._tasks

  def metadata(self) -> dict:
    layout = self.layout
    return {
        'protocol': self.name,
        'layout': layout.name,
        'image_fields': {field: [self.image_size, self.image_size, 3] for field in self.image_fields},
        'image_input_size': self.image_size,  # any (H, W, 3) is accepted and resized to this size
        'image_dtype': 'uint8',
        'proprio_dim': layout.proprio_dim,
        'action_dim': layout.action_dim,
        'chunk_size': layout.chunk_size,
        'open_loop_steps': layout.open_loop_steps,
    }

  def example_request(self, task: str | None = None) -> dict:
    size = self.image_size
    request = {field: np.zeros((size, size, 3), np.uint8) for field in self.image_fields}
    request.update(proprio=0.5 * (self.statistics['proprio_min'] + self.statistics['proprio_max']),
                   task_description=task or self._tasks[0])
    return request

  # Validation ---------------------------------------------------------------------------------------------------

  def validate(self, request: Any) -> base.Observation:
    if not isinstance(request, Mapping):
      raise base.InvalidObservation('the request must be a JSON object of observation fields, got '
                                    f'{type(request).__name__}')
    required = tuple(self.image_fields) + ('proprio', 'task_description')
    missing = [f for f in required if f not in request]
    if missing:
      raise base.InvalidObservation(f'missing field(s) {missing}; a request needs {list(required)} (optional: '
                                    f'{RETURN_ALL_FIELD!r})')
    known = set(required) | {RETURN_ALL_FIELD} | set(IGNORED_FIELDS)
    unknown = sorted(str(k) for k in request if k not in known)
    if unknown:
      raise base.InvalidObservation(f'unknown field(s) {unknown}; known fields: {sorted(known)}')
    images = {camera: self._check_image(field, request[field]) for field, camera in self.image_fields.items()}
    proprio = self._check_proprio(request['proprio'])
    task = request['task_description']
    if not isinstance(task, str):
      raise base.InvalidObservation(f"'task_description' must be a string, got {type(task).__name__}")
    if task not in self._tasks and not self.accept_new_tasks:
      raise base.InvalidObservation(f'unknown task {task!r}: no text embedding for it; known tasks: '
                                    f'{list(self._tasks)} (serve with a T5 encoder, --config.model.t5, to encode '
                                    'new ones)')
    return_all = request.get(RETURN_ALL_FIELD, False)
    if isinstance(return_all, np.ndarray) and return_all.shape == () and return_all.dtype == np.bool_:
      return_all = bool(return_all)
    if not isinstance(return_all, (bool, np.bool_)):
      raise base.InvalidObservation(f'{RETURN_ALL_FIELD!r} must be a boolean, got {return_all!r}')
    return base.Observation(images, proprio, task, bool(return_all))

  def _check_image(self, field: str, value: Any) -> np.ndarray:
    """A valid (H, W, 3) uint8 image, then `_prepare_image` (each protocol's own preprocessing)."""
    expected = '(H, W, 3)'
    if isinstance(value, np.ndarray):
      array = value
    elif isinstance(value, (list, tuple)):
      try:
        array = np.asarray(value)
      except ValueError as e:
        raise base.InvalidObservation(f'{field!r}: a ragged nested list, not a {expected} image ({e})') from None
    else:
      raise base.InvalidObservation(f'{field!r} must be a uint8 array {expected}, got {type(value).__name__}')
    if array.ndim != 3 or array.shape[-1] != 3:
      raise base.InvalidObservation(f'{field!r} must have shape (H, W, 3) (RGB; resized to {self.image_size}x'
                                    f'{self.image_size}), got {array.shape}')
    if not all(base.MIN_IMAGE_SIDE <= side <= base.MAX_IMAGE_SIDE for side in array.shape[:2]):
      raise base.InvalidObservation(f'{field!r} has size {array.shape[:2]}; each side must lie in '
                                    f'[{base.MIN_IMAGE_SIDE}, {base.MAX_IMAGE_SIDE}]')
    if array.dtype != np.uint8:
      # Plain nested lists are accepted as the official server accepts them, but only when the values are exactly
      # representable as uint8: a float image or an out-of-range value is refused, not silently wrapped.
      if not (np.issubdtype(array.dtype, np.integer) and isinstance(value, (list, tuple))):
        raise base.InvalidObservation(f'{field!r} must have dtype uint8, got {array.dtype}')
      lo, hi = int(array.min()), int(array.max())
      if lo < 0 or hi > 255:
        raise base.InvalidObservation(f'{field!r} values must lie in [0, 255], got range [{lo}, {hi}]')
      array = array.astype(np.uint8)
    return self._prepare_image(array)

  def _prepare_image(self, image: np.ndarray) -> np.ndarray:
    return self._resized(image)

  def _resized(self, image: np.ndarray) -> np.ndarray:
    """The policy input size, as the official server's resize_images (PIL's default filter; the image itself
    when it has that size)."""
    if image.shape[:2] == (self.image_size, self.image_size):
      return image
    return decode.resize_square(image[None], self.image_size)[0]

  def _check_proprio(self, value: Any) -> np.ndarray:
    dim = self.layout.proprio_dim
    if isinstance(value, (list, tuple)):
      try:
        value = np.asarray(value)
      except ValueError as e:
        raise base.InvalidObservation(f"'proprio': a ragged list ({e})") from None
    if not isinstance(value, np.ndarray):
      raise base.InvalidObservation(f"'proprio' must be a float array of shape ({dim},), got "
                                    f'{type(value).__name__}')
    if value.shape != (dim,):
      raise base.InvalidObservation(f"'proprio' must have shape ({dim},) ({self.proprio_description}), got "
                                    f'{value.shape}')
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
      raise base.InvalidObservation(f"'proprio' must be a float array, got dtype {value.dtype}")
    proprio = value.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(proprio))
    if bad.size:
      raise base.InvalidObservation(f"'proprio' has non-finite values at index {bad.tolist()}: "
                                    f'{proprio[bad].tolist()}')
    if self.proprio_margin is not None:
      normalized = normalization.normalize(proprio, self.statistics, 'proprio')
      limit = 1.0 + 2.0 * self.proprio_margin
      out = np.flatnonzero(np.abs(normalized) > limit)
      if out.size:
        lo, hi = self.statistics['proprio_min'], self.statistics['proprio_max']
        details = ', '.join(f'[{i}] = {proprio[i]:.4g} (training range [{lo[i]:.4g}, {hi[i]:.4g}])' for i in out)
        raise base.InvalidObservation(f"'proprio' is far outside the training range (more than "
                                      f'{self.proprio_margin} range widths): {details}')
    return proprio

  # Response -----------------------------------------------------------------------------------------------------

  def response(self, result: base.QueryResult) -> dict:
    out = {'actions': result.actions, 'future_image_predictions': result.future_images,
           'value_prediction': result.value, 'value_predictions': result.value}
    if result.chosen_candidate is not None:
      out['chosen_candidate'] = result.chosen_candidate
    if result.all_actions is not None:
      out.update(all_actions=result.all_actions, all_future_image_predictions=result.all_future_images,
                 all_value_predictions=result.all_values, all_actions_by_depth=result.all_actions_by_depth,
                 all_value_predictions_by_depth=result.all_values_by_depth,
                 # Official: an empty list per candidate when no world-model query ran.
                 all_future_image_predictions_by_depth=(result.all_future_images_by_depth
                                                        if result.all_future_images_by_depth is not None
                                                        else [[] for _ in result.all_actions]))
    out['timing'] = result.timing
    return out
