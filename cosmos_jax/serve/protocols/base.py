"""What every robot request protocol shares: the validated observation it produces, the query result it formats,
and the interface the runner calls.

A protocol turns a decoded request (a mapping of numpy arrays, strings and booleans, as the codecs produce it)
into an `Observation` in model terms, or refuses it with `InvalidObservation` naming the field, the expected and
the received value; and turns a `QueryResult` back into the response fields its clients read. It is pure numpy,
so the servers run it on the event loop before a request is queued.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


# Camera images of any size in this range are accepted and resized to the policy input size, as the official
# servers resize whatever they receive (resize_images to COSMOS_IMAGE_SIZE).
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 16, 2048


class InvalidObservation(ValueError):
  """A request that fails validation (the servers answer it with a client error and keep serving)."""


@dataclasses.dataclass(frozen=True)
class Observation:
  """A validated request: uint8 [S, S, 3] images per layout camera stem, raw proprio float64 [P], the task."""

  camera_images: Mapping[str, np.ndarray]
  proprio: np.ndarray
  task: str
  return_all_query_results: bool = False


@dataclasses.dataclass
class QueryResult:
  """One answered query in model terms: un-normalised float64 actions, values in [0, 1], decoded future images
  {'future_<camera stem>': uint8 [S, S, 3]} (None when not decoded).

  The `all_*` fields are filled when the observation asked for every query result: one entry per candidate (one
  candidate without planning), and per search depth in the `*_by_depth` lists (None where not kept).
  """

  actions: np.ndarray
  value: float
  future_images: dict[str, np.ndarray] | None
  timing: dict[str, float]
  chosen_candidate: int | None = None  # best-of-N planning only
  all_actions: list[np.ndarray] | None = None
  all_values: list[float] | None = None
  all_future_images: list[dict[str, np.ndarray] | None] | None = None
  all_actions_by_depth: list[list[np.ndarray]] | None = None
  all_values_by_depth: list[list[float]] | None = None
  all_future_images_by_depth: list[list[dict[str, np.ndarray] | None]] | None = None


class RobotProtocol(abc.ABC):
  """A benchmark's request and response format (ALOHA now; LIBERO and RoboCasa are siblings of `aloha.py`)."""

  name: str

  @abc.abstractmethod
  def validate(self, request: Any) -> Observation:
    """The observation of a decoded request; raises InvalidObservation naming the first problem found."""

  @abc.abstractmethod
  def response(self, result: QueryResult) -> dict:
    """The response fields the protocol's clients read (numpy arrays, floats, lists, dicts; `timing` included)."""

  @abc.abstractmethod
  def metadata(self) -> dict:
    """What a client needs to know to build requests (image fields and sizes, proprio size, chunking); the
    tasks come from the query (its text store may grow)."""

  @abc.abstractmethod
  def example_request(self, task: str | None = None) -> dict:
    """A valid request with neutral values (warm-up compiles every program with it)."""

  @property
  @abc.abstractmethod
  def tasks(self) -> Sequence[str]:
    """The task descriptions the policy has text embeddings for."""
