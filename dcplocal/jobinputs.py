"""Client side of an iterable input set: pulled in bounded chunks when the broker asks for them.

A list, tuple, numpy array or any other iterable (a generator included) is never sent whole:
the broker requests ``count`` more items whenever its queue of ready chunks runs low, and
`DataInput.feed` takes just that many from the iterator, packs them as one chunk, and
hands the chunk over. The inputs themselves are kept for ``results.keys()`` — by reference for a
sequence that is already in memory, collated into a typed array (like results) for a generator,
so a 10M-element numeric generator costs 80 MB of keys, not 10M Python objects.

Must not know: sockets, the broker's policy.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from . import codec
from .errors import EPERM, add_note
from .results import ResultStore


class DataInput:
    """An iterable input set, streamed on request."""

    def __init__(self, source: Iterable[Any]) -> None:
        self._source = source
        self._sequence: Optional[Any] = source if isinstance(source, (Sequence, np.ndarray)) else None
        self.length: Optional[int] = len(self._sequence) if self._sequence is not None else None
        self._keys: Optional[ResultStore] = None
        self._iterator: Optional[Iterator[Any]] = None
        self._next = 0
        self._consumed = False

    def restart(self) -> None:
        """Start from the first item (a one-shot iterator can be run only once)."""
        if self._sequence is None:
            if self._consumed:
                raise EPERM("this job's input set is a one-shot iterator that was already consumed")
            self._consumed = True
            self._keys = ResultStore(None)
        self._iterator = iter(self._source)
        self._next = 0

    def _take(self, count: int) -> List[Any]:
        assert self._iterator is not None
        items: List[Any] = []
        try:  # extend keeps what the iterator gave before it raised: the index is exact
            items.extend(itertools.islice(self._iterator, count))
        except Exception as exc:
            add_note(exc, f"raised by the input set's iterator while making input item "
                          f"{self._next + len(items)}")
            raise
        first, self._next = self._next, self._next + len(items)
        if self._keys is not None:
            self._keys.put_values(first, items)
        return items

    def feed(self, link: Any, count: int) -> None:
        """Answer the broker's request for ``count`` more items (one pickled chunk)."""
        first = self._next
        items = self._take(count)
        if items:
            link.feed(first, len(items), codec.pack_inputs(items, first))
        if len(items) < count or (self.length is not None and self._next >= self.length):
            self.length = self._next
            if self._keys is not None:
                self._keys.total = self._next
            link.feed_end(self._next)

    def batches(self, size: int) -> Iterator[Tuple[int, List[Any]]]:
        """(first, items) batches for in-process execution."""
        while True:
            first = self._next
            items = self._take(size)
            if not items:
                self.length = self._next
                if self._keys is not None:
                    self._keys.total = self._next
                return
            yield first, items

    def first(self) -> Any:
        """The first input, without consuming a one-shot iterator (for job.estimate)."""
        if self._sequence is not None:
            return self._sequence[0]
        if self._keys is not None and self._keys.size:
            return self._keys.get(0)
        raise EPERM("estimate() needs a sample: the input set is a one-shot iterator")

    def key(self, index: int) -> Any:
        if self._sequence is not None:
            return self._sequence[index]
        assert self._keys is not None
        return self._keys.get(index)

    def keys(self, start: int, stop: int) -> List[Any]:
        if self._sequence is not None:
            part = self._sequence[start:stop]
            return part.tolist() if isinstance(part, np.ndarray) else list(part)
        assert self._keys is not None
        return self._keys.values(start, stop)
