"""Range expansion: slice index -> value, exactly, in bulk.

A range is ``start + k*step`` for k in [0, count). Integer ranges need no arithmetic here (a
Python ``range`` is exact at any size). Decimal ranges are written over a common denominator,
value_k = (a + k*b) / d with integers a, b, d: while |a + k*b| and d stay below 2**53 both are
exact doubles, and IEEE-754 division is correctly rounded, so ``float64(n) / float64(d)`` is
exactly the float nearest the true decimal value — what the spec's BigNumber arithmetic promises,
at numpy speed. Beyond 2**53 the caller falls back to exact Fractions.
"""
from __future__ import annotations

import numpy as np

EXACT_LIMIT = 2 ** 53


def decimal_values(a: int, b: int, d: int, first: int, count: int) -> np.ndarray:
    """float64 values (a + k*b)/d for k in [first, first+count); caller checks ``fits_exactly``."""
    k = np.arange(first, first + count, dtype=np.int64)
    return (a + k * b).astype(np.float64) / np.float64(d)


def fits_exactly(a: int, b: int, d: int, last_index: int) -> bool:
    """Whether every numerator up to ``last_index`` and ``d`` are exactly representable doubles."""
    return d < EXACT_LIMIT and abs(a) < EXACT_LIMIT and abs(a + last_index * b) < EXACT_LIMIT


def unravel(indices: np.ndarray, shape: tuple) -> list:
    """Per-dimension index arrays for flat ``indices`` of a row-major (rightmost fastest) grid."""
    return list(np.unravel_index(indices, shape))


def sparse_locate(offsets: np.ndarray, indices: np.ndarray) -> tuple:
    """For flat ``indices`` into concatenated ranges starting at ``offsets``: (range, local index)."""
    which = np.searchsorted(offsets, indices, side="right") - 1
    return which, indices - offsets[which]
