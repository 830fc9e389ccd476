"""Input-set descriptors: what travels to a worker instead of the input set itself.

An `InputSpec` describes an input set (range, multi-range, sparse range, distribution) in a few
numbers. The client builds one from the user's range object; the broker ships it to each worker
once per job; the worker expands ``slice_data(first, count)`` for each task with the vectorised
kernels. Nothing here materialises the whole set.

Exactness: integer ranges are Python ``range`` objects (exact at any size, no list built);
decimal ranges are integers over a common denominator, expanded by ``kernels.ranges`` with one
correctly rounded division each (exact-Fraction fallback past 2**53); distributions are
counter-based, so slice k's value does not depend on which worker computes it.

Worker side of the layering: imports numpy, ``dcplocal.kernels`` and ``dcplocal.errors`` only —
never the user API, zmq or pickle.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from dcplocal.kernels import ranges as range_kernels
from dcplocal.kernels import rng


class InputSpec:
    """Base of every input-set descriptor (picklable, immutable)."""

    #: True when each datum is a tuple to be spread into the work function's arguments.
    spread: bool = False
    #: Result nesting for multi-range sets, e.g. (2, 3); None for a flat output set.
    shape: Optional[Tuple[int, ...]] = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def slice_data(self, first: int, count: int) -> Sequence[Any]:  # pragma: no cover
        """Data of slices ``first .. first+count-1`` (0-based), each exactly what work receives."""
        raise NotImplementedError

    def key(self, index: int) -> Any:
        """The datum of slice ``index`` (0-based; negative counts from the end)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"slice index {index} out of range for {len(self)} slices")
        return self.slice_data(index, 1)[0]


class RangeSpec(InputSpec):
    """``start + k*step`` for k in [0, count): ints, or exact decimals as floats; optional group.

    Values are ``(a + k*b) / d`` with integers a, b, d (d = 1 and ``floats`` False for an
    integer range). With ``group`` g, slice j holds values j*g … j*g+g-1 as one numpy array.
    """

    __slots__ = ("a", "b", "d", "count", "floats", "group")

    def __init__(self, a: int, b: int, d: int, count: int, floats: bool, group: Optional[int] = None) -> None:
        self.a, self.b, self.d, self.count = int(a), int(b), int(d), int(count)
        self.floats, self.group = bool(floats), group

    def __reduce__(self) -> Any:
        return (RangeSpec, (self.a, self.b, self.d, self.count, self.floats, self.group))

    def __len__(self) -> int:
        return -(-self.count // self.group) if self.group else self.count

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, RangeSpec) and self.__reduce__() == other.__reduce__()

    def value(self, k: int) -> Any:
        """The k-th value (0-based), exactly."""
        if not self.floats:
            return self.a + k * self.b
        return float(Fraction(self.a + k * self.b, self.d))

    def values(self, first: int, count: int) -> Sequence[Any]:
        """Values first..first+count-1 (not slices: groups do not apply here)."""
        if not self.floats:
            return range(self.a + first * self.b, self.a + (first + count) * self.b, self.b) \
                if self.b else [self.a] * count
        if range_kernels.fits_exactly(self.a, self.b, self.d, first + count - 1):
            return range_kernels.decimal_values(self.a, self.b, self.d, first, count).tolist()
        return [self.value(k) for k in range(first, first + count)]

    def values_at(self, indices: np.ndarray) -> List[Any]:
        """Values at arbitrary value indices (multi-range columns)."""
        if not self.floats:
            return [self.a + int(k) * self.b for k in indices.tolist()]
        if indices.size and range_kernels.fits_exactly(self.a, self.b, self.d, int(indices.max())) \
                and abs(self.a + int(indices.min()) * self.b) < range_kernels.EXACT_LIMIT:
            return ((self.a + indices.astype(np.int64) * self.b).astype(np.float64) / np.float64(self.d)).tolist()
        return [self.value(int(k)) for k in indices.tolist()]

    def slice_data(self, first: int, count: int) -> Sequence[Any]:
        if not self.group:
            return self.values(first, count)
        g = self.group
        lo, hi = first * g, min((first + count) * g, self.count)
        values = self.values(lo, hi - lo)
        dtype = np.float64 if self.floats else (np.int64 if _fits_int64(self, lo, hi) else object)
        flat = np.array(list(values), dtype=dtype) if dtype is object else np.asarray(values, dtype=dtype)
        return [flat[i:i + g] for i in range(0, len(flat), g)]


def _fits_int64(spec: RangeSpec, lo: int, hi: int) -> bool:
    ends = (spec.a + lo * spec.b, spec.a + max(lo, hi - 1) * spec.b)
    return all(-2 ** 63 <= v < 2 ** 63 for v in ends)


class MultiRangeSpec(InputSpec):
    """Cartesian product of plain ranges, rightmost fastest; each datum is a tuple (spread)."""

    spread = True
    __slots__ = ("specs", "shape")

    def __init__(self, specs: Sequence[RangeSpec]) -> None:
        self.specs = tuple(specs)
        self.shape = tuple(len(s) for s in self.specs)

    def __reduce__(self) -> Any:
        return (MultiRangeSpec, (self.specs,))

    def __len__(self) -> int:
        return math.prod(len(s) for s in self.specs)

    def slice_data(self, first: int, count: int) -> Sequence[Any]:
        if count <= 0:
            return []
        columns = range_kernels.unravel(np.arange(first, first + count, dtype=np.int64), self.shape)
        return list(zip(*(spec.values_at(col) for spec, col in zip(self.specs, columns))))


class SparseSpec(InputSpec):
    """The slices of several input specs, one after the other."""

    __slots__ = ("specs", "offsets")

    def __init__(self, specs: Sequence[InputSpec]) -> None:
        self.specs = tuple(specs)
        self.offsets = np.cumsum([0] + [len(s) for s in self.specs], dtype=np.int64)

    def __reduce__(self) -> Any:
        return (SparseSpec, (self.specs,))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def slice_data(self, first: int, count: int) -> Sequence[Any]:
        out: List[Any] = []
        end = first + count
        which = int(range_kernels.sparse_locate(self.offsets, np.array([first]))[0][0]) if count else 0
        while count and first < end and which < len(self.specs):
            lo = first - int(self.offsets[which])
            n = min(end, int(self.offsets[which + 1])) - first
            out.extend(self.specs[which].slice_data(lo, n))
            first += n
            which += 1
        return out


class DistributionSpec(InputSpec):
    """n samples of a distribution; slice k's value is a pure function of (seed, k, params)."""

    __slots__ = ("kind", "n", "params", "seed", "_table")

    def __init__(self, kind: str, n: int, params: Tuple[float, ...], seed: int) -> None:
        self.kind, self.n, self.params, self.seed = kind, int(n), tuple(params), int(seed)
        self._table: Optional[Tuple[int, np.ndarray]] = None

    def __reduce__(self) -> Any:
        return (DistributionSpec, (self.kind, self.n, self.params, self.seed))

    def __len__(self) -> int:
        return self.n

    def samples(self, first: int, count: int) -> np.ndarray:
        kind, p = self.kind, self.params
        if kind == "normal":
            return p[0] + p[1] * rng.normal(self.seed, first, count)
        u = rng.uniform(self.seed, first, count)
        if kind == "random":
            return p[0] + u * (p[1] - p[0])
        if kind == "randomInt":
            return np.int64(p[0]) + np.floor(u * (p[1] - p[0])).astype(np.int64)
        low, cdf = self._discrete_table()
        return rng.from_table(u, low, cdf)

    def slice_data(self, first: int, count: int) -> Sequence[Any]:
        return self.samples(first, count).tolist()

    def _discrete_table(self) -> Tuple[int, np.ndarray]:
        if self._table is None:
            self._table = _poisson_table(*self.params) if self.kind == "poisson" else _binomial_table(int(self.params[0]), self.params[1])
        return self._table


def _table(low: int, log_pmf: np.ndarray) -> Tuple[int, np.ndarray]:
    weights = np.exp(log_pmf - log_pmf.max())
    cdf = np.cumsum(weights)
    return low, cdf / cdf[-1]


def _poisson_table(lam: float) -> Tuple[int, np.ndarray]:
    """P(k) over the ±12 sd window around lam (the rest weighs < 1e-30)."""
    if lam == 0:
        return 0, np.ones(1)
    spread = 12 * math.sqrt(lam) + 10
    low, high = max(0, math.floor(lam - spread)), math.ceil(lam + spread)
    k = np.arange(low, high + 1, dtype=np.float64)
    lgamma = np.frompyfunc(math.lgamma, 1, 1)
    return _table(low, k * math.log(lam) - lam - np.asarray(lgamma(k + 1), dtype=np.float64))


def _binomial_table(trials: int, p: float) -> Tuple[int, np.ndarray]:
    if p in (0.0, 1.0) or trials == 0:
        value = int(round(trials * p))
        return value, np.ones(1)
    mean, sd = trials * p, math.sqrt(trials * p * (1 - p))
    low = max(0, math.floor(mean - 12 * sd - 10))
    high = min(trials, math.ceil(mean + 12 * sd + 10))
    k = np.arange(low, high + 1, dtype=np.float64)
    lgamma = np.frompyfunc(math.lgamma, 1, 1)
    log_pmf = (math.lgamma(trials + 1) - np.asarray(lgamma(k + 1), dtype=np.float64)
               - np.asarray(lgamma(trials - k + 1), dtype=np.float64) + k * math.log(p) + (trials - k) * math.log1p(-p))
    return _table(low, log_pmf)
