"""A worker's heartbeat: facts about the running slice, sent from a thread of its own.

A second DEALER (identity ``<worker>/hb``) sends ``Heartbeat`` messages: every
`LIVENESS_SECONDS` while any task runs — a sign of life for a broker that cannot see the
process itself (health.py) — and every ``interval`` seconds while a task of a job with a
watchdog (progress or slice timeout) runs, so the broker can tell a slice that stopped making
progress. It keeps ticking while a work function spins in pure Python, because the GIL is handed
over every few ms; it falls silent in a long C call that holds the GIL (which is why the broker
judges its own workers by their process state, not by this silence). The worker starts it before
Ready, so its descriptors are taken before any work function can close fds 0-2.

Must not know: jobs, results, the arena; it reads only the sandbox's running-slice facts.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from . import codec, protocol
from .peerauth import plain_client
from .sandbox import _running
from .workerproc import Credentials

#: While a task runs, a heartbeat goes out at least this often, whatever the job: the broker
#: takes a peer it cannot watch as lost after health.SILENT_PEER_SECONDS of silence (30 beats).
#: One wake-up a second costs nothing; no task pays for it (the thread is not woken per task).
LIVENESS_SECONDS = 1.0


class Heartbeat(threading.Thread):
    """Sends facts about the running slice: every ``interval`` s while a task of a watched job
    runs, every LIVENESS_SECONDS while any other task runs."""

    def __init__(self, context: Any, credentials: Credentials, identity: bytes) -> None:
        super().__init__(name="dcplocal-heartbeat", daemon=True)
        import zmq

        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, identity + b"/hb")
        self.socket.setsockopt(zmq.LINGER, 0)
        plain_client(self.socket, credentials.user, credentials.token)  # admitted as its worker
        self.socket.connect(credentials.address)
        self.task_id = 0          # 0 = no task running
        self.interval = 0.0       # 0 = the running task's job has no watchdog
        self.wake = threading.Event()
        self.stopping = False
        # the running slice as of the last beat: which task and slice, since when, progress calls
        self.watched, self.slice_index, self.calls = 0, -1, -1
        self.slice_since = self.progress_since = 0.0

    def watch(self, task_id: int, interval: float) -> None:
        """A task starts (``interval``: its job's watchdog period, 0 for none) or, with
        ``task_id`` 0, ends. Only a watched task wakes the thread: it must sample at once."""
        self.task_id, self.interval = task_id, interval
        if interval:
            self.wake.set()

    def close(self) -> None:
        """Stop the thread, which closes its socket (the context cannot end while it is open)."""
        self.stopping = True
        self.wake.set()
        self.join(timeout=2.0)

    def run(self) -> None:
        while not self.stopping:
            task_id, interval = self.task_id, self.interval
            if task_id:
                self._beat(task_id)
            if task_id and interval:
                time.sleep(interval)
            else:
                self.wake.wait(LIVENESS_SECONDS)
                self.wake.clear()
        self.socket.close(linger=0)

    def _beat(self, task_id: int) -> None:
        """Send one Heartbeat (the clocks between beats are this thread's own attributes)."""
        now = time.monotonic()
        index, seen_calls = _running.slice_index, _running.progress_calls
        # a new task may start at the same slice index (another job's slice 0): new clocks
        if index != self.slice_index or task_id != self.watched:
            self.watched, self.slice_index = task_id, index
            self.slice_since = self.progress_since = now
            self.calls = seen_calls
        elif seen_calls != self.calls:
            self.calls, self.progress_since = seen_calls, now
        beat = protocol.Heartbeat(task_id, index, now - self.slice_since, now - self.progress_since,
                                  _running.progress_value, seen_calls)
        self.socket.send(codec.encode(beat))
