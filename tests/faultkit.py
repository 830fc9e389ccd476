"""Failure injectors for the fault tests, importable by worker processes (they see sys.path).

``trigger(kind)`` performs one kind of failure. The classes place it at one failure point:
running the work function, pickling a result (worker), unpickling a result (client), or
unpickling the work function itself (worker, before any slice runs).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

BAD = 5          # the input whose slice fails
SLICES = 12      # inputs 0..11


class Injected(ValueError):
    """The exception the 'raise' kind raises."""


def trigger(kind: str) -> None:
    if kind == "raise":
        raise Injected("injected failure")
    if kind == "sys.exit":
        sys.exit(3)
    if kind == "os._exit":
        os._exit(7)
    if kind == "sigsegv":
        ctypes.string_at(0)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "no progress":
        time.sleep(3600)
    if kind == "busy loop":
        while True:
            pass
    raise AssertionError(f"unknown failure kind {kind}")


def _fail_on_load(kind: str) -> None:
    trigger(kind)


class Bomb:
    """A result that fails when pickled (in the worker)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self):
        trigger(self.kind)
        return (Bomb, (self.kind,))


class LateBomb:
    """A result that pickles fine and fails when unpickled (in the client)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self):
        return (_fail_on_load, (self.kind,))


class WorkThatFailsToLoad:
    """A work function whose unpickling (in the worker) fails."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, x):
        return x * 2

    def __reduce__(self):
        return (_fail_on_load, (self.kind,))


def run_point(x, kind):
    if x == BAD:
        trigger(kind)
    progress(1)  # noqa: F821 - a sandbox global
    return x * 2


def pickle_point(x, kind):
    return Bomb(kind) if x == BAD else x * 2


def unpickle_point(x, kind):
    return LateBomb(kind) if x == BAD else x * 2
