"""A worker process's own hygiene: its bootstrap secrets, dying with its client, and leaving no
process of its work function behind.

* `Credentials`: what the supervisor hands a worker through an inherited pipe (the broker's
  address, its PLAIN token), read once and closed; never argv (world-readable in /proc) nor
  the environment.
* `die_with_parent`: the kernel SIGKILLs the worker when its client goes (PR_SET_PDEATHSIG), and
  the worker becomes the subreaper of whatever its work function starts.
* `reap_children`: after each task, every child still running is killed and reaped.

Must not know: messages, sockets, jobs. Linux-specific calls fall back to doing nothing.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import List, NamedTuple

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
#: exit code of a worker that could not reach the broker (refused, or nobody there)
EXIT_NO_BROKER = 3
#: how often a worker without PR_SET_PDEATHSIG looks for its client (half the 2 s promise, less
#: the reaper's share)
_WATCH_SECONDS = 0.5


class Credentials(NamedTuple):
    """What the supervisor hands a worker through its bootstrap pipe (never argv/environment)."""

    address: str
    user: str
    token: str
    connect_timeout: float = 30.0

    @classmethod
    def read(cls, fd: int) -> "Credentials":
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(fd)
        return cls(**json.loads(b"".join(chunks)))


def die_with_parent(parent_pid: int) -> None:
    """Die with the client, whatever state this process is in.

    PR_SET_PDEATHSIG = SIGKILL: the kernel kills us when the client's thread that started us
    exits, however it exits (kill -9 included). No Python code of ours has to run for that, so
    it works when a work function ignores SIGTERM, holds the GIL in a long C call, or when we
    are stopped (SIGKILL wakes a stopped process to die). The work function's own children are
    killed by the client's reaper process (reaper.py) and, between tasks, by `reap_children`.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
            # orphans of the work function's children become ours, for reap_children
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent_pid and os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    if parent_pid and not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="dcplocal-parent-watch",
                         daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    """Where the kernel cannot kill us with the client (macOS): look every half second, and
    take our process group down once the client is gone. Python code, so a work function
    holding the GIL delays it; the client's reaper does not wait for us (reaper.py)."""
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_SECONDS)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _children() -> List[int]:
    """Our live child processes (any thread's), from /proc; [] where /proc cannot say."""
    found: List[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                found += map(int, f.read().split())
    except OSError:
        pass
    return found


def reap_children() -> None:
    """Kill and reap every process a task's work function started and left running.

    As a subreaper we inherit their orphans too, so repeat until none is left (bounded: a fork
    bomb is not our problem to win, only to not hang on)."""
    try:
        os.waitpid(-1, os.WNOHANG)  # ~1 us: the usual answer is "no children at all"
    except ChildProcessError:
        return
    for _ in range(8):
        children = _children()
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
