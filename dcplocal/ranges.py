"""Range objects of the DCP spec: RangeObject, MultiRangeObject, SparseRangeObject.

Accepted as objects or as the spec's dicts (``{start, end, step, group}``, ``{ranges: […]}``,
``{sparse: […]}``); a list whose elements are all range dicts is a multi-range. ``end`` is
inclusive; ``step`` defaults to ±1 toward ``end``; a step that moves away from ``end`` raises
ERANGE; the last value is the largest ``start + k*step`` not past ``end``. Arithmetic is exact:
every number is read as the decimal it prints as (``0.1`` is 1/10), so ``(0, 0.3, 0.1)`` is
``[0, 0.1, 0.2, 0.3]`` and ``(0, 1, 0.1)``'s fourth value is ``0.3``. ``len``, indexing and
slicing never materialise the set.

User API: must not be imported by the worker side (which gets the `InputSpec` instead).
"""
from __future__ import annotations

import math
import numbers
from decimal import Decimal
from fractions import Fraction
from collections.abc import Sequence
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from .errors import EINVAL, ERANGE, ETYPE
from .inputs import InputSpec, MultiRangeSpec, RangeSpec, SparseSpec

_RANGE_KEYS = {"start", "end", "step", "group"}


def _exact(field: str, value: Any) -> Tuple[Fraction, bool]:
    """(exact value, is_float) of a range field; EINVAL naming the field for a non-number."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        raise EINVAL(f"range {field} must be a number, not {value!r}")
    if isinstance(value, numbers.Integral):
        return Fraction(int(value)), False
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise EINVAL(f"range {field} must be finite, not {value}")
        return Fraction(value), True
    if isinstance(value, Fraction):
        return value, True
    number = float(value)
    if not math.isfinite(number):
        raise EINVAL(f"range {field} must be finite, not {number}")
    return Fraction(Decimal(repr(number))), True  # the decimal it prints as: 0.1 is 1/10


def _group(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise EINVAL(f"range group must be a positive integer, not {value!r}")
    return int(value)


class SpecSequence(Sequence):
    """A lazy sequence of slice data backed by an `InputSpec` (``self._spec``)."""

    _spec: InputSpec

    @property
    def spec(self) -> InputSpec:
        return self._spec

    def __len__(self) -> int:
        return len(self._spec)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._spec.key(k) for k in range(len(self))[index]]
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise ETYPE(f"indices must be integers or slices, not {type(index).__name__}")
        try:
            return self._spec.key(int(index))
        except IndexError as exc:
            raise ERANGE(str(exc)) from None


class RangeObject(SpecSequence):
    """``{start, end, step, group}`` as a lazy, exact sequence of slice data."""

    _spec: RangeSpec

    def __init__(self, start: Any, end: Any = None, step: Any = None, group: Any = None) -> None:
        if isinstance(start, dict):
            unknown = set(start) - _RANGE_KEYS
            if unknown:
                raise EINVAL(f"range object has unknown field(s) {', '.join(sorted(unknown))}")
            if "start" not in start:
                raise EINVAL("range object needs a start")
            start, end, step, group = start["start"], start.get("end"), start.get("step"), start.get("group")
        if end is None:
            raise EINVAL("range object needs an end")
        first, float_start = _exact("start", start)
        last, float_end = _exact("end", end)
        if step is None:
            delta, float_step = Fraction(1 if last >= first else -1), False
        else:
            delta, float_step = _exact("step", step)
        if delta == 0:
            raise EINVAL("range step must not be 0")
        if (last - first) * delta < 0:
            raise ERANGE(f"range step {step} moves away from end {end} (start {start})")
        self.start, self.end, self.step, self.group = start, end, (step if step is not None else int(delta)), _group(group)
        count = math.floor((last - first) / delta) + 1
        d = math.lcm(first.denominator, delta.denominator)
        self._spec = RangeSpec(int(first * d), int(delta * d), d, count,
                               float_start or float_end or float_step, self.group)

    @classmethod
    def _empty(cls, start: Any, end: Any) -> "RangeObject":
        """The empty range of form 2b's ``end < start`` (no values; step 1)."""
        first, floats = _exact("start", start)
        obj = cls.__new__(cls)
        obj.start, obj.end, obj.step, obj.group = start, end, 1, None
        obj._spec = RangeSpec(first.numerator, first.denominator, first.denominator, 0,
                              floats or _exact("end", end)[1])
        return obj

    @classmethod
    def _of(cls, spec: RangeSpec) -> "RangeObject":
        obj = cls.__new__(cls)
        obj._spec = spec
        obj.start, obj.step = spec.value(0), (spec.b if not spec.floats else float(Fraction(spec.b, spec.d)))
        obj.end, obj.group = spec.value(spec.count - 1), spec.group
        return obj

    def __getitem__(self, index: Any) -> Any:
        """A slice of an ungrouped range is itself a range: nothing is materialised."""
        if isinstance(index, slice) and not self.group:
            ks = range(len(self))[index]
            if ks:
                spec = self._spec
                return RangeObject._of(RangeSpec(spec.a + ks.start * spec.b, spec.b * ks.step,
                                                 spec.d, len(ks), spec.floats))
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[Any]:
        for first in range(0, len(self), 4096):
            yield from self._spec.slice_data(first, min(4096, len(self) - first))

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, RangeObject):
            return self._spec == other._spec
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> Dict[str, Any]:
        out = {"start": self.start, "end": self.end, "step": self.step}
        if self.group:
            out["group"] = self.group
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"RangeObject({fields})"


def _as_range(item: Any, where: str) -> RangeObject:
    if isinstance(item, RangeObject):
        return item
    if isinstance(item, dict) and not ({"ranges", "sparse"} & set(item)):
        return RangeObject(item)
    raise EINVAL(f"{where} must hold range objects, not {item!r:.80}")


class MultiRangeObject(SpecSequence):
    """The Cartesian product of ranges (rightmost fastest); each datum is a tuple."""

    def __init__(self, ranges: Any) -> None:
        if isinstance(ranges, dict):
            if set(ranges) != {"ranges"}:
                raise EINVAL("a multi-range object is {'ranges': [range, …]}")
            ranges = ranges["ranges"]
        if not isinstance(ranges, (list, tuple)) or not ranges:
            raise EINVAL("a multi-range needs a non-empty list of range objects")
        self.ranges = [_as_range(r, "a multi-range") for r in ranges]
        if any(r.group for r in self.ranges):
            raise EINVAL("range group is not supported inside a multi-range")
        self._spec = MultiRangeSpec([r._spec for r in self.ranges])

    def to_dict(self) -> Dict[str, Any]:
        return {"ranges": [r.to_dict() for r in self.ranges]}

    def __repr__(self) -> str:
        return f"MultiRangeObject({self.ranges!r})"


class SparseRangeObject(SpecSequence):
    """Several ranges one after the other: ``{sparse: [range, range, …]}``."""

    def __init__(self, sparse: Any = ()) -> None:
        if isinstance(sparse, dict):
            if set(sparse) != {"sparse"}:
                raise EINVAL("a sparse range object is {'sparse': [range, …]}")
            sparse = sparse["sparse"]
        if not isinstance(sparse, (list, tuple)):
            raise EINVAL(f"sparse must be a list of range objects, not {type(sparse).__name__}")
        for item in sparse:
            if isinstance(item, SparseRangeObject) or (isinstance(item, dict) and "sparse" in item):
                raise EINVAL("a sparse range object cannot contain a sparse range object")
        self.ranges = [_as_range(r, "a sparse range") for r in sparse]
        self._spec = SparseSpec([r.spec for r in self.ranges])

    def to_dict(self) -> Dict[str, Any]:
        return {"sparse": [r.to_dict() for r in self.ranges]}

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, SparseRangeObject):
            return self.to_dict() == other.to_dict()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SparseRangeObject({self.ranges!r})"


def _is_range_dict(item: Any) -> bool:
    return isinstance(item, RangeObject) or (isinstance(item, dict) and "start" in item)


def to_input_spec(obj: Any) -> Optional[InputSpec]:
    """The InputSpec of a range or distribution object or spec dict; None for a plain data set."""
    spec = getattr(obj, "spec", None)
    if isinstance(spec, InputSpec):
        return spec
    if isinstance(obj, dict):
        if "ranges" in obj:
            return MultiRangeObject(obj).spec
        if "sparse" in obj:
            return SparseRangeObject(obj).spec
        if {"start", "end"} & set(obj):
            return RangeObject(obj).spec
        return None
    if isinstance(obj, (list, tuple)) and obj and all(_is_range_dict(item) for item in obj):
        return MultiRangeObject(list(obj)).spec
    return None


def range_from_args(start: Any, end: Any, step: Any = None) -> RangeObject:
    """The range of ``compute.for_(start, end[, step], work)``.

    Without a step (the spec's form 2b) the step is always 1, so ``end < start`` is the empty
    set, as ``range(start, end + 1)`` would be: ``compute.for_(0, n - 1, f)`` runs nothing for
    ``n = 0``. A range object or dict without a step keeps the descending default.
    """
    if step is None and _exact("end", end)[0] < _exact("start", start)[0]:
        return RangeObject._empty(start, end)
    return RangeObject(start, end, 1 if step is None else step)
