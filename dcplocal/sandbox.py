"""Runs one batch of slices of a work function, with the DCP sandbox environment around it.

The environment of the spec's "Worker Environment": ``progress``, ``console`` and ``work`` are
globals inside a work function without import (they are placed in ``builtins`` while a batch
runs, so module globals of the same name still win), and ``from dcplocal.sandbox import progress,
console, work`` works too. ``print`` and ``logging`` inside a work function become console
events; ``console`` dedupes repeated messages with the spec's "same" counter.

The hot loop does no per-slice bookkeeping: the index of the running slice is ``first +
len(results)``, so the watchdog thread and console events can find it without the loop paying
for it. A raising slice is recorded and the loop goes on with the next one.

This module knows nothing of sockets or the broker: whoever runs a batch passes an ``emit``
callable that takes a protocol message (and optional payload frames). It must not import the
user API.
"""
from __future__ import annotations

import builtins
import io
import logging
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import codec, protocol
from .errors import ERESULTTOOBIG, add_note, format_traceback
from .pickling import dumps_exception

Emit = Callable[..., None]

_LOG_LEVELS = ((logging.ERROR, "error"), (logging.WARNING, "warn"), (logging.INFO, "info"))
_GLOBAL_NAMES = ("progress", "console", "work")


class _Running:
    """Facts about the batch being run; read by console/progress and by the watchdog thread."""

    def __init__(self) -> None:
        self.job_id = ""
        self.first = 0
        self.results: List[Any] = []
        self.emit: Optional[Emit] = None
        self.public: Dict[str, Any] = {}
        self.progress_calls = 0
        self.progress_value: Optional[float] = None
        self.last_console: Optional[Tuple[str, str]] = None
        self.same = 0

    @property
    def slice_index(self) -> int:
        return self.first + len(self.results)


_running = _Running()


def _parse_progress(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    else:
        number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"progress({value!r}): must be between 0 and 1 (or '0%'..'100%')")
    return round(number, 6)


def progress(value: Any = None) -> bool:
    """Report slice progress: 0..1, ``"NN%"``, or nothing (indeterminate). Returns True."""
    run = _running
    run.progress_calls += 1
    if value is not None:
        run.progress_value = _parse_progress(value)
    if run.same:
        console._flush_same()
    return True


class _Console:
    """``console.log/info/debug/warn/error`` → console events, with the spec's "same" dedupe."""

    def _emit(self, level: str, *parts: Any) -> None:
        run = _running
        message = " ".join(str(p) for p in parts)
        if run.last_console == (level, message):
            run.same += 1
            return
        self._flush_same()
        run.last_console = (level, message)
        if run.emit is not None:
            run.emit(protocol.Console(run.job_id, run.slice_index, level, message))

    def _flush_same(self) -> None:
        run = _running
        if run.same and run.emit is not None:
            run.emit(protocol.Console(run.job_id, run.slice_index, "log", "", run.same))
        run.same = 0

    def log(self, *parts: Any) -> None:
        self._emit("log", *parts)

    def info(self, *parts: Any) -> None:
        self._emit("info", *parts)

    def debug(self, *parts: Any) -> None:
        self._emit("debug", *parts)

    def warn(self, *parts: Any) -> None:
        self._emit("warn", *parts)

    warning = warn

    def error(self, *parts: Any) -> None:
        self._emit("error", *parts)


class _Work:
    """The sandbox's ``work`` object: ``work.emit(name, value)`` and ``work.job.public``."""

    class _JobView:
        @property
        def public(self) -> Dict[str, Any]:
            return _running.public

    job = _JobView()

    def emit(self, name: str, value: Any = None) -> None:
        run = _running
        if run.emit is not None:
            run.emit(protocol.WorkEvent(run.job_id, run.slice_index, str(name)), codec.dumps(value))


console = _Console()
work = _Work()


class _ConsoleStream(io.TextIOBase):
    """sys.stdout/sys.stderr replacement: each completed line becomes one console event."""

    def __init__(self, level: str) -> None:
        self.level = level
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            console._emit(self.level, line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            console._emit(self.level, line)


class _LogForwarder(logging.Handler):
    """A worker's root handler: each record goes to the client, whose own ``logging`` handles it
    under the same logger name and level, with the slice that logged it."""

    def emit(self, record: logging.LogRecord) -> None:
        run = _running
        if run.emit is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # noqa: BLE001 - a bad format string is logging's own complaint
            message = str(record.msg)
        level = next((name for floor, name in _LOG_LEVELS if record.levelno >= floor), "debug")
        run.emit(protocol.Console(run.job_id, run.slice_index, level, message, 0, record.name,
                                  record.levelno, (record.pathname, record.lineno,
                                                   record.funcName, record.created)))


def _tag_records_with_the_slice(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """In-process, a work function's records reach this process's logging directly: a record
    factory adds the ``slice`` (1-based) and ``job`` attributes the workers' records carry."""
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if _running.emit is not None:
            record.slice, record.job = _running.slice_index + 1, _running.job_id
        return record
    return make


class SandboxEnvironment:
    """Context manager that installs the sandbox globals and console capture for a batch run.

    ``capture_output``: ``print`` becomes console events. ``forward_logging``: logging records
    are sent to the client (in a worker); otherwise they stay in this process, tagged with the
    slice (``localExec(0)``).
    """

    def __init__(self, capture_output: bool = True, forward_logging: bool = False) -> None:
        self.capture_output, self.forward_logging = capture_output, forward_logging
        self._saved: Dict[str, Any] = {}
        self._streams: Tuple[Any, Any] = (None, None)
        self._handler = _LogForwarder()
        self._factory: Any = None

    def __enter__(self) -> "SandboxEnvironment":
        for name in _GLOBAL_NAMES:
            self._saved[name] = getattr(builtins, name, _MISSING)
            setattr(builtins, name, globals()[name])
        if self.capture_output:
            self._streams = (sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = _ConsoleStream("log"), _ConsoleStream("error")
        if self.forward_logging:
            logging.getLogger().addHandler(self._handler)
        else:
            self._factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_tag_records_with_the_slice(self._factory))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.capture_output:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = self._streams
        if self.forward_logging:
            logging.getLogger().removeHandler(self._handler)
        else:
            logging.setLogRecordFactory(self._factory)
        for name, value in self._saved.items():
            if value is _MISSING:
                delattr(builtins, name)
            else:
                setattr(builtins, name, value)


_MISSING = object()


def load_work(work: Any) -> Any:
    """The callable for a job's work: a callable as is, or source text defining/evaluating to one."""
    if callable(work):
        return work
    source = str(work)
    namespace: Dict[str, Any] = {}
    try:
        return eval(compile(source, "<work function>", "eval"), namespace)  # noqa: S307 - user code
    except SyntaxError:
        pass
    exec(compile(source, "<work function>", "exec"), namespace)  # noqa: S102 - user code
    functions = [v for k, v in namespace.items() if callable(v) and not k.startswith("__")]
    if len(functions) != 1:
        raise ValueError(f"work source must define exactly one function, found {len(functions)}")
    return functions[0]


class CallWithoutDatum:
    """Work for ``compute.do(work, args)``: called once, with the arguments only."""

    def __init__(self, work: Any) -> None:
        self.work = work

    def __call__(self, _datum: Any, *args: Any) -> Any:
        return load_work(self.work)(*args)


def describe_error(exc: BaseException, slice_index: int) -> Dict[str, Any]:
    """A slice error as plain data: type, message, repr, traceback text and the pickled
    exception (None, with ``unpicklable`` saying why, when it cannot cross a process boundary)."""
    tb = format_traceback(exc)
    blob, why = dumps_exception(exc)
    try:
        text = repr(exc)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the error itself
        text = f"<{type(exc).__qualname__} with a failing __repr__>"
    return {"slice": slice_index, "name": type(exc).__qualname__, "module": type(exc).__module__,
            "message": str(exc), "repr": text, "stack": tb, "pickled": blob, "unpicklable": why}


def run_batch(work_fn: Callable[..., Any], data: Iterable[Any], args: Sequence[Any], spread: bool,
              job_id: str, first: int, emit: Emit,
              public: Optional[Dict[str, Any]] = None, interruptible: bool = False
              ) -> Tuple[List[Any], List[Tuple[int, BaseException]], float]:
    """Run ``work_fn`` over ``data`` (slices ``first…``); returns (results, errors, seconds).

    ``interruptible``: a KeyboardInterrupt propagates (the client's own process, where it is
    Ctrl-C; a worker ignores SIGINT, so there it can only be the work function's own raise).
    A failed slice's result is None and ``errors`` holds its (slice index, exception). SystemExit
    and KeyboardInterrupt raised by the work function are slice errors too.
    """
    run = _running
    results: List[Any] = []
    run.job_id, run.first, run.results, run.emit = job_id, first, results, emit
    run.public = public or {}
    run.progress_calls, run.progress_value, run.last_console, run.same = 0, None, None, 0
    errors: List[Tuple[int, BaseException]] = []
    append = results.append
    items = iter(data)
    args = tuple(args)
    started = time.perf_counter()
    while True:
        try:
            if spread:
                for datum in items:
                    append(work_fn(*datum, *args))
            elif args:
                for datum in items:
                    append(work_fn(datum, *args))
            else:
                for datum in items:
                    append(work_fn(datum))
            break
        except BaseException as exc:  # noqa: B902 - every slice failure is reported, not raised
            if interruptible and isinstance(exc, KeyboardInterrupt):
                run.emit = None
                raise  # in the client's own process, Ctrl-C stops the job, not one slice
            errors.append((first + len(results), exc))
            append(None)
    elapsed = time.perf_counter() - started
    console._flush_same()
    run.emit = None
    return results, errors, elapsed


def pack_outcome(results: List[Any], failed: List[Tuple[int, BaseException]], first: int,
                 max_result_bytes: Optional[int] = None,
                 at_item: Optional[Callable[[int], None]] = None) -> Tuple[List[Any], int]:
    """A batch's TaskDone payload and its error count: the results' frames, then, if any slice
    failed, one frame of error descriptions (`describe_error`). A result that cannot be sent
    fails its own slice with pickling's own error (or ERESULTTOOBIG), noted as such."""
    frames, failures = codec.pack_results(results, max_result_bytes, at_item)
    for offset, exc in failures:
        if not isinstance(exc, ERESULTTOOBIG):
            add_note(exc, f"raised while pickling the result of slice {first + offset + 1}, a "
                          f"{type(results[offset]).__qualname__}, to send it back")
        failed = [*failed, (first + offset, exc)]
    if failed:
        frames.append(codec.dumps([describe_error(exc, index) for index, exc in failed])[0])
    return frames, len(failed)
