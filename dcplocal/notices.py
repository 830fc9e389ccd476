"""How a job takes in what comes back: results into its store, errors restored, events fired.

`NoticeHandling` is the part of the Job that consumes a runtime's notices (runtime_api.py,
whichever runtime sent them): a batch of results is unpacked and collated, each failed slice's
exception is restored with its own type, the worker's traceback as ``__cause__`` and a note
naming the slice and input, and the spec's events (``result``, ``error``, ``console``,
``noProgress``…) are emitted — on the thread that drives the job, never the broker's.

Must not know: sockets, the runtime, how tasks were scheduled.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from . import codec
from .errors import RemoteTraceback, SliceError, add_note, format_traceback
from .events import Payload
from .runtime_api import Console, Results, SliceFailed, WorkEvent

if TYPE_CHECKING:
    from .results import ResultStore


class NoticeHandling:
    """Mixin of `Job`: relies on its ``emit``, ``id``, ``results``, ``status``, ``_store``,
    ``_first_error``, ``_progress`` and ``_cpu_seconds``."""

    # what the Job provides (declared here for the type checker)
    id: Optional[str]
    results: Any
    status: Payload
    work: Any
    _store: "ResultStore"
    _first_error: Optional[BaseException]
    _progress: Any
    _cpu_seconds: float

    def emit(self, name: str, *args: Any) -> bool:
        raise NotImplementedError  # EventEmitter's, in the Job

    def listenerCount(self, name: str) -> int:
        raise NotImplementedError  # EventEmitter's, in the Job

    def _emit_result(self, index: int, task_id: Optional[int] = None) -> None:
        self.emit("result", Payload(job=self.id, address=self.id, task=task_id, sliceNumber=index + 1,
                                    sort=index, input=self.results.key(index),
                                    result=self._store.get(index)))

    def _emit_status(self) -> None:
        self.emit("status", Payload(address=self.id, job=self.id, **dict(self.status)))

    def _on_results(self, msg: Results) -> None:
        self._cpu_seconds += msg.elapsed
        frames = msg.frames
        if msg.status:
            self.status.update(msg.status)
        error_descriptions = codec.loads(frames[-1:]) if msg.errors else []
        values, native, failures = codec.unpack_results(frames[:-1] if msg.errors else frames)
        self._store.put(msg.first, values, native, msg.elapsed)
        self.status.computed = self._store.computed - len(self._store.errors)
        for offset, exc in failures:
            index = msg.first + offset
            error = SliceError(f"result of slice {index + 1} (sliceIndex {index}) could not be "
                               f"unpickled in the client: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._slice_error(index, error, format_traceback(exc))
        for description in error_descriptions:
            index = description["slice"]
            self._slice_error(index, self._restore_error(description), description["stack"])
        self._emit_results(msg)
        if self._progress is not None:
            self._progress.update(self._store.computed, len(self._store.errors), self._store.total)

    def _restore_error(self, description: Dict[str, Any]) -> BaseException:
        error: Optional[BaseException] = None
        why = description.get("unpicklable") or "it could not be pickled in the worker"
        if description.get("pickled") is not None:
            try:
                error = codec.loads([description["pickled"]])
            except Exception as exc:  # noqa: BLE001 - fall back to the text below
                why = f"it could not be unpickled in the client: {type(exc).__name__}: {exc}"
        if not isinstance(error, Exception):
            if error is not None:  # SystemExit/KeyboardInterrupt from a work function: re-raised
                # as they are they would end or "interrupt" the client; they fail one slice only
                why = f"a {type(error).__name__} ends a slice, not the client"
            error = SliceError(f"work function raised {description['module']}."
                               f"{description['name']}: {description['message']} (not re-raised "
                               f"as its own type: {why}; original: {description.get('repr', '?')})")
        error.__cause__ = RemoteTraceback(description["stack"])
        return error

    def _slice_error(self, index: int, error: BaseException, stack: str) -> None:
        try:
            key = repr(self.results.key(index))
        except Exception:  # noqa: BLE001 - the note is best effort
            key = "?"
        add_note(error, f"raised by slice {index + 1} (sliceIndex {index}) of job {self.id} on input {key}")
        self._store.put_error(index, error)
        if self._first_error is None:
            self._first_error = error
        self.emit("error", Payload(
            job=self.id, address=self.id, sliceIndex=index, sliceNumber=index + 1,
            message=str(error), stack=stack, name=type(error).__name__, error=error))

    def _on_failed(self, failure: SliceFailed) -> None:
        index = failure.slice_index
        if failure.details is not None:
            payload = Payload(address=self.id, job=self.id, sliceIndex=index, sliceNumber=index + 1,
                              **failure.details)
            self.emit("noProgress", payload)
            if self.listenerCount("noProgressData"):
                self.emit("noProgressData", Payload(payload, data=self.results.key(index)))
        self._slice_error(index, failure.error, str(failure.error))

    def _on_event(self, msg: Union[Console, WorkEvent]) -> None:
        if isinstance(msg, WorkEvent):
            try:
                value = codec.loads(msg.frames)
            except Exception as exc:  # noqa: BLE001 - that slice's failure, counted as any other
                index = msg.slice_index
                error = SliceError(f"the value slice {index + 1} (sliceIndex {index}) sent with "
                                   f"work.emit({msg.name!r}) could not be unpickled in the client: "
                                   f"{type(exc).__name__}: {exc}")
                error.__cause__ = exc
                self._slice_error(index, error, format_traceback(exc))
                return
            self.work.emit(msg.name, value)
            return
        if msg.logger:
            self._log(msg)
            return
        if msg.same:
            payload = Payload(address=self.id, job=self.id, sliceIndex=msg.slice_index,
                              sliceNumber=msg.slice_index + 1, same=msg.same)
        else:
            payload = Payload(address=self.id, job=self.id, sliceIndex=msg.slice_index,
                              sliceNumber=msg.slice_index + 1, level=msg.level, message=msg.message)
        if not self.emit("console", payload):
            self._print_console(payload)

    def _log(self, msg: Console) -> None:
        """A work function's logging record: handled by this process's logger of the same name
        (with ``slice``, 1-based, and ``job`` attributes), and a console event for listeners."""
        logger = logging.getLogger(msg.logger)
        if logger.isEnabledFor(msg.levelno):
            pathname, lineno, func, created = msg.origin or ("", 0, "", time.time())
            record = logger.makeRecord(msg.logger, msg.levelno, pathname, lineno, msg.message,
                                       (), None, func, {"slice": msg.slice_index + 1,
                                                          "job": self.id})
            record.created, record.msecs = created, (created % 1) * 1000
            logger.handle(record)
        if self.listenerCount("console"):
            self.emit("console", Payload(address=self.id, job=self.id, sliceIndex=msg.slice_index,
                                         sliceNumber=msg.slice_index + 1, level=msg.level,
                                         message=msg.message, logger=msg.logger))

    def _print_console(self, payload: Payload) -> None:
        """Console output nobody listens to goes to the terminal, above the progress bar."""
        stream = sys.stderr if payload.get("level") in ("warn", "error") else sys.stdout
        if "same" in payload:
            text = f"[slice {payload.sliceNumber}] (same message repeated {payload.same} more times)"
        else:
            text = f"[slice {payload.sliceNumber}] {payload.message}"
        if self._progress is not None:
            self._progress.write(text, stream)
        else:
            print(text, file=stream)

    def _emit_results(self, done: Results) -> None:
        if self.listenerCount("result"):  # per-slice events cost nothing unless listened to
            for index in range(done.first, done.first + done.count):
                if index not in self._store.errors:
                    self._emit_result(index, done.task_id)
        self.emit("resultsUpdated", Payload(job=self.id, address=self.id))


