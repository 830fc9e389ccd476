"""Typed errors of dcplocal, one class per DCP error code.

Every error is a `DCPError` carrying a `code` (the DCP spec's string, e.g. ``"ERANGE"``). Where a
builtin exception means the same thing, the class also derives from it, so ``except ValueError``
keeps working for callers who never heard of DCP. Exception state lives in ``args`` so that every
class pickles across processes unchanged.

This module must not know about sockets, processes or jobs: it is imported by every layer,
the worker included.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "DCPError", "EINVAL", "ERANGE", "ETYPE", "EPERM", "ENOFUNDS", "ENOPROGRESS", "ESLICETOOSLOW",
    "ETOOMANYERRORS", "ETOOMANYTASKS", "EWORKTOOBIG", "ETOOBIG", "ERESULTTOOBIG", "ENOTAVAIL",
    "EUNMET", "JobCancelledError", "WorkerDiedError", "RuntimeBrokenError", "SliceError",
    "RemoteTraceback", "error_for_code", "add_note", "format_traceback",
]


class DCPError(Exception):
    """Base of every dcplocal error; ``code`` names the DCP error code."""

    code = "EDCP"

    def __init__(self, message: str = "", *args: Any) -> None:
        super().__init__(message, *args)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


class EINVAL(DCPError, ValueError):
    """Raised when an argument has the right type but an invalid value (NaN, zero step, bad group…)."""

    code = "EINVAL"


class ERANGE(DCPError, IndexError):
    """Raised when a range cannot reach its end, or a key/index is outside the input or output set."""

    code = "ERANGE"


class ETYPE(DCPError, TypeError):
    """Raised when an argument has the wrong type or count (e.g. ``compute.for_`` with no work)."""

    code = "ETYPE"


class EPERM(DCPError, PermissionError):
    """Raised when an operation is not allowed in the job's current state."""

    code = "EPERM"


class ENOFUNDS(DCPError):
    """Raised when the payment account cannot cover the job (reserved for the ledger stage)."""

    code = "ENOFUNDS"


class ENOPROGRESS(DCPError):
    """Raised when a slice reported no progress for longer than ``job.progressTimeout``."""

    code = "ENOPROGRESS"


class ESLICETOOSLOW(DCPError):
    """Raised when a slice ran longer than ``job.sliceTimeout`` seconds of wall time."""

    code = "ESLICETOOSLOW"


class ETOOMANYERRORS(DCPError):
    """Raised when more slices failed than ``job.errorLimit`` allows."""

    code = "ETOOMANYERRORS"


class ETOOMANYTASKS(DCPError):
    """Raised when a job has more slices than the runtime accepts."""

    code = "ETOOMANYTASKS"


class EWORKTOOBIG(DCPError):
    """Raised when the serialised work function and arguments exceed the size limit."""

    code = "EWORKTOOBIG"


class ETOOBIG(DCPError):
    """Raised when a job exceeds the maximum allowed amount of work."""

    code = "ETOOBIG"


class ERESULTTOOBIG(DCPError):
    """Raised (as a slice error) when a slice's result exceeds ``job.maxResultBytes``."""

    code = "ERESULTTOOBIG"


class ENOTAVAIL(DCPError, LookupError):
    """Raised when reading a result that has not been computed or fetched (yet)."""

    code = "ENOTAVAIL"


class EUNMET(DCPError):
    """Raised before any worker starts when the local machine cannot meet ``job.requirements``."""

    code = "EUNMET"


class JobCancelledError(DCPError):
    """Raised by ``exec``/``localExec`` when the job was cancelled (``job.cancel``, ``compute.cancel``)."""

    code = "ECANCELED"


class WorkerDiedError(DCPError):
    """Raised for a slice whose worker process died on every allowed attempt.

    ``args`` = (message, slice_index, exitcode, attempts). A negative exit code is the signal number.
    """

    code = "EWORKERDIED"

    def __init__(self, message: str = "", slice_index: Optional[int] = None,
                 exitcode: Optional[int] = None, attempts: int = 0) -> None:
        super().__init__(message, slice_index, exitcode, attempts)

    @property
    def slice_index(self) -> Optional[int]:
        return self.args[1]

    @property
    def exitcode(self) -> Optional[int]:
        return self.args[2]

    @property
    def attempts(self) -> int:
        return self.args[3]


class RuntimeBrokenError(DCPError):
    """Raised when the runtime's broker thread itself failed; call ``runtime.reset()`` to rebuild."""

    code = "EBROKEN"


class SliceError(DCPError):
    """A slice failed in a way that has no exception of its own to re-raise.

    Used when the work function's exception, or its result, could not cross the process boundary
    (unpicklable), and for infrastructure failures of a single slice.
    """

    code = "ESLICE"


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in a worker; set as ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


_BY_CODE: Dict[str, Type[DCPError]] = {
    cls.code: cls
    for cls in (EINVAL, ERANGE, ETYPE, EPERM, ENOFUNDS, ENOPROGRESS, ESLICETOOSLOW, ETOOMANYERRORS,
                ETOOMANYTASKS, EWORKTOOBIG, ETOOBIG, ERESULTTOOBIG, ENOTAVAIL, EUNMET,
                JobCancelledError, WorkerDiedError, RuntimeBrokenError, SliceError)
}


def error_for_code(code: str) -> Type[DCPError]:
    """Return the error class for a DCP error code (``DCPError`` itself for an unknown code)."""
    return _BY_CODE.get(code, DCPError)


def format_traceback(exc: BaseException) -> str:
    """``exc``'s traceback as the interpreter would print it (its causes and notes included)."""
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def add_note(exc: BaseException, text: str) -> None:
    """Attach ``text`` to ``exc``'s notes (shown under its traceback; Python 3.11+ only)."""
    if hasattr(exc, "add_note"):
        exc.add_note(text)
