"""Worker process main: ``python -m dcplocal.worker --bootstrap-fd FD --identity ID``.

One DEALER socket to the broker's ROUTER. The flow is pull-based: the worker says ``Ready`` once,
and every ``TaskDone`` it sends returns one credit. The scheduler may hold a second task queued
in this worker's socket (scheduling.PIPELINE_DEPTH), so the worker runs its tasks in the order
they arrive and starts the next one as soon as it has sent a result::

    worker                      broker
      | --- Ready(pid) ---------> |
      | <-- JobDef [+work,args,spec]   (once per job per worker; the work function is cached)
      | <-- Task [+chunk] ------- |
      | --- Console / WorkEvent ->|   (while the task runs)
      | --- SegmentOpened ------->|   (a new arena segment; waits for SegmentMapped)
      | --- TaskDone [+results] ->|   (large frames copied into the arena, see arena.py)
      | --- InputsReleased ------>|   (after a task whose large inputs were client arena regions)
      | <-- Release ------------- |   (the client dropped arena regions: reuse them)
      | --- SegmentsClosed ------>|   (idle arena segments given back to the system)
      | <-- DropJob / Stop ------ |

A second DEALER, on a thread, sends ``Heartbeat`` facts about the running slice (heartbeat.py):
a sign of life while any task runs, and watchdog facts for jobs with a progress or slice timeout.
It is started before Ready, so its descriptors are taken before any work function runs.

Admission: the broker's address and this worker's PLAIN token come through an inherited pipe
(``--bootstrap-fd``); the broker's ZAP handler checks the token before it reads any frame of ours
(peerauth.py). A worker the broker does not let in within the bound exits with EXIT_NO_BROKER.

Process hygiene: the worker asks the kernel to SIGKILL it when its parent dies, and leads its
own process group so the supervisor (and the client's reaper, should the client die) can kill it
together with any children its work function started, and so a Ctrl-C at the terminal reaches
the client only. Children a task leaves running are killed and reaped when the task ends.

Imports: protocol, codec, arena, remote, heartbeat, sandbox, taskexec, inputs, peerauth, workerproc
(worker side only) — never the user API.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import logging
import os
import signal
import sys
import time
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import codec, features, protocol
from .arena import (IDLE_SECONDS, Arena, Placement, can_open, place_frames, placements,
                    private_view, restore_frames)
from .remote import can_read
from .remote import read as read_remote
# Unpickling input specs needs inputs (fractions, decimal, kernels): imported here, before Ready,
# so a warm job's first slice on this worker does not pay ~6 ms of imports.
from . import inputs  # noqa: F401
from .heartbeat import Heartbeat
from .peerauth import HandshakeError, plain_client, wait_for_handshake
from .workerproc import EXIT_NO_BROKER, Credentials, die_with_parent, reap_children
from .sandbox import SandboxEnvironment, _running
from .taskexec import LoadedJob, execute_task


def _limit_memory(limit: int) -> None:
    """Cap this process's address space, so a runaway slice gets MemoryError, not the OOM killer."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _private_rss_bytes() -> int:
    """Resident memory that is this process's own (resident minus shared), what a leak grows.

    The arena's shared segments are left out: they are reused, and counting them would recycle
    a worker for holding results the client has not dropped yet."""
    try:
        with open("/proc/self/statm") as statm:
            fields = statm.read().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _drop_tracebacks(failure: Optional[BaseException]) -> None:
    """Let a failed slice's frames go, and those of its causes: they hold its inputs (a mapped
    region the client waits for us to release) in a cycle with the exception."""
    pending, seen = [failure], set()
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:    # a chain may loop back on itself
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending += (exc.__cause__, exc.__context__)


def _adopt_client_world(options: Dict[str, Any]) -> None:
    """Take the client's import path, working directory and logging level of the job's
    submission: a warm worker started before the client changed them must import and open what
    the client can, and log what it would."""
    cwd = options.get("cwd")
    if cwd and cwd != os.getcwd():
        try:
            os.chdir(cwd)
        except OSError:  # gone or forbidden here: the work function will say what it misses
            pass
    # records below the client's lowest level would be dropped there: do not even send them
    logging.getLogger().setLevel(options.get("log_level", logging.WARNING))
    path = options.get("sys_path")
    if path is not None and sys.path[:len(path)] != path:
        sys.path[:] = [*path, *(entry for entry in sys.path if entry not in path)]
        importlib.invalidate_caches()  # a module written since our last import must be found


class Worker:
    def __init__(self, credentials: Credentials, identity: bytes, recycle_slices: int = 0,
                 recycle_rss: int = 0, arena_idle_seconds: float = IDLE_SECONDS,
                 parent: int = 0, parent_probe_fd: int = -1, parent_probe_address: int = 0,
                 parent_probe_bytes: str = "", memory_limited: bool = False) -> None:
        import zmq

        self.credentials, self.identity = credentials, identity
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, identity)
        self.socket.setsockopt(zmq.LINGER, 1000)
        plain_client(self.socket, credentials.user, credentials.token)
        # watched until the broker lets us in (wait_until_admitted), so a worker with nobody
        # to talk to says so and exits instead of waiting forever
        self._monitor: Any = self.socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.socket.connect(credentials.address)
        self.jobs: Dict[str, LoadedJob] = {}
        self.heartbeat: Optional[Heartbeat] = None
        self.recycle_slices, self.recycle_rss = recycle_slices, recycle_rss
        self.slices_run = 0
        #: the job whose client sys.path and cwd this process has taken (see _adopt_client_world)
        self.world_of = ""
        # Under a memory limit, the segments the client holds must not take our address space.
        self.arena = Arena(self._announce_segment, idle_seconds=arena_idle_seconds,
                           mapped=not memory_limited)
        self.arena.enabled &= features.enabled("memfd")
        #: messages that arrived while we waited for SegmentMapped, handled next
        self.backlog: Deque[List[Any]] = collections.deque()
        self.parent = parent
        #: large inputs may arrive as regions of the client's arena: we may open its memfds
        self.maps_inputs = bool(parent) and parent_probe_fd >= 0 and can_open(parent, parent_probe_fd)
        #: ...or as addresses in the client: we may read its memory
        self.reads_inputs = (features.enabled("vm_readv")
                             and can_read(parent, parent_probe_address, parent_probe_bytes))
        #: (segment id, offset) of input regions whose views died, for the next InputsReleased
        #: (a deque: a finalizer may append from any thread while the serve loop takes)
        self.inputs_released: Deque[Tuple[int, int]] = collections.deque()
        #: this task's input regions not mapped yet: frame index -> Placement
        self.unmapped_inputs: Dict[int, Placement] = {}

    def send(self, msg: protocol.Message, frames: Sequence[Any] = ()) -> None:
        self.socket.send_multipart([codec.encode(msg), *frames], copy=False)

    def wait_until_admitted(self) -> None:
        """Block until the broker has let us in; `HandshakeError` if it refuses or is not there."""
        wait_for_handshake(self.socket, self._monitor, self.credentials.address,
                           self.credentials.connect_timeout)

    def serve(self) -> None:
        self.heartbeat = Heartbeat(self.context, self.credentials, self.identity)
        self.heartbeat.start()
        try:
            self._serve()
        finally:
            self.heartbeat.close()

    def _serve(self) -> None:
        self.send(protocol.Ready(os.getpid(), self.maps_inputs, self.reads_inputs))
        with SandboxEnvironment(capture_output=True, forward_logging=True):
            while True:
                self._close_idle_segments()
                if self.inputs_released:
                    released = [self.inputs_released.popleft()
                                for _ in range(len(self.inputs_released))]
                    self.send(protocol.InputsReleased(tuple(released)))
                # wake up now and then while some segment is idle, so it can be given back
                if self.backlog:
                    frames = self.backlog.popleft()
                elif self.socket.poll(1000 if self.arena.idle else None):
                    frames = self.socket.recv_multipart(copy=False)
                else:
                    continue
                msg = codec.decode(frames[0].bytes)
                if isinstance(msg, protocol.Release):
                    self.arena.release(msg.regions)
                elif isinstance(msg, protocol.Task):
                    if self.run_task(msg, frames[1:]):
                        return
                elif isinstance(msg, protocol.JobDef):
                    self.jobs[msg.job_id] = LoadedJob(msg.job_id, msg.options, frames[1:])
                elif isinstance(msg, protocol.DropJob):
                    self.jobs.pop(msg.job_id, None)
                elif isinstance(msg, protocol.Stop):
                    return

    def _announce_segment(self, segment_id: int, fd: int) -> bool:
        """Have the broker map a new arena segment before any result uses it; its answer."""
        self.send(protocol.SegmentOpened(segment_id, fd))
        while True:
            frames = self.socket.recv_multipart(copy=False)
            msg = codec.decode(frames[0].bytes)
            if isinstance(msg, protocol.SegmentMapped) and msg.segment_id == segment_id:
                return msg.ok
            if isinstance(msg, protocol.Release):  # may spare the next segment (the lock is ours)
                self.arena.release(msg.regions)
            else:
                self.backlog.append(frames)

    def _inputs(self, task: protocol.Task, chunk: List[Any]) -> Iterator[Any]:
        """This task's items of its chunk, each fetched (read from the client, or mapped) only
        as the work function reaches it; the chunk's frames it does not use are never fetched."""
        remote = {index: (address, nbytes) for index, address, nbytes in task.remote}
        chunk = restore_frames(chunk, dict.fromkeys([*remote, *self.unmapped_inputs]))

        def fetch(index: int) -> Any:  # each frame is asked for once
            if index in self.unmapped_inputs:
                view = private_view(self.parent, self.unmapped_inputs[index], self._input_released)
                del self.unmapped_inputs[index]  # only once mapped: else finally lets go
                return view
            if index in remote:
                return read_remote(self.parent, *remote.pop(index))
            return chunk[index]

        start = task.first - task.chunk_first
        return codec.unpack_inputs(chunk, start, start + task.count, fetch)

    def _input_released(self, segment_id: int, offset: int) -> None:
        self.inputs_released.append((segment_id, offset))

    def _close_idle_segments(self) -> None:
        closed = self.arena.close_idle()
        if closed:
            self.send(protocol.SegmentsClosed(tuple(closed)))

    def _worn_out(self) -> bool:
        """Recycling: leave (cleanly, between tasks) after N slices or above the RSS guard.

        Asked as each task's results are sent, so the TaskDone can say so: the broker must not
        count the tasks queued behind it as lost to a death."""
        if self.recycle_slices and self.slices_run >= self.recycle_slices:
            return True
        return bool(self.recycle_rss) and _private_rss_bytes() > self.recycle_rss

    def _watch(self, task_id: int, job: LoadedJob) -> None:
        if self.heartbeat is not None:
            self.heartbeat.watch(task_id, job.options.get("heartbeat") or 0.0)

    def run_task(self, task: protocol.Task, chunk: List[Any]) -> bool:
        """Run one task and send its results; True when this worker leaves now (recycling)."""
        started = time.perf_counter()  # the task's whole cost (expand, run, pack) sizes batches
        job = self.jobs[task.job_id]
        if self.world_of != task.job_id:
            _adopt_client_world(job.options)
            self.world_of = task.job_id
        _running.first, _running.results = task.first, []  # watchdog: "at the first slice"
        self._watch(task.task_id, job)
        self.slices_run += task.count
        # the client holds each of these regions for us until we say we let go of it
        self.unmapped_inputs = dict(placements(task.placed))

        def at_item(offset: int) -> None:  # the watchdog blames the result being pickled
            _running.first, _running.results = task.first + offset, []

        try:
            data: Optional[Iterable[Any]] = None
            unreadable: Optional[BaseException] = None
            if task.chunk_first >= 0:
                try:
                    data = self._inputs(task, chunk)
                except BaseException as exc:  # noqa: B902 - its chunk's index cannot be read
                    unreadable = exc
            frames, errors, failed = execute_task(job, task.first, task.count, data, self.send,
                                                  at_item, unreadable)
            leaving = self._reply(task, frames, errors, started)
            for _index, failure in failed:
                _drop_tracebacks(failure)
            return leaving
        finally:
            reap_children()
            if self.heartbeat is not None:
                self.heartbeat.watch(0, 0)
            for segment_id, _fd, offset, _nbytes in self.unmapped_inputs.values():
                self._input_released(segment_id, offset)  # never looked at: let go at once

    def _reply(self, task: protocol.Task, frames: List[Any], errors: int, started: float) -> bool:
        leaving = self._worn_out()
        frames, placed = place_frames(frames, self.arena.place, self.arena.min_bytes)
        elapsed = time.perf_counter() - started
        self.send(protocol.TaskDone(task.task_id, task.job_id, task.first, task.count, elapsed,
                                    errors, leaving, placed), frames)
        return leaving


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dcplocal.worker")
    parser.add_argument("--bootstrap-fd", type=int, required=True,
                        help="an inherited pipe holding the broker's address and our token")
    parser.add_argument("--identity", required=True)
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("--memory-limit", type=int, default=0, help="bytes of address space")
    parser.add_argument("--recycle-slices", type=int, default=0)
    parser.add_argument("--recycle-rss", type=int, default=0, help="bytes")
    parser.add_argument("--arena-idle-seconds", type=float, default=IDLE_SECONDS)
    parser.add_argument("--parent-probe-fd", type=int, default=-1,
                        help="an fd of the client's, to find out if we may open its arena")
    parser.add_argument("--parent-probe-address", type=int, default=0,
                        help="where --parent-probe-bytes lie in the client's memory")
    parser.add_argument("--parent-probe-bytes", default="", help="hex")
    opts = parser.parse_args(argv)
    try:
        os.setpgid(0, 0)  # already done by the supervisor (new session); for manual starts
    except OSError:
        pass
    die_with_parent(opts.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the client's to handle
    if opts.memory_limit:
        _limit_memory(opts.memory_limit)
    worker = Worker(Credentials.read(opts.bootstrap_fd), opts.identity.encode(),
                    opts.recycle_slices, opts.recycle_rss, opts.arena_idle_seconds, opts.parent,
                    opts.parent_probe_fd, opts.parent_probe_address, opts.parent_probe_bytes,
                    bool(opts.memory_limit))
    try:
        worker.wait_until_admitted()
    except HandshakeError as exc:
        print(f"dcplocal worker {opts.identity}: {exc}; exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_NO_BROKER)
    worker.serve()
    worker.socket.close(linger=1000)
    worker.context.term()


if __name__ == "__main__":
    main()
