"""The tie-tolerant comparison of tests/parity.py on constructed inputs, where float32 and float64 round differently."""

import numpy as np
import pytest

from tests import parity

ULP = 2.0**-24


def _coordinates():
  """Source coordinates of 16 nearest-neighbour lookups: three lie within float32 rounding of a half-integer, where
  the float32 value is the tie itself (round half to even) but the float64 value is on the other side."""
  coords = np.linspace(0.2, 14.7, 16)  # fractional parts .2 .. .97, none within 1e-3 of .5
  coords[3] = 6.5 + 1e-7   # float32 6.5 -> 6, float64 -> 7
  coords[8] = 9.5 - 2e-7   # float32 9.5 -> 10, float64 -> 9
  coords[12] = 2.5 + 1e-7  # float32 2.5 -> 2, float64 -> 3
  return coords


def _lookups(coords):
  table = np.arange(100, 116, dtype=np.uint8)
  nearest32 = table[np.rint(coords.astype(np.float32)).astype(np.int64)]
  nearest64 = table[np.rint(coords).astype(np.int64)]
  return nearest32, nearest64


def test_near_rounding_tie_flags_exactly_the_coordinates_float32_rounds_differently():
  coords = _coordinates()
  nearest32, nearest64 = _lookups(coords)
  assert list(np.flatnonzero(nearest32 != nearest64)) == [3, 8, 12]  # the construction does what it says
  ties = parity.near_rounding_tie(coords, 8 * ULP * 16)
  assert list(np.flatnonzero(ties)) == [3, 8, 12]
  assert not parity.near_rounding_tie(coords, 1e-8).any()  # a tolerance below the offsets flags nothing
  assert parity.near_rounding_tie(np.array([0.5, -0.5, 3.5, 3.4999]), 0.0).tolist() == [True, True, True, False]


def test_differences_are_allowed_only_at_ties_and_only_as_many_as_the_bound():
  coords = _coordinates()
  nearest32, nearest64 = _lookups(coords)
  ties = parity.near_rounding_tie(coords, 8 * ULP * 16)
  neighbours = np.abs(nearest32.astype(int) - nearest64.astype(int)) <= 1
  assert parity.assert_equal_away_from_ties(nearest32, nearest64, ties, name='lookup', max_tie_fraction=0.25,
                                            tie_ok=neighbours) == (3, 3)

  off_tie = nearest32.copy()
  off_tie[5] += 1  # a coordinate far from any tie gives a different pixel: a real error
  with pytest.raises(AssertionError, match=r'1 differ away from any tie, first at \(5,\): 106 vs 105'):
    parity.assert_equal_away_from_ties(off_tie, nearest64, ties, name='lookup', max_tie_fraction=0.25)

  far = nearest32.copy()
  far[8] += 5  # at a tie, but not one of the two neighbours
  with pytest.raises(AssertionError, match='differ by more than its rounding allows'):
    parity.assert_equal_away_from_ties(far, nearest64, ties, name='lookup', max_tie_fraction=0.25,
                                       tie_ok=np.abs(far.astype(int) - nearest64.astype(int)) <= 1)

  with pytest.raises(AssertionError, match='3 of 16 values.*more than the bound'):
    parity.assert_equal_away_from_ties(nearest32, nearest64, ties, name='lookup', max_tie_fraction=0.1)
  with pytest.raises(AssertionError, match='shape'):
    parity.assert_equal_away_from_ties(nearest32[:3], nearest64, ties, name='lookup', max_tie_fraction=0.25)
