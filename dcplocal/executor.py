"""``dcplocal.Executor``: a `concurrent.futures.Executor` whose calls run as dcplocal jobs.

Who does what, on which thread::

    your thread ── submit(fn, *args) ──► pending queue ──► a batch thread takes every pending call
                                                           (at most `_batch_jobs` such threads)
                                                           and runs ONE job over them:
                                                           items (fn index, pickled args) → runtime
    futures ◄── set_result / set_exception ◄── that job's "result" / "error" events (batch thread)

    your thread ── map(fn, *iterables) ──► ONE job over the zipped input (a range stays a range),
                                           driven by a map thread whose "resultsUpdated" listener
                                           copies each newly contiguous run of results out
    the iterator ◄── those runs, in input order (your thread)         (see `executor_map`)

A loop of a thousand submits thus becomes a few jobs, and ``map`` over a million items one job
with dcplocal's adaptive batches, on the same warm runtime as ``job.localExec``.

Must not know: sockets, processes, the broker, the scheduler; it uses the user API (``compute``,
``Job`` and its events) and nothing below it. That API is imported when a job is made, never at
module import: a worker imports this module to find `_run_call`, and workers never load the user
API.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import reprlib
import threading
import time
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional,
                    Set, Tuple)

from . import pickling
from .executor_map import Cancellable, MapRun, map_inputs

if TYPE_CHECKING:
    from .job import Job
    from .runtime import LocalRuntime

#: Batch jobs one executor runs at once: one per worker (at least two). A submit that finds them
#: all busy waits in the pending queue and leaves with the next batch, which is what turns a loop
#: of submits into a few jobs. One per worker keeps the workers busy: while fewer jobs than
#: workers run, a new submit starts a job at once; while all run, each still has a slice running
#: or queued on some worker.
MIN_BATCH_JOBS = 2

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40


# ---- worker side (what workers import with it: stdlib, numpy, `pickling`, `executor_map`) ----

def _run_call(call: Tuple[int, bytes], fns: Tuple[Callable[..., Any], ...]) -> Any:
    """One submitted call, in a worker: ``call`` is (index into ``fns``, pickled (args, kwargs)).
    The job's distinct functions travel once per job as its argument, not once per call."""
    index, blob = call
    args, kwargs = pickling.loads(blob)
    return fns[index](*args, **kwargs)


# ---- client side ------------------------------------------------------------------------------

class _Submitted:
    __slots__ = ("future", "fn", "args", "kwargs")

    def __init__(self, future: cf.Future, fn: Callable[..., Any], args: Tuple[Any, ...],
                 kwargs: Dict[str, Any]) -> None:
        self.future, self.fn, self.args, self.kwargs = future, fn, args, kwargs


class _Call:
    """One submitted call as a job's input item: it travels as ``(fn index, pickled (args,
    kwargs))`` and prints as the call, since dcplocal names a failed slice's input in the
    exception's note."""

    __slots__ = ("index", "blob", "item")

    def __init__(self, index: int, blob: bytes, item: _Submitted) -> None:
        self.index, self.blob, self.item = index, blob, item

    def __reduce__(self) -> Any:
        return tuple, ((self.index, self.blob),)

    def __repr__(self) -> str:
        item = self.item
        parts = [_short.repr(a) for a in item.args]
        parts += [f"{k}={_short.repr(v)}" for k, v in item.kwargs.items()]
        name = getattr(item.fn, "__qualname__", type(item.fn).__name__)
        return f"{name}({', '.join(parts)})"



def _identity(fn: Any) -> Tuple[int, int]:
    """What makes two submitted functions the same entry of a job's table: ``obj.method``
    makes a new bound method at each access, so those count by their object and function."""
    func = getattr(fn, "__func__", None)
    return (id(getattr(fn, "__self__", None)), id(func)) if func is not None else (id(fn), 0)


def _resolve(future: cf.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: cf.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _new_job(inputs: Any, work: Any, args: List[Any], errors_allowed: int,
             runtime: Optional["LocalRuntime"]) -> "Job":
    from .compute import for_  # the user API, loaded only in the client: see the docstring

    job = for_(inputs, work, args)
    # Every failed call is its own future's (or map item's) exception: none may end the job.
    job.errorLimit = errors_allowed
    if runtime is not None:
        job.scheduler = runtime
    return job


class Executor(cf.Executor):
    """A ``concurrent.futures.Executor`` on dcplocal's warm runtime.

    ``Executor(max_workers=None, *, runtime=None)``: each job uses at most ``max_workers``
    worker processes (None: all cores, as ``job.localExec(None)``), of ``runtime`` (default: the
    warm default runtime that ``localExec`` uses; the executor never closes it).

    * ``submit(fn, *args, **kwargs)`` returns a ``Future``. Calls submitted close together run
      as one job, so a loop of submits costs a few jobs, not one each.
    * ``map(fn, *iterables, timeout=None, chunksize=1)`` runs one job over the zipped input with
      dcplocal's adaptive batches (``chunksize`` is accepted and ignored), and yields results in
      order as they arrive; an exception is raised when its item is reached.
    * Functions and arguments are pickled as dcplocal pickles work: lambdas, closures and what
      your script defines work, unlike ``ProcessPoolExecutor``.

    Example::

        with dcplocal.Executor(2) as ex:
            squares = list(ex.map(lambda x: x * x, range(10)))
            future = ex.submit(pow, 2, 10)      # future.result() == 1024
    """

    def __init__(self, max_workers: Optional[int] = None, *,
                 runtime: Optional["LocalRuntime"] = None) -> None:
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(f"max_workers must be an int or None, not {max_workers!r}")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._runtime = runtime
        self._batch_jobs = max(MIN_BATCH_JOBS, max_workers or os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._pending: Deque[_Submitted] = collections.deque()
        self._batchers: Set[threading.Thread] = set()
        self._jobs: Set[Cancellable] = set()
        self._runs: Set[MapRun] = set()
        self._shutdown = False

    # ---- submit -----------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.append(_Submitted(future, fn, args, kwargs))
            if len(self._batchers) < self._batch_jobs:
                self._warm()
                thread = threading.Thread(target=self._batch_loop, name="dcplocal-executor-batch")
                self._batchers.add(thread)
                thread.start()
        return future

    def _warm(self) -> None:
        """Start the runtime (its broker thread and workers) now, on the caller's thread. A
        batch thread starting it after the main thread returned, with the interpreter shutting
        down, would fail: no thread may register an at-exit hook then."""
        from .runtime import default_runtime  # in the client only: see the module docstring

        (self._runtime or default_runtime()).ensure_workers(self._max_workers)

    def _batch_loop(self) -> None:
        """A batch thread: run every pending call as one job, until none is left."""
        me = threading.current_thread()
        while True:
            with self._lock:
                batch = [item for item in self._pending if item.future.set_running_or_notify_cancel()]
                self._pending.clear()
                if not batch:
                    self._batchers.discard(me)
                    return
            self._run_batch(batch)

    def _run_batch(self, batch: List[_Submitted]) -> None:
        """One job over ``batch``; every future of it is done when this returns."""
        try:
            calls, fns = _prepare(batch)
            if calls:
                self._run_calls(calls, fns)
        except BaseException as exc:  # noqa: B902 - a bug here must not leave futures waiting,
            for item in batch:          # nor end the batch thread with its slot still counted
                _reject(item.future, exc)
        finally:
            for item in batch:
                _reject(item.future, RuntimeError("dcplocal.Executor: the call's job ended "
                                                  "without its result"))

    def _run_calls(self, calls: List[_Call], fns: List[Callable[..., Any]]) -> None:
        futures = [call.item.future for call in calls]
        job = _new_job(calls, _run_call, [tuple(fns)], len(calls), self._runtime)
        job.on("result", lambda ev: _resolve(futures[ev.sort], ev.result))
        job.on("error", lambda ev: _reject(futures[ev.sliceIndex], ev.error))
        control = Cancellable(job)
        with self._lock:
            self._jobs.add(control)
        try:
            job.localExec(self._max_workers)
        except BaseException as exc:  # noqa: B902 - each call's future gets it
            if job.status.runStatus == "new" and _drop_unpicklable(calls, fns):
                return self._run_batch([call.item for call in calls if not call.item.future.done()])
            for future in futures:
                _reject(future, exc)
        finally:
            control.detach()
            with self._lock:
                self._jobs.discard(control)
        return None

    # ---- map --------------------------------------------------------------------------------
    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """``fn`` over the zipped ``iterables`` (shortest wins) as one job; results in order,
        lazily. ``timeout`` (seconds, from this call) makes the iterator raise ``TimeoutError``
        when a result is not there by then. ``chunksize`` is checked as the stdlib's and otherwise
        ignored: dcplocal sizes its batches from measured slice times."""
        end_time = None if timeout is None else timeout + time.monotonic()
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        inputs, work = map_inputs(fn, iterables)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not len(inputs):
                return iter(())
            job = _new_job(inputs, work, [], len(inputs), self._runtime)
            self._warm()
            run = MapRun(job, self._max_workers, len(inputs), self._forget)
            self._runs.add(run)
            run.thread.start()
        return run.results(end_time)

    def _forget(self, run: MapRun) -> None:
        with self._lock:
            self._runs.discard(run)

    # ---- shutdown ---------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submits (``RuntimeError``); with ``cancel_futures``, calls not yet sent to a
        job are cancelled and map jobs stop (their iterators raise ``CancelledError`` at the
        first missing result); with ``wait``, return once every job has ended."""
        with self._lock:
            self._shutdown = True
            cancelled: List[_Submitted] = []
            if cancel_futures:
                cancelled, runs = list(self._pending), list(self._runs)
                self._pending.clear()
                for run in runs:
                    run.cancel()
            threads = [*self._batchers, *(run.thread for run in self._runs)]
        for item in cancelled:
            item.future.cancel()
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _abort(self) -> None:
        """Shut down, cancelling pending calls and every running job (their futures fail with
        ``JobCancelledError``): for joblib, which abandons a call once a task has failed."""
        self.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._jobs)
        for control in running:
            control.cancel()


def _prepare(batch: List[_Submitted]) -> Tuple[List[_Call], List[Callable[..., Any]]]:
    """The job's input items and table of distinct functions. A call whose arguments will not
    pickle gets that error as its future's exception, as the stdlib does, and stays out."""
    calls: List[_Call] = []
    fns: List[Callable[..., Any]] = []
    slots: Dict[Tuple[int, int], int] = {}
    for item in batch:
        try:
            blob = pickling.dumps((item.args, item.kwargs))
        except Exception as exc:  # noqa: BLE001 - that call's own failure
            _reject(item.future, exc)
            continue
        key = _identity(item.fn)
        index = slots.get(key)
        if index is None:
            index = slots[key] = len(fns)
            fns.append(item.fn)
        calls.append(_Call(index, blob, item))
    return calls, fns


def _drop_unpicklable(calls: List[_Call], fns: List[Callable[..., Any]]) -> bool:
    """The job was refused before it started because its table of functions will not pickle:
    fail the calls of each function that will not, with its pickling error. Returns whether any
    did (the others then go again, in a job of their own)."""
    dropped = False
    for index, fn in enumerate(fns):
        try:
            pickling.dumps_by_value(fn)
        except Exception as exc:  # noqa: BLE001 - that function's own failure
            dropped = True
            for call in calls:
                if call.index == index:
                    _reject(call.item.future, exc)
    return dropped
