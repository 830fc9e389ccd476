"""Counter-based random numbers: the value of slice k depends only on (seed, k, stream).

splitmix64 of ``seed + (k * 2 + stream) * golden`` gives 64 well-mixed bits per (slice, stream),
turned into a double in [0, 1) from its top 53 bits. No generator state exists, so any worker
can compute any slice's value, in any order, and get the same number. Normal variates use
Box-Muller on streams 0 and 1. `uniform` runs numpy, or the numba kernel for large batches
where config.numba_wanted(); both produce identical bits (tested).
"""
from __future__ import annotations

import numpy as np

from . import config

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def _uniform_numpy(seed: np.uint64, first: int, count: int, stream: int) -> np.ndarray:
    # in place: two uint64 arrays in all, where the expression form made a temporary per step
    z = np.arange(first, first + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z *= np.uint64(2)
        z += np.uint64(stream)
        z *= GOLDEN
        z += seed
        t = z >> _S30
        z ^= t
        z *= _M1
        np.right_shift(z, _S27, out=t)
        z ^= t
        z *= _M2
        np.right_shift(z, _S31, out=t)
        z ^= t
        z >>= _S11
    out = z.astype(np.float64)
    out *= _TO_UNIT
    return out


def _uniform_loop(seed, first, count, stream, out):  # compiled by numba (see config.jit)
    for i in range(count):
        z = seed + (np.uint64(first + i) * np.uint64(2) + np.uint64(stream)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out[i] = np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def uniform(seed: int, first: int, count: int, stream: int = 0, use_numba: bool = None) -> np.ndarray:
    """Doubles in [0, 1) for slices first..first+count-1 of ``seed``'s stream ``stream``."""
    seed64 = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    if use_numba is None:
        use_numba = count >= config.NUMBA_MIN_ELEMENTS and config.numba_wanted()
    if not use_numba:
        return _uniform_numpy(seed64, first, count, stream)
    out = np.empty(count, dtype=np.float64)
    config.jit(_uniform_loop)(seed64, np.int64(first), np.int64(count), np.int64(stream), out)
    return out


def normal(seed: int, first: int, count: int, use_numba: bool = None) -> np.ndarray:
    """Standard normal variates by slice index (Box-Muller on streams 0 and 1)."""
    u1 = uniform(seed, first, count, 0, use_numba)
    u2 = uniform(seed, first, count, 1, use_numba)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def from_table(u: np.ndarray, low: int, cdf: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling of a discrete distribution tabulated as ``cdf`` over low, low+1, …"""
    return low + np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
