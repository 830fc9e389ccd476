"""EventEmitter with the DCP spec's method names, and event payloads with attribute access.

Listeners run on the thread that calls ``emit`` — for jobs that is always the caller's thread
(the one waiting in ``exec``/``localExec``), never the broker's. A listener that raises is
reported with its traceback on the "dcplocal" logger and the others still run: a buggy listener must not corrupt
the job.

Must not know: jobs, sockets, processes.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, FrozenSet, List, Optional

from .errors import EINVAL, ETYPE

_log = logging.getLogger("dcplocal")

Listener = Callable[..., Any]


class Payload(dict):
    """An event payload: a dict whose keys are also attributes (``ev.sliceNumber``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class EventEmitter:
    """``on``/``addListener``/``addEventListener``, ``once``, ``off``/``removeListener``/
    ``removeEventListener``, ``listenerCount``, ``emit``; ``@emitter.on(name)`` as a decorator.

    ``known_events``, when given, makes subscribing to any other name an ``EINVAL`` (a typo in
    an event name would otherwise wait forever for an event that never comes).
    """

    def __init__(self, known_events: Optional[FrozenSet[str]] = None) -> None:
        self._listeners: Dict[str, List[Listener]] = {}
        self._known_events = known_events

    def _check(self, name: str, listener: Optional[Listener]) -> None:
        if not isinstance(name, str):
            raise ETYPE(f"event name must be a str, not {type(name).__name__}")
        if self._known_events is not None and name not in self._known_events:
            raise EINVAL(f"unknown event name {name!r}; known: {', '.join(sorted(self._known_events))}")
        if listener is not None and not callable(listener):
            raise ETYPE(f"listener for {name!r} must be callable, not {type(listener).__name__}")

    def on(self, name: str, listener: Optional[Listener] = None) -> Any:
        """Add ``listener`` for ``name``; without a listener, return a decorator that adds one."""
        self._check(name, listener)
        if listener is None:
            def decorate(fn: Listener) -> Listener:
                self.on(name, fn)
                return fn
            return decorate
        self._listeners.setdefault(name, []).append(listener)
        return self

    addListener = on
    addEventListener = on

    def once(self, name: str, listener: Optional[Listener] = None) -> Any:
        """Like ``on``, but the listener is removed after its first call."""
        self._check(name, listener)
        if listener is None:
            def decorate(fn: Listener) -> Listener:
                self.once(name, fn)
                return fn
            return decorate

        def wrapper(*args: Any) -> Any:
            self.off(name, wrapper)
            return listener(*args)

        wrapper.__wrapped__ = listener  # type: ignore[attr-defined]
        return self.on(name, wrapper)

    def off(self, name: str, listener: Listener) -> "EventEmitter":
        """Remove one registration of ``listener`` (or of a ``once`` wrapper around it)."""
        listeners = self._listeners.get(name, [])
        for i, registered in enumerate(listeners):
            if registered is listener or getattr(registered, "__wrapped__", None) is listener:
                del listeners[i]
                break
        return self

    removeListener = off
    removeEventListener = off

    def listenerCount(self, name: str) -> int:
        return len(self._listeners.get(name, ()))

    def emit(self, name: str, *args: Any) -> bool:
        """Call every listener of ``name`` with ``args``; returns whether there was any."""
        listeners = self._listeners.get(name)
        if not listeners:
            return False
        for listener in list(listeners):
            try:
                listener(*args)
            except Exception:  # noqa: BLE001 - reported, never allowed to break the job
                _log.exception("exception in %r listener %r", name, listener)
        return True
