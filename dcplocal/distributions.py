"""Distribution objects: ``from dcplocal import stats; stats.set.normalRNG(n, mean, sd)``.

Each method returns a lazy input set of n samples whose k-th value depends only on (seed, k,
parameters) — counter-based sampling in ``kernels.rng`` — so a job's input is the same whichever
worker computes which slice, in whatever order. Pass ``seed=`` for a reproducible set; without
one a random seed is drawn once, at creation, and the set stays consistent for its lifetime.
``materialize()`` freezes the values into a list.

Signatures follow the DCP stats ranges: ``normalRNG(n, mean, sd)``, ``random(n, min, max)`` and
``randomInt(n, min, max)`` (max excluded), plus ``normal(n, mean=0, sd=1)``,
``poisson(n, lam)`` and ``binomial(n, trials, p)``.

User API: the worker side sees only the `DistributionSpec`.
"""
from __future__ import annotations

import math
import numbers
import secrets
from typing import Any, List, Optional

from .errors import EINVAL
from .inputs import DistributionSpec
from .ranges import SpecSequence


def _count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise EINVAL(f"distribution size n must be an integer >= 0, not {n!r}")
    return int(n)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise EINVAL(f"distribution parameter {name} must be a finite number, not {value!r}")
    return float(value)


class DistributionObject(SpecSequence):
    """A lazy input set of ``n`` samples; usable wherever a range object is."""

    _spec: DistributionSpec

    def __init__(self, kind: str, n: int, params: tuple, seed: Optional[int]) -> None:
        if seed is None:
            seed = secrets.randbits(63)
        elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise EINVAL(f"distribution seed must be an integer, not {seed!r}")
        self.kind, self.seed = kind, int(seed)
        self._spec = DistributionSpec(kind, n, params, self.seed)

    def materialize(self) -> List[Any]:
        """The values, frozen into a list (itself a valid input set)."""
        return list(self.spec.slice_data(0, len(self)))

    def __repr__(self) -> str:
        return f"<{self.kind} distribution n={len(self)} params={self._spec.params} seed={self.seed}>"


class _Set:
    """``stats.set``: constructors of distribution input sets."""

    def normalRNG(self, n: int, mean: float = 0.0, sd: float = 1.0, seed: Optional[int] = None) -> DistributionObject:
        sd = _real("sd", sd)
        if sd < 0:
            raise EINVAL(f"distribution parameter sd must be >= 0, not {sd}")
        return DistributionObject("normal", _count(n), (_real("mean", mean), sd), seed)

    def normal(self, n: int, mean: float = 0.0, sd: float = 1.0, seed: Optional[int] = None) -> DistributionObject:
        return self.normalRNG(n, mean, sd, seed)

    def random(self, n: int, min: float = 0.0, max: float = 1.0, seed: Optional[int] = None) -> DistributionObject:  # noqa: A002
        low, high = _real("min", min), _real("max", max)
        if not low < high:
            raise EINVAL(f"distribution needs min < max, got min={low} max={high}")
        return DistributionObject("random", _count(n), (low, high), seed)

    def randomInt(self, n: int, min: int, max: int, seed: Optional[int] = None) -> DistributionObject:  # noqa: A002
        for name, value in (("min", min), ("max", max)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise EINVAL(f"distribution parameter {name} must be an integer, not {value!r}")
        if not min < max:
            raise EINVAL(f"distribution needs min < max, got min={min} max={max}")
        return DistributionObject("randomInt", _count(n), (int(min), int(max)), seed)

    def poisson(self, n: int, lam: float, seed: Optional[int] = None) -> DistributionObject:
        lam = _real("lam", lam)
        if lam < 0:
            raise EINVAL(f"distribution parameter lam must be >= 0, not {lam}")
        return DistributionObject("poisson", _count(n), (lam,), seed)

    def binomial(self, n: int, trials: int, p: float, seed: Optional[int] = None) -> DistributionObject:
        if isinstance(trials, bool) or not isinstance(trials, numbers.Integral) or trials < 0:
            raise EINVAL(f"distribution parameter trials must be an integer >= 0, not {trials!r}")
        p = _real("p", p)
        if not 0.0 <= p <= 1.0:
            raise EINVAL(f"distribution parameter p must be within [0, 1], not {p}")
        return DistributionObject("binomial", _count(n), (int(trials), p), seed)


class _Stats:
    """The ``stats`` module of the DCP client: ``stats.set.<distribution>(…)``."""

    set = _Set()


stats = _Stats()
