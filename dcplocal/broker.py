"""The broker: a thin asyncio shell around a ZeroMQ ROUTER and the scheduling state machine.

It runs on the runtime's background thread, inside that thread's event loop (uvloop when
installed). Workers talk to it over the ROUTER (see worker.py for the message flow); clients in
the same process talk to it through `JobLink`: their calls are marshalled onto the loop with
``call_soon_threadsafe``, and the broker answers into the job's own queue, which the client
drains on its own thread. So user code (listeners, generators, unpickling of results) never
runs here::

    client thread --submit/cancel/feed--> [loop thread: Broker] <--ROUTER--> worker processes
    client thread <------ job queue ------ [loop thread: Broker]

Each step has a named function: ``_drain`` (read every waiting frame), ``_handle`` (one worker
message), ``_perform`` (carry out the scheduler's instructions), ``_on_worker_exit`` (a death
reported by the supervisor), ``_tick`` (timeouts). The broker never unpickles a payload: result,
input and event frames pass through untouched, except that a frame a worker placed in its arena
is handed on as a view of that shared memory (``ArenaMaps``), and a large input frame goes as its
address here, for the worker to read itself (remote.py), or else as a region of the client's own
arena (``input_arena``; see arena.py).

Must not know: the user API, the work function, what a result means.
"""
from __future__ import annotations

import os
import queue
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import zmq

from . import codec, protocol, scheduling
from .arena import (ARENA_MIN_BYTES, IDLE_SECONDS, Arena, ArenaMaps, Placed, RegionHolds,
                    high_fd, place_frames, placements, regions, restore_frames)
from .errors import RuntimeBrokenError
from .remote import Probe, Remote, locate
from .supervisor import Supervisor

#: Timeouts and cancel grace are checked this often; 50 ms keeps a 1 s cancel promise with room.
TICK_SECONDS = 0.05
#: Workers that die before saying Ready this many times in a row mean the runtime cannot start
#: workers at all (bad interpreter, import error): fail loudly instead of respawning forever.
MAX_EARLY_DEATHS = 3


@dataclass
class Submission:
    """A job as the broker sees it: scheduling facts plus opaque payload frames."""

    info: scheduling.JobInfo
    work_frames: List[Any]          # [cloudpickled work, cloudpickled args, *pickled spec frames]
    options: Dict[str, Any] = field(default_factory=dict)


class Prepared(NamedTuple):
    """A chunk's large frames made ready on the client's thread (see `Broker.prepare_inputs`):
    ``frames`` without those, and where each is — in the input arena (``placed``) or, for
    workers that read the client's memory themselves, at an address here (``remote``)."""

    frames: List[Any]
    placed: Placed = ()
    remote: Remote = ()
    #: the arena ``placed`` is in (a runtime restarted in between has a new one)
    arena: Optional[Arena] = None


class _Entry:
    __slots__ = ("submission", "sink", "chunks", "prepared")

    def __init__(self, submission: Submission, sink: "queue.SimpleQueue[Any]") -> None:
        self.submission, self.sink = submission, sink
        self.chunks: Dict[int, List[Any]] = {}
        self.prepared: Dict[int, Prepared] = {}


class Broker:
    def __init__(self, loop: Any, context: zmq.Context, address: str,
                 worker_args: Sequence[str] = (), arena_idle_seconds: float = IDLE_SECONDS) -> None:
        self.loop = loop
        self.router = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        # A ROUTER drops what it cannot queue; a lost Release or SegmentMapped would leak a
        # region or hang a worker, and our queues are bounded by the scheduler anyway.
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.bind(address)
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.scheduler = scheduling.Scheduler()
        # Large input frames: a worker that may read our memory (the memory probe, by address)
        # reads them itself; otherwise they are copied into this arena, for workers that may
        # open one of our memfds (the fd probe, by number).
        self.input_arena = Arena(lambda segment_id, fd: True, idle_seconds=arena_idle_seconds)
        self.input_holds = RegionHolds(self.input_arena)
        self.maps_inputs: set = set()
        self._probe_fd = self._make_probe()
        self.reads_inputs: set = set()
        #: worker -> {task id: the chunk frames it may read}: kept alive until that task's
        #: TaskDone or the worker's exit, even past its job's end (a queued task still runs)
        self.remote_holds: Dict[bytes, Dict[int, List[Any]]] = {}
        self._memory_probe = Probe()
        worker_args = [*worker_args, "--parent-probe-fd", str(self._probe_fd),
                       *self._memory_probe.args()]
        self.supervisor = Supervisor(self.address, loop, self._on_worker_exit, worker_args)
        self.jobs: Dict[str, _Entry] = {}
        self.ready: set = set()
        self.target_workers = 0
        self.early_deaths = 0
        self.broken: Optional[BaseException] = None
        self.arena_maps = ArenaMaps(self._releases_queued)
        self.arena_warned = False
        loop.add_reader(self.router.getsockopt(zmq.FD), self._drain)
        self._ticker = loop.call_later(TICK_SECONDS, self._tick)

    # ---- calls marshalled from client threads -----------------------------------------------
    def scale(self, workers: int) -> None:
        """Keep at least ``workers`` worker processes alive."""
        self.target_workers = max(self.target_workers, workers)
        self._guard(self._replenish)

    def submit(self, submission: Submission, sink: "queue.SimpleQueue[Any]") -> None:
        if self.broken is not None:
            sink.put(("broken", self.broken))
            return
        self.jobs[submission.info.job_id] = _Entry(submission, sink)
        self._guard(lambda: self._perform(self.scheduler.submit(submission.info, time.monotonic())))

    def cancel(self, job_id: str) -> None:
        self._guard(lambda: self._perform(self.scheduler.cancel(job_id, time.monotonic())))

    def prepare_inputs(self, frames: List[Any]) -> Optional[Prepared]:
        """Ready a chunk's large frames for the workers (any thread: the arena locks).

        Once a worker has said it can read our memory, nothing is copied: it reads each frame
        itself (remote.py). Before that, or if none can, the frames are copied into the input
        arena. None: the chunk has no large frame."""
        if self.reads_inputs:
            kept, remote = place_frames(frames, locate, ARENA_MIN_BYTES)
            return Prepared(kept, remote=remote) if remote else None
        arena = self.input_arena
        kept, placed = place_frames(frames, arena.place, arena.min_bytes)
        return Prepared(kept, placed=placed, arena=arena) if placed else None

    def feed(self, job_id: str, first: int, count: int, frames: List[Any],
             prepared: Optional[Prepared] = None) -> None:
        """A chunk of input; ``prepared``: what `prepare_inputs` made of it."""
        if prepared is not None and prepared.arena not in (None, self.input_arena):
            prepared = None  # readied by the broker before ours: its regions are not ours
        entry = self.jobs.get(job_id)
        if entry is None:
            if prepared is not None:
                self.input_arena.release(regions(prepared.placed))
            return
        if count:
            entry.chunks[first] = frames  # keeps the buffers that ``remote`` points into alive
            if prepared is not None:
                entry.prepared[first] = prepared
                self.input_holds.hold(regions(prepared.placed))
        self._guard(lambda: self._perform(
            self.scheduler.input_arrived(job_id, first, count, time.monotonic())))

    def feed_end(self, job_id: str, total: int) -> None:
        if job_id in self.jobs:
            self._guard(lambda: self._perform(
                self.scheduler.input_ended(job_id, total, time.monotonic())))

    def worker_pids(self) -> List[int]:
        return [pid for pid in map(self.supervisor.pid, list(self.supervisor.children)) if pid]

    # ---- the loop's own steps ---------------------------------------------------------------
    def _guard(self, step: Any) -> None:
        """Run one step; any exception in the broker itself breaks the runtime, loudly."""
        if self.broken is not None:
            return
        try:
            step()
            self._drain()
        except Exception as exc:  # noqa: BLE001 - reported to every waiting client
            self._break(exc)

    def _break(self, exc: BaseException) -> None:
        self.broken = RuntimeBrokenError(f"the dcplocal broker failed: {type(exc).__name__}: {exc}")
        self.broken.__cause__ = exc
        for entry in self.jobs.values():
            entry.sink.put(("broken", self.broken))
        self.jobs.clear()

    def _drain(self) -> None:
        try:
            while self.router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                try:
                    self._handle(frames)
                except codec.ProtocolError as exc:  # a stray or stale peer: drop its message
                    print(f"dcplocal broker: dropped a message from {frames[0].bytes!r}: {exc}",
                          file=sys.stderr)
        except zmq.Again:
            pass
        except Exception as exc:  # noqa: BLE001
            self._break(exc)

    def _handle(self, frames: List[Any]) -> None:
        identity = frames[0].bytes
        msg = codec.decode(frames[1].bytes)
        now = time.monotonic()
        if isinstance(msg, protocol.TaskDone):
            self.remote_holds.get(identity, {}).pop(msg.task_id, None)
            try:
                payload = restore_frames(frames[2:], {
                    index: self.arena_maps.resolve(identity, where)
                    for index, where in placements(msg.placed)})
            except (ValueError, TypeError, StopIteration) as exc:  # e.g. a late message of a
                # forgotten worker, or one whose frames do not add up
                raise codec.ProtocolError(str(exc)) from exc
            accepted, out = self.scheduler.task_done(identity, msg.task_id, msg.elapsed, msg.errors,
                                                     now, leaving=msg.leaving)
            entry = self.jobs.get(msg.job_id)
            if accepted and entry is not None:
                entry.sink.put(("done", msg, payload, self.scheduler.status(msg.job_id)))
            self._perform(out)
        elif isinstance(msg, protocol.SegmentOpened):
            self._send(identity, protocol.SegmentMapped(msg.segment_id,
                                                        self._map_segment(identity, msg)))
        elif isinstance(msg, protocol.SegmentsClosed):
            self.arena_maps.closed(identity, msg.segment_ids)
        elif isinstance(msg, protocol.InputsReleased):
            self.input_holds.drop([(seg_id, offset) for seg_id, offset in msg.regions], identity)
        elif isinstance(msg, protocol.Heartbeat):
            self.scheduler.heartbeat(identity[:-3], msg.task_id, msg.slice_index, msg.slice_age,
                                     msg.progress_age, msg.progress, msg.progress_calls, now)
        elif isinstance(msg, (protocol.Console, protocol.WorkEvent)):
            entry = self.jobs.get(msg.job_id)
            if entry is not None:
                entry.sink.put(("event", msg, frames[2:]))
        elif isinstance(msg, protocol.Ready):
            self.ready.add(identity)
            if msg.maps_inputs:
                self.maps_inputs.add(identity)
            if msg.reads_inputs:
                self.reads_inputs.add(identity)
            self.early_deaths = 0
            self._perform(self.scheduler.add_worker(identity, now))

    def _map_segment(self, identity: bytes, msg: protocol.SegmentOpened) -> bool:
        pid = self.supervisor.pid(identity)
        try:
            if pid is None:
                raise ProcessLookupError(f"no process for worker {identity!r}")
            self.arena_maps.map(identity, pid, msg.segment_id, msg.fd)
            return True
        except OSError as exc:
            if isinstance(exc, PermissionError) and not self.arena_warned:  # not just a death
                self.arena_warned = True
                print(f"dcplocal broker: cannot map a worker's result arena ({exc}); its large "
                      f"results travel through the socket instead", file=sys.stderr)
            return False

    def _releases_queued(self) -> None:
        """Called from any thread when the client drops arena regions: tell their workers."""
        try:
            self.loop.call_soon_threadsafe(self._send_releases)
        except RuntimeError:  # the loop is closed: the workers are gone too
            pass

    def _send_releases(self) -> None:
        for identity, regions in self.arena_maps.take_releases().items():
            if identity in self.ready:
                self._send(identity, protocol.Release(tuple(regions)))

    def _send(self, identity: bytes, msg: protocol.Message, frames: Sequence[Any] = ()) -> None:
        try:
            self.router.send_multipart([identity, codec.encode(msg), *frames], copy=False)
        except zmq.ZMQError:  # the worker is gone; its death is being reported separately
            pass

    def _perform(self, instructions: List[Any]) -> None:
        for ins in instructions:
            if isinstance(ins, scheduling.Dispatch):
                self._dispatch(ins.worker, ins.task)
            elif isinstance(ins, scheduling.SendJob):
                sub = self.jobs[ins.job_id].submission
                self._send(ins.worker, protocol.JobDef(ins.job_id, sub.options), sub.work_frames)
            elif isinstance(ins, scheduling.RequestInput):
                self.jobs[ins.job_id].sink.put(("input", ins.count))
            elif isinstance(ins, scheduling.ReleaseChunk):
                entry = self.jobs.get(ins.job_id)
                if entry is not None:
                    entry.chunks.pop(ins.chunk_first, None)
                    prepared = entry.prepared.pop(ins.chunk_first, None)
                    if prepared is not None:
                        self.input_holds.drop(regions(prepared.placed))
            elif isinstance(ins, scheduling.SliceFailed):
                self.jobs[ins.job_id].sink.put(("failed", ins))
            elif isinstance(ins, scheduling.KillWorker):
                self.supervisor.kill(ins.worker)
            elif isinstance(ins, scheduling.ForgetJob):
                self._send(ins.worker, protocol.DropJob(ins.job_id))
            elif isinstance(ins, scheduling.JobEnded):
                entry = self.jobs.pop(ins.job_id)
                entry.sink.put(("ended", ins.outcome))

    def _make_probe(self) -> int:
        """An fd of ours for workers to try opening (-1: send them every input by socket)."""
        if not self.input_arena.enabled:
            return -1
        return high_fd(os.memfd_create("dcplocal-probe", os.MFD_CLOEXEC))

    def _dispatch(self, worker: bytes, task: Any) -> None:
        entry = self.jobs[task.job_id]
        chunk: List[Any] = []
        placed: Placed = ()
        remote: Remote = ()
        if task.chunk_first >= 0:
            chunk = entry.chunks[task.chunk_first]
            prepared = entry.prepared.get(task.chunk_first, Prepared(chunk))
            if prepared.remote and worker in self.reads_inputs:
                self.remote_holds.setdefault(worker, {})[task.task_id] = chunk
                chunk, remote = prepared.frames, prepared.remote
            elif prepared.placed and worker in self.maps_inputs:
                chunk, placed = prepared.frames, prepared.placed
                self.input_holds.hold(regions(placed), worker)
        self._send(worker, protocol.Task(task.task_id, task.job_id, task.first, task.count,
                                         task.chunk_first, placed, remote), chunk)

    def _on_worker_exit(self, identity: bytes, exitcode: Optional[int]) -> None:
        def forget() -> None:
            self._drain()  # what it sent before it exited (a result, "leaving") counts first
            self.ready.discard(identity)
            self.arena_maps.forget_worker(identity)
            self.maps_inputs.discard(identity)
            self.reads_inputs.discard(identity)
            self.remote_holds.pop(identity, None)
            self.input_holds.drop_holder(identity)
            self._perform(self.scheduler.remove_worker(identity, exitcode, time.monotonic()))

        def step() -> None:
            self.scheduler.retire(identity)
            if identity not in self.ready:
                self.early_deaths += 1
            if exitcode == 0:
                # A clean exit (recycling) flushed its last messages first, but they may still
                # be in zmq's I/O thread: read them a tick later, or its last result would be
                # taken for lost and its slices re-run.
                self.loop.call_later(TICK_SECONDS, lambda: self._guard(forget))
            else:
                forget()
            if self.early_deaths >= MAX_EARLY_DEATHS:
                raise RuntimeError(f"{self.early_deaths} worker processes exited before they were "
                                   f"ready (last exit code {exitcode}); see their stderr above")
            self._replenish()
        self._guard(step)

    def _replenish(self) -> None:
        while len(self.supervisor) < self.target_workers:
            self.supervisor.start()

    def _tick(self) -> None:
        self.input_arena.close_idle()
        if self.scheduler.busy:
            self._guard(lambda: self._perform(self.scheduler.tick(time.monotonic())))
        else:
            self._drain()  # a safety net for the edge-triggered FD
        self._ticker = self.loop.call_later(TICK_SECONDS, self._tick)

    def close(self) -> None:
        """Tell every worker to stop, give them a moment, kill the rest, close the socket."""
        self._ticker.cancel()
        for identity in list(self.ready):
            self._send(identity, protocol.Stop())
        self.supervisor.shutdown(timeout=1.0)
        self.loop.remove_reader(self.router.getsockopt(zmq.FD))
        self.router.close(linger=0)
        self.arena_maps.clear()
        self.input_arena.close()  # workers' views keep their own mappings until they exit
        if self._probe_fd >= 0:
            os.close(self._probe_fd)
