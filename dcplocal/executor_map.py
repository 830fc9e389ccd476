"""How ``Executor.map`` runs: one job over the zipped input, its results streamed in order.

The map's job runs on a thread of its own (`MapRun`), so that its listeners run there; after
each batch of results its ``resultsUpdated`` listener copies the newly contiguous run of results
out of the job's store into a queue, and the iterator that ``map`` returns (your thread) yields
them in input order, raising a failed item's exception when it reaches it, or ``TimeoutError``
past the map's deadline. Leaving the iterator early cancels the job.

Must not know: sockets, processes, the broker; it drives a `Job` through its public calls and
reads its result store. It imports nothing of the user API at module level: workers import this
module to find `Star`, and workers never load the user API.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import itertools
import threading
import time
from collections.abc import Sequence
from typing import (TYPE_CHECKING, Any, Callable, Deque, Generator, Iterable, Iterator, List,
                    Optional, Tuple, cast)

import numpy as np

if TYPE_CHECKING:
    from .job import Job
    from .results import ResultStore


class Star:
    """``fn(*datum)`` (map over several iterables) or ``fn(datum)``: as a job's work function
    it is always a callable, so a string ``fn`` fails as the stdlib's does instead of being
    compiled as dcplocal work source."""

    __slots__ = ("fn", "spread")

    def __init__(self, fn: Any, spread: bool) -> None:
        self.fn, self.spread = fn, spread

    def __call__(self, datum: Any) -> Any:
        return self.fn(*datum) if self.spread else self.fn(datum)

    def __reduce__(self) -> Any:
        return Star, (self.fn, self.spread)


class Inputs(Sequence):
    """A map's input items: a sequence that ``compute.for_`` never mistakes for a multi-range
    (as it would a list whose items are all range-object dicts)."""

    __slots__ = ("items",)

    def __init__(self, items: List[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> Any:
        return self.items[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)


class Cancellable:
    """A job started on another thread, which any thread may cancel, even before it reached the
    runtime. (``Job.cancel()`` alone would be lost in that window: the job clears its request
    as it starts. Its ``accepted`` event comes once the runtime holds it, so a cancel seen
    there is passed on.)"""

    def __init__(self, job: "Job") -> None:
        self.job = job
        self.cancelled = False
        job.on("accepted", self)  # itself, not a bound method: off() knows listeners by identity

    def __call__(self, _event: Any) -> None:
        """The ``accepted`` listener."""
        if self.cancelled:
            self.job.cancel()

    def cancel(self) -> None:
        self.cancelled = True
        self.job.cancel()

    def detach(self) -> None:
        """Once the job ended: drop the listener, so no reference cycle keeps the job and its
        results alive until the garbage collector runs."""
        self.job.off("accepted", self)



def ready_upto(store: "ResultStore", start: int, total: int) -> Tuple[int, Optional[BaseException]]:
    """(end of the run of computed results from ``start``, the error of the slice where that run
    stops, if it failed). Reads the job's store, so it runs on the thread that fills it."""
    window = store.done[start:total]
    upto = start
    if window.size:
        missing = int(np.argmin(window))
        upto = total if window[missing] else start + missing
    failed = [i for i in store.errors if start <= i <= upto and i < total] if store.errors else []
    if failed:
        first = min(failed)
        return first, store.errors[first]
    return upto, None


class MapRun:
    """One ``Executor.map``: its job, driven on a thread of its own, and its results handed to
    the iterator in input order as soon as they are contiguous."""

    def __init__(self, job: "Job", cores: Optional[int], total: int,
                 on_end: Callable[["MapRun"], None]) -> None:
        self._job, self._cores, self._total, self._on_end = job, cores, total, on_end
        self._control = Cancellable(job)
        self._cond = threading.Condition()
        self._chunks: Deque[List[Any]] = collections.deque()
        self._collected = 0
        #: what the iterator raises once it has yielded every chunk: the error of the slice at
        #: ``_collected``, or why the job ended without it
        self._failure: Optional[BaseException] = None
        self._over = False
        job.on("resultsUpdated", self)  # itself, not a bound method: off() knows it by identity
        self.thread = threading.Thread(target=self._run, name="dcplocal-executor-map")

    def _run(self) -> None:
        error: Optional[BaseException] = None
        try:
            self._job.localExec(self._cores)
        except BaseException as exc:  # noqa: B902 - handed to the iterator
            error = exc
        try:
            self._collect()
        finally:
            self._job.off("resultsUpdated", self)  # no cycle: see Cancellable.detach
            self._control.detach()
            with self._cond:
                self._over = True
                if self._failure is None and self._collected < self._total:
                    self._failure = _ended_early(error)
                self._cond.notify_all()
            self._on_end(self)

    def __call__(self, _event: Any) -> None:
        """The ``resultsUpdated`` listener."""
        self._collect()

    def _collect(self) -> None:
        """On the job's thread, after each batch of results: move the newly contiguous results
        out of the job's store (which only this thread writes)."""
        if self._failure is not None or self._job.results is None:
            return
        store = self._job.results._store  # the handle's own store: no public view of a range yet
        start = self._collected
        upto, failure = ready_upto(store, start, self._total)
        chunk = store.values(start, upto) if upto > start else None
        with self._cond:
            if chunk:
                self._chunks.append(chunk)
                self._collected = upto
            self._failure = failure
            self._cond.notify_all()

    def results(self, end_time: Optional[float]) -> "_Results":
        """The iterator ``map`` returns; leaving it early cancels the job, as the stdlib's
        cancels its pending futures."""
        chunks = self._chunks_in_order(end_time)
        results = cast(_Results, _Results.from_iterable(chunks))  # a _Results: cls's own
        results.chunks = chunks
        return results

    def _chunks_in_order(self, end_time: Optional[float]) -> Generator[List[Any], None, None]:
        try:
            while True:
                chunk = self._next_chunk(end_time)
                if chunk is None:
                    return
                yield chunk
        finally:
            self.cancel()

    def _next_chunk(self, end_time: Optional[float]) -> Optional[List[Any]]:
        with self._cond:
            while not self._chunks:
                if self._failure is not None:
                    raise self._failure
                if self._over:
                    return None
                remaining = None if end_time is None else end_time - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise cf.TimeoutError()
                self._cond.wait(remaining)
            return self._chunks.popleft()

    def cancel(self) -> None:
        if not self._over:
            self._control.cancel()


class _Results(itertools.chain):
    """``map``'s iterator: the items of each chunk are yielded by C code, not one generator step
    each (a fifth of W1's time), and ``close()`` works as on the stdlib's generator."""

    chunks: Generator[List[Any], None, None]

    def close(self) -> None:
        self.chunks.close()


def _ended_early(error: Optional[BaseException]) -> BaseException:
    """What a map iterator raises at the first item its job ended without."""
    from .errors import JobCancelledError

    if isinstance(error, JobCancelledError):
        return cf.CancelledError()  # shutdown(cancel_futures=True): the stdlib's pending futures
    if error is None:
        return RuntimeError("the map's job ended without this item's result")
    return error


def map_inputs(fn: Any, iterables: Tuple[Iterable[Any], ...]) -> Tuple[Any, Any]:
    """(input set, work function) of one map job. The iterables are consumed now, as the stdlib
    does; a single ``range`` stays a range, whose slices travel as index ranges."""
    if len(iterables) == 1:
        source = iterables[0]
        inputs = source if type(source) is range else Inputs(list(source))
        return inputs, fn if callable(fn) else Star(fn, spread=False)
    return Inputs(list(zip(*iterables))), Star(fn, spread=True)

