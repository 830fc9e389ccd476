"""Work functions and input sets of the peer benchmark, shared by every implementation.

They live in an importable module (not in ``__main__``), so that each peer can ship them the way
it normally does: by reference for ``multiprocessing`` (plain pickle), by reference through
cloudpickle for loky, Ray, Dask and dcplocal. ``bench_peers.py`` puts ``bench/`` on the
``PYTHONPATH`` of every child process, so ``peers.work`` imports in all workers.

Each workload also knows how to check its results cheaply (spot checks with closed-form
expected values), so a fast but wrong implementation cannot win.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Union

import numpy as np

#: W3 arguments: 1 MiB of float64 each.
ARG_ELEMENTS = 131_072
#: W4 results: 8 MB of float64 each.
RESULT_ELEMENTS = 1_000_000

Inputs = Union[range, List[Any]]


def inc(x: int) -> int:
    """W1 and the overhead sweep: the cheapest useful work function."""
    return x + 1


def burn(i: int, loops: int) -> int:
    """W2: pure-Python CPU work that holds the GIL; returns i + sum(k*k for k < loops)."""
    total = 0
    for k in range(loops):
        total += k * k
    return i + total


def squares_sum(loops: int) -> int:
    """Closed form of burn's loop, to check W2 results without re-running it."""
    return (loops - 1) * loops * (2 * loops - 1) // 6


def array_sum(a: np.ndarray) -> float:
    """W3: a cheap reduction over a 1 MiB argument, so the argument transfer dominates."""
    return float(a.sum())


def big_result(i: int) -> np.ndarray:
    """W4: an 8 MB result per slice, so the result transfer dominates."""
    return np.full(RESULT_ELEMENTS, i, dtype=np.float64)


def calibrate_burn(target_seconds: float = 0.060) -> int:
    """Loop count for which one burn() call takes ~target_seconds in this process."""
    loops = 100_000
    while True:
        started = time.perf_counter()
        burn(0, loops)
        elapsed = time.perf_counter() - started
        if elapsed > 0.02:
            break
        loops *= 2
    loops = int(loops * target_seconds / elapsed)
    # Median of a few timed calls: one call can be disturbed by a page fault or a context switch.
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        burn(0, loops)
        samples.append(time.perf_counter() - started)
    return int(loops * target_seconds / sorted(samples)[2])


@dataclass
class Workload:
    """One benchmark workload: a one-argument work function over an input set, and its check."""

    key: str
    title: str
    fn: Callable[[Any], Any]
    inputs: Inputs
    check: Callable[[Sequence[Any], Inputs], None]


def _spots(n: int) -> List[int]:
    return sorted({0, 1 % n, n // 2, n - 1})


def check_inc(results: Sequence[Any], inputs: Inputs) -> None:
    n = len(inputs)
    assert len(results) == n, f"{len(results)} results for {n} slices"
    for i in _spots(n):
        assert results[i] == inputs[i] + 1, f"slice {i}: {results[i]!r} != {inputs[i] + 1}"


def _check_burn(loops: int, results: Sequence[Any], inputs: Inputs) -> None:
    expected = squares_sum(loops)
    assert len(results) == len(inputs)
    for i in _spots(len(inputs)):
        assert results[i] == inputs[i] + expected, f"slice {i}: {results[i]!r}"


def check_sums(results: Sequence[Any], inputs: Inputs) -> None:
    expected = np.array([float(a.sum()) for a in inputs])
    got = np.asarray([float(r) for r in results])
    assert got.shape == expected.shape, f"{got.shape} results, expected {expected.shape}"
    # Same data, same numpy, but SIMD summation order may depend on alignment: allow 1 ulp-ish.
    assert np.allclose(got, expected, rtol=1e-12, atol=0), "array sums differ"


def check_big(results: Sequence[Any], inputs: Inputs) -> None:
    assert len(results) == len(inputs)
    for i, r in enumerate(results):
        assert r.shape == (RESULT_ELEMENTS,) and r.dtype == np.float64, f"slice {i}: {r.dtype} {r.shape}"
        assert r[0] == inputs[i] and r[-1] == inputs[i], f"slice {i}: wrong values"
    middle = results[len(results) // 2]
    assert np.all(middle == inputs[len(results) // 2]), "middle result not uniform"


def w1(slices: int = 1_000_000) -> Workload:
    return Workload("W1", f"{slices:,} trivial slices (x + 1)", inc, range(slices), check_inc)


def w2(loops: int, slices: int = 64) -> Workload:
    return Workload("W2", f"{slices} slices of ~60 ms pure-Python CPU ({loops:,} loops)",
                    functools.partial(burn, loops=loops), range(slices),
                    functools.partial(_check_burn, loops))


def w3(slices: int = 200, seed: int = 3) -> Workload:
    rng = np.random.default_rng(seed)
    arrays = [rng.random(ARG_ELEMENTS) for _ in range(slices)]
    return Workload("W3", f"{slices} slices, each a distinct 1 MiB float64 array argument",
                    array_sum, arrays, check_sums)


def w4(slices: int = 100) -> Workload:
    return Workload("W4", f"{slices} slices, each returning an 8 MB float64 array",
                    big_result, range(slices), check_big)
