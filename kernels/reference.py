"""Slow, obviously-correct Python versions of the kernels, for the property tests."""
from __future__ import annotations

from fractions import Fraction
from typing import List


def decimal_values(a: int, b: int, d: int, first: int, count: int) -> List[float]:
    return [float(Fraction(a + k * b, d)) for k in range(first, first + count)]


def splitmix_uniform(seed: int, k: int, stream: int) -> float:
    mask = (1 << 64) - 1
    z = (seed + (k * 2 + stream) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z = z ^ (z >> 31)
    return (z >> 11) / 2.0 ** 53


def unravel(index: int, shape: tuple) -> tuple:
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return tuple(reversed(out))


def scatter(dst: list, done: list, first: int, src: list) -> int:
    new = 0
    for i, value in enumerate(src):
        new += not done[first + i]
        dst[first + i] = value
        done[first + i] = True
    return new


def done_runs(done: list) -> List[tuple]:
    runs, start = [], None
    for i, flag in enumerate(list(done) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs
