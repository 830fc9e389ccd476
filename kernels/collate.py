"""Result collation: scatter a batch into a typed result array, and find runs in the done-mask.

Batches cover contiguous slot ranges, so a scatter is one vectorised copy plus a count of the
slots that were not filled before (a re-run slice is counted as a duplicate, not twice).
"""
from __future__ import annotations

import numpy as np


def scatter(dst: np.ndarray, done: np.ndarray, first: int, src: np.ndarray) -> int:
    """Copy ``src`` into ``dst[first:…]``, mark those slots done; return how many were new."""
    end = first + len(src)
    new = len(src) - int(np.count_nonzero(done[first:end]))
    dst[first:end] = src
    done[first:end] = True
    return new


def done_runs(done: np.ndarray) -> np.ndarray:
    """``[start, stop)`` rows of every run of True in ``done`` (shape (k, 2), int64)."""
    edges = np.diff(np.concatenate(([0], done.astype(np.int8), [0])))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1).astype(np.int64)
