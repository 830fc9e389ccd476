"""What the broker takes from a peer: a header decoded, every field's type checked, or a drop.

Any process that reaches the broker's socket can send anything. A message the broker cannot
trust — not JSON, another protocol version, an unknown op, a field of the wrong type, a
message only the broker sends, a result for a task the peer was never given — is dropped and
counted (`Drops`), and logged once on the ``dcplocal`` logger. It must never break the runtime:
that would let one stray peer fail every job.

Field types come from the message dataclasses' own annotations (protocol.py), so a new message
is checked without a line here — unless it uses a field type this module does not know, which
`check` refuses loudly (tests decode every registered message).

Must not know: sockets, jobs, scheduling; it sees one header at a time.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Tuple, Type

from . import codec, protocol

log = logging.getLogger("dcplocal")


def _int(value: Any) -> bool:
    return type(value) is int


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _rows(width: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return type(value) in (list, tuple) and all(
            type(row) in (list, tuple) and len(row) == width and all(map(_int, row))
            for row in value)
    return check


_CHECKS: Dict[str, Callable[[Any], bool]] = {
    "int": _int,
    "bool": lambda value: type(value) is bool,
    "str": lambda value: type(value) is str,
    "float": _number,
    "Optional[float]": lambda value: value is None or _number(value),
    "Dict[str, Any]": lambda value: type(value) is dict,
    "Tuple[int, ...]": lambda value: type(value) in (list, tuple) and all(map(_int, value)),
    # a log record's origin (pathname, lineno, funcName, created): a few plain scalars
    "Tuple[Any, ...]": lambda value: type(value) in (list, tuple) and len(value) <= 4 and all(
        type(item) in (str, int) or _number(item) for item in value),
    "Tuple[Tuple[int, int], ...]": _rows(2),
    "Tuple[Tuple[int, int, int], ...]": _rows(3),
    "Tuple[Tuple[int, int, int, int, int], ...]": _rows(5),
}
_FIELDS: Dict[Type[protocol.Message], List[Tuple[str, Callable[[Any], bool]]]] = {}


def _field_checks(cls: Type[protocol.Message]) -> List[Tuple[str, Callable[[Any], bool]]]:
    checks = _FIELDS.get(cls)
    if checks is None:
        checks = []
        for f in dataclasses.fields(cls):
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", repr(f.type))
            if kind not in _CHECKS:
                raise TypeError(f"intake cannot check {cls.__name__}.{f.name}: {kind}")
            checks.append((f.name, _CHECKS[kind]))
        _FIELDS[cls] = checks
    return checks


def check(msg: protocol.Message) -> protocol.Message:
    """``msg`` if every field has its declared type (finite numbers); else ProtocolError."""
    for name, ok in _field_checks(type(msg)):
        if not ok(getattr(msg, name)):
            raise codec.ProtocolError(f"{type(msg).__name__}.{name} = "
                                      f"{getattr(msg, name)!r:.60} is not a valid value")
    return msg


def decode(frames: List[Any]) -> protocol.Message:
    """The checked message of a peer's ``[identity, header, *payload]``; ProtocolError if none."""
    if len(frames) < 2:
        raise codec.ProtocolError("a message with no header frame")
    return check(codec.decode(frames[1].bytes))


class Drops:
    """Messages dropped; the first is logged (a flood must not flood the log)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def drop(self, peer: bytes, error: Exception) -> None:
        self.count += 1
        self.last = f"from {peer!r}: {error}"
        if self.count == 1:
            log.warning("dcplocal broker: dropped a message from peer %r: %s (further drops are "
                        "only counted: LocalRuntime.stats()['dropped_messages'])", peer, error)
