"""Result collation and the ResultHandle that users read results through.

`ResultStore` keeps one slot per slice: a typed numpy array while every batch is numeric scalars
of one type (batches land with one vectorised scatter), an object array otherwise, a done-mask,
and the errors of failed slices. `ResultHandle` is the spec's result handle: a read-only
sequence in slice order that compares equal to a list and prints like one (nested for
multi-range jobs), with ``keys/values/entries/fromEntries/key/lookupValue/list/...``.

Must not know: sockets, the broker, how results got here.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from dcplocal.kernels import collate

from . import codec
from .errors import DCPError, ENOTAVAIL, ERANGE, ETYPE


class ResultStore:
    """Slots for the results of one job, growing as a streamed input set grows."""

    def __init__(self, total: Optional[int]) -> None:
        self.total = total
        capacity = total if total is not None else 1024
        self.array: Optional[np.ndarray] = None
        self.native = True
        self.done = np.zeros(capacity, dtype=bool)
        self.errors: Dict[int, BaseException] = {}
        #: batch first slot -> (count, started, arrived) in epoch seconds; per batch, not per slot,
        #: so a 10M-slice job does not pay 160 MB for timestamps
        self.batches: Dict[int, Tuple[int, float, float]] = {}
        self.computed = 0
        self.duplicates = 0

    @property
    def size(self) -> int:
        """Number of slots that currently exist (the total, once known)."""
        return self.total if self.total is not None else int(self.done.size)

    def _grow(self, end: int) -> None:
        if end <= self.done.size:
            return
        capacity = max(end, 2 * self.done.size)
        self.done = np.concatenate([self.done, np.zeros(capacity - self.done.size, dtype=bool)])
        if self.array is not None:
            grown = np.empty(capacity, dtype=self.array.dtype)
            grown[: self.array.size] = self.array
            self.array = grown

    def _to_objects(self) -> None:
        if self.array is not None and self.array.dtype == object:
            return
        objects = np.empty(self.done.size, dtype=object)
        if self.array is not None:
            index = np.flatnonzero(self.done)
            source = self.array[index]
            objects[index] = source.tolist() if self.native else list(source)
        self.array, self.native = objects, True

    def put(self, first: int, values: Any, native: bool, elapsed: float = 0.0) -> int:
        """Store a batch starting at slot ``first``; returns how many slots were newly filled."""
        count = len(values)
        if count == 0:  # nothing to store; must not demote a typed array to objects
            return 0
        self._grow(first + count)
        now = time.time()
        self.batches[first] = (count, now - elapsed, now)
        if isinstance(values, np.ndarray) and values.dtype != object:
            if self.array is None:
                self.array, self.native = np.empty(self.done.size, dtype=values.dtype), native
            if self.array.dtype == values.dtype and self.native == native:
                new = collate.scatter(self.array, self.done, first, values)
                return self._count(new, count)
            values = values.tolist() if native else list(values)
        self._to_objects()
        assert self.array is not None
        fresh = ~self.done[first:first + count]
        for offset, value in enumerate(values):  # element-wise: a list value must not broadcast
            self.array[first + offset] = value
        self.done[first:first + count] = True
        return self._count(int(fresh.sum()), count)

    def put_values(self, first: int, values: List[Any], elapsed: float = 0.0) -> int:
        """Store a batch given as a list: typed when its values are numbers of one type."""
        typed = codec.typed_array(values) if values else None
        if typed is None:
            return self.put(first, values, True, elapsed)
        return self.put(first, typed[0], typed[1] == "native", elapsed)

    def _count(self, new: int, count: int) -> int:
        self.computed += new
        self.duplicates += count - new
        return new

    def times(self, indices: np.ndarray) -> np.ndarray:
        """(started, arrived) epoch seconds of the batch that computed each slot in ``indices``."""
        firsts = np.array(sorted(self.batches), dtype=np.int64)
        out = np.zeros((len(indices), 2))
        if not firsts.size:
            return out
        owners = firsts[np.maximum(np.searchsorted(firsts, indices, side="right") - 1, 0)]
        for row, (index, first) in enumerate(zip(indices.tolist(), owners.tolist())):
            count, started, arrived = self.batches[first]
            if first <= index < first + count:
                out[row] = (started, arrived)
        return out

    def delete(self, mask: np.ndarray) -> None:
        """Forget the results (and errors) of the slots selected by ``mask``."""
        self.done[: mask.size] &= ~mask
        for index in [i for i in self.errors if i < mask.size and mask[i]]:
            del self.errors[index]
        self.computed = int(self.done.sum())

    def put_error(self, index: int, error: BaseException) -> None:
        self._grow(index + 1)
        self.errors[index] = error

    def available(self, index: int) -> bool:
        return 0 <= index < self.done.size and bool(self.done[index]) and index not in self.errors

    def get(self, index: int) -> Any:
        if index in self.errors:
            raise self.errors[index]
        if not (0 <= index < self.done.size and self.done[index]):
            raise ENOTAVAIL(f"result of slice {index + 1} (sliceIndex {index}) is not available")
        assert self.array is not None
        value = self.array[index]
        return value.item() if self.native and isinstance(value, np.generic) else value

    def values(self, start: int = 0, stop: Optional[int] = None) -> List[Any]:
        """Results of slots start..stop-1 as native objects; raises for a missing or failed one."""
        stop = self.size if stop is None else stop
        failed_here = any(start <= index < stop for index in self.errors)
        if failed_here or not self.done[start:stop].all():  # the one-by-one path raises for it
            return [self.get(i) for i in range(start, stop)]
        if self.array is None:
            return []
        part = self.array[start:stop]
        return part.tolist() if self.native and part.dtype != object else list(part)

    def typed(self) -> Optional[np.ndarray]:
        """The typed result array (read-only view) when results are numeric and complete."""
        if self.array is None or self.array.dtype == object or self.errors:
            return None
        view = self.array[: self.size]
        view.flags.writeable = False
        return view


def _nest(flat: List[Any], shape: Tuple[int, ...]) -> List[Any]:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


class ResultHandle(Sequence):
    """The spec's result handle: the output set in slice order, plus the input-set helpers.

    A read-only sequence that equals a list with the same values; ``np.asarray(results)`` views
    numeric results without a copy. Example::

        results = compute.for_(1, 3, lambda i: i * i).localExec(2)
        results == [1, 4, 9]; results[0] == 1; list(results.entries()) == [(1, 1), (2, 4), (3, 9)]
        results.lookupValue(3) == 9; np.asarray(results).sum() == 14

    ``key_of(i)`` returns the input of slice i; ``shape`` (multi-range jobs) makes the sequence
    view nest, while keys/values/entries stay flat in slice order as the spec describes.
    """

    def __init__(self, store: ResultStore, key_of: Callable[[int], Any],
                 keys_of: Optional[Callable[[int, int], List[Any]]] = None,
                 shape: Optional[Tuple[int, ...]] = None,
                 emit_result: Optional[Callable[[int], None]] = None) -> None:
        self._store, self._key_of, self._shape = store, key_of, shape
        self._emit_result = emit_result
        self._keys_of = keys_of or (lambda a, b: [key_of(i) for i in range(a, b)])

    # ---- sequence view ----------------------------------------------------------------------
    def _nested(self) -> List[Any]:
        return _nest(self._store.values(), self._shape or ())

    def __len__(self) -> int:
        return self._shape[0] if self._shape else self._store.size

    def __getitem__(self, index: Any) -> Any:
        if self._shape and len(self._shape) > 1:
            return self._nested()[index]
        if isinstance(index, slice):
            return [self._store.get(i) for i in range(*index.indices(len(self)))]
        if not isinstance(index, (int, np.integer)):
            raise ETYPE(f"result indices must be integers or slices, not {type(index).__name__}")
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise ERANGE(f"result index {index} out of range for {n} slices")
        return self._store.get(int(index))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._nested())

    def __reduce__(self) -> Any:
        """Pickled (``joblib.dump``, returned from another job) as the list it equals."""
        return list, (self._nested(),)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, ResultHandle):
            other = other._nested()
        if isinstance(other, np.ndarray):
            other = other.tolist()
        if not isinstance(other, (list, tuple)):
            return NotImplemented
        return self._nested() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        store = self._store
        shown = [store.get(i) if store.available(i) else _Missing(i, store) for i in range(store.size)]
        return repr(_nest(shown, self._shape or ()))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """numpy's view of the results, by numpy's own rules: ``np.asarray`` (``copy=None``) is
        a zero-copy, read-only view of numeric results; ``np.array`` (``copy=True``) is a
        writable copy; ``copy=False`` raises where a copy cannot be avoided. Other results are
        converted as ``np.asarray(list(results))`` would be (tuples and arrays become axes)."""
        typed = self._store.typed()
        if typed is None or (dtype is not None and np.dtype(dtype) != typed.dtype):
            if copy is False:
                raise ValueError("these results cannot be viewed as an array without a copy "
                                 "(they are not numbers of one type, or need another dtype)")
            values = self._nested() if typed is None else typed.reshape(self._shape or typed.shape)
            return np.array(values, dtype=dtype)
        array = typed.reshape(self._shape) if self._shape else typed
        return array.copy() if copy else array

    # ---- the spec's methods -----------------------------------------------------------------
    def keys(self) -> List[Any]:
        """The whole input set, in slice order (tuples for multi-range jobs)."""
        return self._keys_of(0, self._store.size)

    def values(self) -> List[Any]:
        """The whole output set, flat, in slice order."""
        return self._store.values()

    def entries(self) -> List[Tuple[Any, Any]]:
        """``(input, output)`` pairs in slice order."""
        return list(zip(self.keys(), self.values()))

    def fromEntries(self) -> Dict[Any, Any]:
        """``{input: output}``; on a repeated input the last slice wins (as Object.fromEntries)."""
        return {_hashable(k): v for k, v in self.entries()}

    def key(self, n: int) -> Any:
        """The n-th input (0-based) without generating the whole input set."""
        if not 0 <= n < self._store.size:
            raise ERANGE(f"key({n}): no slice {n} in an input set of {self._store.size}")
        return self._key_of(n)

    def lookupValue(self, input_value: Any) -> Any:
        """The result of the (last) slice whose input equals ``input_value``; ERANGE if none."""
        keys = self.keys()
        for index in range(len(keys) - 1, -1, -1):
            if _same(keys[index], input_value):
                return self._store.get(index)
        raise ERANGE(f"lookupValue({input_value!r}): not part of the input set")

    def isAvailable(self, index: int) -> bool:
        """Whether slice ``index``'s result is here (computed, not failed)."""
        return self._store.available(index)

    def _selected(self, range_object: Any) -> np.ndarray:
        """Mask of the slots whose 1-based slice numbers are in ``range_object`` (all if None)."""
        from .ranges import to_input_spec

        size = self._store.size
        if range_object is None:
            return np.ones(size, dtype=bool)
        spec = to_input_spec(range_object)
        if spec is None:
            raise ETYPE(f"expected a range object of slice numbers, not {type(range_object).__name__}")
        numbers = np.asarray(spec.slice_data(0, len(spec)), dtype=np.int64) - 1
        mask = np.zeros(size, dtype=bool)
        mask[numbers[(numbers >= 0) & (numbers < size)]] = True
        return mask

    def _available(self, range_object: Any) -> np.ndarray:
        mask = self._store.done[: self._store.size] & self._selected(range_object)
        for index in self._store.errors:
            if index < mask.size:
                mask[index] = False
        return mask

    @staticmethod
    def _as_range(mask: np.ndarray) -> Any:
        from .ranges import RangeObject, SparseRangeObject

        runs = collate.done_runs(mask)
        return SparseRangeObject([RangeObject(int(a) + 1, int(b)) for a, b in runs])

    def list(self, range_object: Any = None) -> Any:
        """Slice numbers (1-based, as the spec) whose results are available, as a sparse range."""
        return self._as_range(self._available(range_object))

    def stat(self, range_object: Any = None) -> List[Dict[str, Any]]:
        """For each available slice in range: ``{sliceNumber, distributedTime, computedTime,
        payment}`` (epoch seconds; local execution is free, so payment is 0)."""
        indices = np.flatnonzero(self._available(range_object))
        times = self._store.times(indices)
        return [{"sliceNumber": int(i) + 1, "distributedTime": float(t[0]),
                 "computedTime": float(t[1]), "payment": 0} for i, t in zip(indices, times)]

    def delete(self, range_object: Any = None) -> Any:
        """Forget the results of the slices in range (all if None); returns what was deleted."""
        mask = self._available(range_object)
        self._store.delete(mask | (self._selected(range_object) & self._failed_mask()))
        return self._as_range(mask)

    def _failed_mask(self) -> np.ndarray:
        mask = np.zeros(self._store.size, dtype=bool)
        for index in self._store.errors:
            if index < mask.size:
                mask[index] = True
        return mask

    def fetch(self, range_object: Any = None, emitEvents: Any = False) -> "ResultHandle":
        """Results are collated into this handle as they are computed, so nothing is missing
        locally; with ``emitEvents="all"`` a ``result`` event is emitted for every available
        slice in range (``True`` emits only for slices not already present: none)."""
        if emitEvents == "all" and self._emit_result is not None:
            for index in np.flatnonzero(self._available(range_object)):
                self._emit_result(int(index))
        return self


class _Missing:
    """Stands in a printed result list for a slice that has no value."""

    def __init__(self, index: int, store: ResultStore) -> None:
        self.index, self.error = index, store.errors.get(index)

    def __repr__(self) -> str:
        if isinstance(self.error, DCPError):
            return f"<error: {self.error}>"
        if self.error is not None:
            return f"<error: {type(self.error).__name__}: {self.error}>"
        return "<not available>"


def _hashable(key: Any) -> Any:
    if isinstance(key, np.ndarray):
        return tuple(key.tolist())
    if isinstance(key, list):
        return tuple(key)
    return key


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)
