"""Messages between the broker and its worker processes, and from the broker to a client.

One frozen, slotted dataclass per message. Each message class has a one-byte-ish ``OP`` code in a
registry so the codec can find the class from a header; `PROTOCOL_VERSION` travels in every header
so a stale worker is refused rather than misread. Bulk payloads (pickled work function, input
chunks, result arrays) are not fields: they ride along as extra frames, opaque to the broker.

Who sends what (ROUTER in the broker, one DEALER per worker)::

    worker -> broker   Ready          once, after connecting (pid, can it map inputs; identity is the DEALER's)
    broker -> worker   JobDef         before a worker's first task of a job  [+ work, args, spec frames]
    broker -> worker   Task           a contiguous run of slices             [+ input chunk frame]
    worker -> broker   TaskDone       results of one Task (returns its credit) [+ result frames]
    worker -> broker   SegmentOpened  a new arena segment (see arena.py); the worker waits for
    broker -> worker   SegmentMapped  whether the broker could map it
    broker -> worker   Release        the client dropped these arena regions
    worker -> broker   InputsReleased the worker no longer reads these regions of the client's arena
    worker -> broker   SegmentsClosed the worker closed these idle arena segments
    worker -> broker   Heartbeat      from the worker's watchdog thread while a Task runs
    worker -> broker   Console        print/console.* from a work function, and its logging records
    worker -> broker   WorkEvent      work.emit(name, value)                  [+ pickled value frame]
    broker -> worker   DropJob        the job ended; forget its work function
    broker -> worker   Stop           exit cleanly

This module must not import zmq, pickle or anything that does I/O: it is pure data.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, Optional, Tuple, Type

PROTOCOL_VERSION = 4

_REGISTRY: Dict[str, Type["Message"]] = {}


def register(cls: Type["Message"]) -> Type["Message"]:
    """Class decorator: enter a message class in the op registry (ops must be unique)."""
    if cls.OP in _REGISTRY:
        raise ValueError(f"duplicate message op {cls.OP!r}")
    _REGISTRY[cls.OP] = cls
    return cls


def message_class(op: str) -> Type["Message"]:
    """Return the message class registered for ``op`` (KeyError for an unknown op)."""
    return _REGISTRY[op]


@dataclass(frozen=True)
class Message:
    """Base of all messages; subclasses set ``OP``."""

    OP: ClassVar[str] = ""

    def fields(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


@register
@dataclass(frozen=True)
class Ready(Message):
    """A worker is connected. ``maps_inputs``: it can open the client's arena segments, so large
    input frames may reach it as arena regions (see arena.py); ``reads_inputs``: it can read the
    client's memory, so they may reach it as addresses there (see remote.py)."""

    OP: ClassVar[str] = "R"
    pid: int
    maps_inputs: bool = False
    reads_inputs: bool = False


@register
@dataclass(frozen=True)
class JobDef(Message):
    """Everything a worker needs to run a job's tasks; frames: work, args, input spec (pickled)."""

    OP: ClassVar[str] = "J"
    job_id: str
    #: job options the worker acts on: heartbeat interval, result size cap, spread, …
    options: Dict[str, Any] = field(default_factory=dict)


@register
@dataclass(frozen=True)
class Task(Message):
    """Run slices ``first .. first+count-1``. For data jobs, the frames hold the pickled chunk that
    starts at slice ``chunk_first`` (-1 for range jobs, whose worker expands the spec itself);
    ``placed`` lists ``[frame index, segment id, segment fd, offset, bytes]`` of chunk frames that
    are regions of the client's arena instead, ``remote`` ``[frame index, address, bytes]`` of
    those the worker reads from the client's memory itself (both sent as empty frames)."""

    OP: ClassVar[str] = "T"
    task_id: int
    job_id: str
    first: int
    count: int
    chunk_first: int = -1
    placed: Tuple[Tuple[int, int, int, int, int], ...] = ()
    remote: Tuple[Tuple[int, int, int], ...] = ()


@register
@dataclass(frozen=True)
class TaskDone(Message):
    """Results of one Task. ``errors`` counts failed slices (their details are in the payload);
    ``elapsed`` is the worker's compute time for the batch in seconds; ``leaving`` says the worker
    exits after this (recycling), so tasks queued behind this one must go elsewhere.
    ``placed`` lists ``[frame index, segment id, segment fd, offset, bytes]`` of payload frames
    that were copied into the worker's arena instead (sent as empty frames).
    Frames: result payload."""

    OP: ClassVar[str] = "D"
    task_id: int
    job_id: str
    first: int
    count: int
    elapsed: float
    errors: int
    leaving: bool = False
    placed: Tuple[Tuple[int, int, int, int, int], ...] = ()


@register
@dataclass(frozen=True)
class SegmentOpened(Message):
    """A new arena segment: memfd ``fd`` in the worker's process."""

    OP: ClassVar[str] = "O"
    segment_id: int
    fd: int


@register
@dataclass(frozen=True)
class SegmentMapped(Message):
    """The broker's answer to SegmentOpened: ``ok`` if it mapped the segment."""

    OP: ClassVar[str] = "M"
    segment_id: int
    ok: bool


@register
@dataclass(frozen=True)
class Release(Message):
    """Arena regions ``[segment id, offset]`` the client no longer uses: the worker may reuse them."""

    OP: ClassVar[str] = "L"
    regions: Tuple[Tuple[int, int], ...]


@register
@dataclass(frozen=True)
class InputsReleased(Message):
    """Regions ``[segment id, offset]`` of the client's arena that a worker no longer reads, one
    entry per task message that carried them."""

    OP: ClassVar[str] = "I"
    regions: Tuple[Tuple[int, int], ...]


@register
@dataclass(frozen=True)
class SegmentsClosed(Message):
    """Arena segments the worker closed (idle): the broker unmaps them."""

    OP: ClassVar[str] = "Z"
    segment_ids: Tuple[int, ...]


@register
@dataclass(frozen=True)
class Heartbeat(Message):
    """Watchdog facts about the running task: which slice, seconds since it started, seconds since
    its last progress() call, and the last progress value (None = indeterminate / none yet)."""

    OP: ClassVar[str] = "H"
    task_id: int
    slice_index: int
    slice_age: float
    progress_age: float
    progress: Optional[float]
    progress_calls: int


@register
@dataclass(frozen=True)
class Console(Message):
    """A console event. ``same`` > 0 is the spec's dedupe counter message (message is then '').

    A record of the work function's ``logging`` is one too, with its ``logger`` name, numeric
    ``levelno`` and ``origin`` (pathname, lineno, funcName, created), for the client's logging."""

    OP: ClassVar[str] = "C"
    job_id: str
    slice_index: int
    level: str
    message: str
    same: int = 0
    logger: str = ""
    levelno: int = 0
    origin: Tuple[Any, ...] = ()


@register
@dataclass(frozen=True)
class WorkEvent(Message):
    """``work.emit(name, value)`` from a work function; frame 0 is the pickled value."""

    OP: ClassVar[str] = "E"
    job_id: str
    slice_index: int
    name: str


@register
@dataclass(frozen=True)
class DropJob(Message):
    OP: ClassVar[str] = "X"
    job_id: str


@register
@dataclass(frozen=True)
class Stop(Message):
    OP: ClassVar[str] = "S"
