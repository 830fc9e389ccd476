"""Starts, watches, kills and replaces worker processes; reports each death at once.

A worker is ``python -m dcplocal.worker`` started with ``subprocess`` (a fresh interpreter, like
multiprocessing's *spawn*, but without re-importing the user's ``__main__``: a script with no
``if __name__ == "__main__"`` guard must not re-run itself in every worker). Its death is seen
through a pidfd registered with the event loop (Linux ≥ 5.3), which becomes readable the moment
the process exits, whatever killed it; elsewhere a waiter thread stands in for the pidfd.

Each worker leads its own session and process group, so ``kill`` takes the work function's
children with it and a terminal's Ctrl-C reaches only the client. A `Reaper` process kills those
groups should the client die without a word (reaper.py).

What a worker must know and nobody else may see — the broker's address and its PLAIN token
(peerauth.py) — goes through a pipe it inherits (``--bootstrap-fd``), never its command line
(world-readable in /proc) or environment. Its BLAS/OpenMP thread pools get the CPUs this process
may use divided by the workers (hostcpus.py), unless the user set them.

This module knows no messages and no jobs: it deals in identities (bytes) and exit codes, and
calls ``on_exit(identity, exitcode)`` on the event loop's thread.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence

from . import features
from .hostcpus import allowed_cpus, thread_environment
from .peerauth import PlainTokens
from .reaper import Reaper

OnExit = Callable[[bytes, Optional[int]], None]


#: How long a worker waits for the broker to let it in before it gives up with an error. Generous:
#: on a loaded node the broker's thread may wait for the GIL, and a first import of numpy from a
#: network filesystem can take seconds.
CONNECT_TIMEOUT = 30.0

#: ``python -m`` puts the working directory first on sys.path, so a ``dcplocal/`` folder where the
#: client happens to run would be what its workers import; ``-P`` (3.11+) leaves it out. (The
#: worker still takes the client's sys.path for each job.) A flag, not PYTHONSAFEPATH: the
#: environment would reach the work function's own subprocesses too.
SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ()

#: Worker malloc settings: blocks up to 32 MiB come from the heap, which keeps up to 128 MiB free.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}


class _Child:
    __slots__ = ("identity", "popen", "pidfd")

    def __init__(self, identity: bytes, popen: subprocess.Popen, pidfd: Optional[int]) -> None:
        self.identity, self.popen, self.pidfd = identity, popen, pidfd


class Supervisor:
    """Owns the worker processes of one runtime. Call every method on the event loop's thread."""

    def __init__(self, address: str, loop: Any, on_exit: OnExit,
                 worker_args: Sequence[str] = (), prefix: str = "w",
                 tokens: Optional[PlainTokens] = None) -> None:
        self.address, self.loop, self.on_exit = address, loop, on_exit
        self.worker_args = list(worker_args)
        self.prefix = f"{prefix}{os.getpid()}"
        self.children: Dict[bytes, _Child] = {}
        self._serial = 0
        self.tokens = tokens if tokens is not None else PlainTokens()
        #: how many workers the pool is meant to have: divides the CPUs between thread pools
        self.pool_size = 1
        self.allowed_cpus = allowed_cpus().cpus
        self.reaper: Optional[Reaper] = None
        self.connect_timeout = CONNECT_TIMEOUT

    def _environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        # The worker must import what the client imports (modules of by-reference functions).
        path = [p or os.getcwd() for p in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        env.setdefault("PYTHONUNBUFFERED", "1")
        # By default glibc gives the heap top back to the kernel once twice its (adaptive) mmap
        # threshold sits free there, so a work function that makes several large arrays per
        # slice gets fresh, page-faulting memory on every slice (measured: 8 MB results took
        # ~1.4x as long). Keep up to 128 MiB free instead (WORKER_MALLOC). These are ours, not
        # the client's: what the client's environment holds is usually another library's
        # choice for its own processes (starting a dask LocalCluster leaves
        # MALLOC_TRIM_THRESHOLD_=65536 there, which made W3 and W4 ~2x slower).
        env.update(WORKER_MALLOC)
        env.update(thread_environment(os.environ, self.allowed_cpus, self.pool_size))
        return env

    def _bootstrap(self, identity: bytes) -> int:
        """A pipe holding what only this worker may know; returns the read end, to inherit."""
        secrets = json.dumps({"address": self.address, "user": identity.decode(),
                              "token": self.tokens.issue(identity.decode()),
                              "connect_timeout": self.connect_timeout}).encode()
        read, write = os.pipe()
        try:
            os.write(write, secrets)  # a few hundred bytes: the pipe's buffer takes them at once
        finally:
            os.close(write)
        return read

    def start(self) -> bytes:
        """Start one worker process; returns its identity."""
        self._serial += 1
        identity = f"{self.prefix}-{self._serial}".encode()
        if self.reaper is None:
            self.reaper = Reaper()
        bootstrap = self._bootstrap(identity)
        try:
            popen = subprocess.Popen(
                [sys.executable, *SAFE_PATH, "-m", "dcplocal.worker",
                 "--bootstrap-fd", str(bootstrap), "--identity", identity.decode(),
                 "--parent", str(os.getpid()), *self.worker_args],
                env=self._environment(), stdin=subprocess.DEVNULL, close_fds=True,
                pass_fds=(bootstrap,),
                # Its own session from the first instruction: a Ctrl-C at the terminal must
                # never reach a worker, not even one still importing numpy.
                start_new_session=True)
        except BaseException:
            self.tokens.revoke(identity.decode())
            raise
        finally:
            os.close(bootstrap)
        self.reaper.watch(popen.pid)  # its session id is its pid, and so is its group's
        pidfd = self._watch(identity, popen)
        self.children[identity] = _Child(identity, popen, pidfd)
        return identity

    def _watch(self, identity: bytes, popen: subprocess.Popen) -> Optional[int]:
        try:
            if not features.enabled("pidfd"):
                raise OSError("pidfd disabled by DCPLOCAL_DISABLE")
            pidfd = os.pidfd_open(popen.pid)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            def wait() -> None:
                popen.wait()
                self.loop.call_soon_threadsafe(self._reap, identity)
            threading.Thread(target=wait, name="dcplocal-waiter", daemon=True).start()
            return None
        self.loop.add_reader(pidfd, self._reap, identity)
        return pidfd

    def _reap(self, identity: bytes) -> None:
        child = self.children.pop(identity, None)
        if child is None:
            return
        if child.pidfd is not None:
            self.loop.remove_reader(child.pidfd)
            os.close(child.pidfd)
        exitcode = child.popen.wait()
        self._forget(child)
        self.on_exit(identity, exitcode)

    def _forget(self, child: _Child) -> None:
        """After a worker's exit: kill what its work function left behind, revoke its token."""
        self._kill_group(child.popen.pid)
        self.tokens.revoke(child.identity.decode())
        if self.reaper is not None:
            self.reaper.forget(child.popen.pid)

    @staticmethod
    def _kill_group(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def kill(self, identity: bytes) -> None:
        """SIGKILL a worker and its process group; its exit is reported through ``on_exit``."""
        child = self.children.get(identity)
        if child is not None:
            self._kill_group(child.popen.pid)
            try:
                child.popen.kill()
            except OSError:
                pass

    def pid(self, identity: bytes) -> Optional[int]:
        child = self.children.get(identity)
        return child.popen.pid if child else None

    def __len__(self) -> int:
        return len(self.children)

    def shutdown(self, timeout: float = 1.0) -> None:
        """Wait up to ``timeout`` for workers told to stop, then kill what is left. No callbacks."""
        children, self.children = list(self.children.values()), {}
        deadline = time.monotonic() + timeout
        for child in children:
            if child.pidfd is not None:
                self.loop.remove_reader(child.pidfd)
                os.close(child.pidfd)
            try:
                child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._kill_group(child.popen.pid)
            child.popen.kill()
            child.popen.wait()
            self._forget(child)
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None

    def helper_pids(self) -> Sequence[int]:
        """Processes of ours that are not workers (the reaper)."""
        pid = self.reaper.pid if self.reaper is not None else None
        return [pid] if pid else []
