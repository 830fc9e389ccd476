"""Failure injectors for the fault tests, importable by worker processes (they see sys.path).

``trigger(kind)`` performs one kind of failure. The classes place it at one failure point:
running the work function, pickling a result (worker), unpickling a result (client), or
unpickling the work function itself (worker, before any slice runs).
"""
from __future__ import annotations

import contextlib
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


# ---- descriptors (issue 13, item 5) -------------------------------------------------------
BIG = 64 * 1024          # float64 items in a large result: 512 KiB, the arena's path
CLOSER, SCRIBBLER = 1, 3  # the slice that closes fds 0-2, the one that writes to "stdout"


def big_result(x: int):
    """A large array for every slice but 0 (whose small result opens no arena segment, so the
    worker's first segment is opened after slice CLOSER ran)."""
    import numpy as np
    return np.full(BIG if x else 4, float(x) + 0.5)


def fd_vandal(x: int, scratch: str):
    """Slice CLOSER closes fds 0-2 and reopens only 0 (so a runtime fd opened next would take 1);
    slice SCRIBBLER opens files for the free low numbers and writes to C-level stdout three
    ways. Every slice but 0 returns a large array."""
    if x == CLOSER:
        for fd in (0, 1, 2):
            os.close(fd)
        os.open(os.path.join(scratch, "zero"), os.O_RDWR | os.O_CREAT)  # takes fd 0
    elif x == SCRIBBLER:
        for name in ("one", "two"):
            os.open(os.path.join(scratch, name), os.O_RDWR | os.O_CREAT)
        junk = b"\xff" * 4096
        for _ in range(16):
            os.write(1, junk)
        libc = ctypes.CDLL(None)
        libc.write(1, junk, len(junk))
        libc.printf(b"%s\n", b"scribbled by a work function" * 64)
        libc.fflush(None)
    return big_result(x)


# ---- worker deaths, stops and rogue peers (issue 13, items 4, 7, 8) ------------------------
def steady(x: int):
    """A slice of ~10 ms that reports progress."""
    time.sleep(0.01)
    progress(1)  # noqa: F821 - a sandbox global
    return x * 2


def brief(x: int):
    """A slice of ~2 ms."""
    time.sleep(0.002)
    return x * 2


def chaos_square(x: int):
    """A short slice (~3 µs: 2M of them are seconds of work) for the 2M-slice chaos job."""
    total = 0
    for k in range(32):
        total += k * x
    return total % 1_000_003


def new_children(known: set, parent=None) -> list:
    """Child processes of ``parent`` (default: this process) whose pids are not in ``known``."""
    import psutil
    parent = parent or psutil.Process()
    return [child.pid for child in parent.children() if child.pid not in known]


@contextlib.contextmanager
def rogue_peer(runtime, identity: bytes = b"rogue"):
    """A DEALER socket connected to ``runtime``'s broker as a peer the runtime did not start but
    admitted (it holds a token of its own: a buggy or compromised worker), closed afterwards.
    What it sends must be dropped, never fatal; peers with no token are test_hostile.py's."""
    import zmq
    from dcplocal.peerauth import plain_client
    runtime._ensure_started()
    name = identity.decode()
    token = runtime.query(lambda broker: broker.tokens.issue(name))
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.IDENTITY, identity)
    socket.setsockopt(zmq.LINGER, 0)
    plain_client(socket, name, token)
    socket.connect(runtime._broker.address)
    try:
        yield socket
    finally:
        socket.close(linger=0)
        context.term()


def header(*fields) -> bytes:
    """A message header as the codec writes one: ``[version, op, *fields]``."""
    import json
    from dcplocal.protocol import PROTOCOL_VERSION
    return json.dumps([PROTOCOL_VERSION, *fields]).encode()


def wait_for(predicate, timeout: float = 20.0, every: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


@contextlib.contextmanager
def killing_workers(runtime, every: float, seed: int):
    """While the block runs, a thread SIGKILLs a random worker of ``runtime`` every ``every``
    seconds; yields the list of the pids it killed (complete once the block has ended)."""
    import os
    import random
    import signal
    import threading
    rng = random.Random(seed)
    stop = threading.Event()
    kills: list = []

    def chaos():
        while not stop.wait(every):
            pids = runtime.worker_pids()
            if pids:
                victim = rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    kills.append(victim)
                except ProcessLookupError:
                    pass
    runtime.ensure_workers(2)
    thread = threading.Thread(target=chaos)
    thread.start()
    try:
        yield kills
    finally:
        stop.set()
        thread.join()
