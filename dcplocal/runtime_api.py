"""The seam between a Job and whatever runs it: `Runtime`, `JobRequest`, `JobLink`, notices.

A Job describes itself once as a `JobRequest` (pickled work and arguments, the input set's
description, scheduling facts, worker options) and hands it to ``runtime.submit``. What comes
back is a `JobLink`: the job reads typed notices from it on its own thread, answers requests for
more input with ``feed``/``feed_end``, and may ``cancel``::

    Job ──submit(JobRequest)──► Runtime            (LocalRuntime, SerialRuntime, later a
     ▲                             │                 scheduler service or Dask)
     └─ link.next_notice() ◄── Results / Console / WorkEvent / InputWanted /
                               SliceFailed / JobEnded / RuntimeBroken

Every notice is a frozen dataclass; payload frames (results, event values) are opaque here and
decoded by the job with the codec. A runtime never runs listeners or unpickles results: the
job's thread does.

Must not know: sockets, processes, the scheduler's policy, the Job class itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Tuple, Union


@dataclass
class JobRequest:
    """A job as any runtime needs it: what to run, over what, and within which limits."""

    job_id: str
    work: bytes                      # pickled by value (pickling.dumps_by_value)
    arguments: bytes                 # likewise
    spec: List[Any]                  # [pickled InputSpec] for ranges/distributions, [] for data
    total: Optional[int]             # slices; None while a streamed input set has not ended
    streaming: bool                  # data job: the runtime asks for input with InputWanted
    options: Dict[str, Any] = field(default_factory=dict)   # for the workers (see worker.py)
    error_limit: int = 0
    max_attempts: int = 4
    progress_timeout: Optional[float] = None
    slice_timeout: Optional[float] = None
    initial_slice_seconds: Optional[float] = None
    max_workers: Optional[int] = None


# ---- notices: runtime -> job ------------------------------------------------------------

@dataclass(frozen=True)
class Results:
    """One task's outcome: ``frames`` are codec.pack_results' frames, plus one frame of error
    descriptions when ``errors`` > 0; ``status`` carries the runtime's counters, if any."""

    task_id: int
    first: int
    count: int
    elapsed: float
    errors: int
    frames: List[Any]
    status: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Console:
    """A console event of a slice (``same`` > 0: the spec's repeat counter), or a logging
    record of the work function when ``logger`` is set."""

    slice_index: int
    level: str
    message: str
    same: int = 0
    logger: str = ""
    levelno: int = 0
    origin: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class WorkEvent:
    """``work.emit(name, value)`` of a slice; ``frames`` is the codec.dumps of the value."""

    slice_index: int
    name: str
    frames: List[Any]


@dataclass(frozen=True)
class InputWanted:
    """A streamed job should feed ``count`` more items (``link.feed``), or ``feed_end``."""

    count: int


@dataclass(frozen=True)
class SliceFailed:
    """The runtime failed a slice itself (no progress, too slow, its workers kept dying)."""

    slice_index: int
    error: BaseException
    details: Optional[Dict[str, Any]] = None   # noProgress facts, for ENOPROGRESS/ESLICETOOSLOW


@dataclass(frozen=True)
class JobEnded:
    """The runtime holds nothing more of the job: ``outcome`` is complete, cancelled or failed;
    ``error``, when the runtime refused the job itself (an invalid option), is what to raise."""

    outcome: str
    error: Optional[BaseException] = None


@dataclass(frozen=True)
class RuntimeBroken:
    """The runtime itself failed; the job cannot go on there."""

    error: BaseException


Notice = Union[Results, Console, WorkEvent, InputWanted, SliceFailed, JobEnded, RuntimeBroken]


class JobLink(Protocol):
    """The job's end of one submitted job."""

    def next_notice(self, timeout: float) -> Optional[Notice]:
        """The next notice, or None if none came within ``timeout`` seconds."""

    def feed(self, first: int, count: int, frames: List[Any]) -> None:
        """Items ``first…first+count-1`` of a streamed input set (codec.pack_inputs frames)."""

    def feed_end(self, total: int) -> None:
        """The streamed input set ended with ``total`` items."""

    def cancel(self) -> None:
        """Stop the job: no more tasks; it ends with JobEnded (safe from any thread)."""


class Runtime(Protocol):
    """Anything a job can run on (``job.scheduler``)."""

    def submit(self, request: JobRequest) -> JobLink:
        """Start running ``request``; notices follow on the returned link."""
