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
arena (see transfers.py). Whether a worker is lost or none can be kept alive is health.py's
judgement; whether a peer's message can be trusted at all is intake.py's.

Must not know: the user API, the work function, what a result means.
"""
from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import zmq

from . import codec, health, intake, protocol, scheduling
from .arena import IDLE_SECONDS, ArenaMaps, placements, restore_frames
from .errors import RuntimeBrokenError
from .peerauth import PlainTokens, ZapHandler, plain_server
from .poolsize import PoolSize
from .runtime_api import (Console, InputWanted, JobEnded, Notice, Results, RuntimeBroken,
                          SliceFailed, WorkEvent)
from .supervisor import Supervisor
from .workerproc import EXIT_NO_BROKER
from .transfers import InputTransport, Prepared

_log = logging.getLogger("dcplocal")

#: Timeouts and cancel grace are checked this often; 50 ms keeps a 1 s cancel promise with room.
TICK_SECONDS = 0.05
#: Workers above the runtime's warm size (a localExec(n) beyond it) retire after this long with
#: no job wanting them: long enough for a script's next job to find them warm, short enough
#: that a shared node gets its memory back.
WORKER_IDLE_SECONDS = 10.0


def _event_notice(msg: Any, frames: List[Any]) -> Notice:
    """The job's notice of a worker's Console or WorkEvent message."""
    if isinstance(msg, protocol.WorkEvent):
        return WorkEvent(msg.slice_index, msg.name, frames)
    return Console(msg.slice_index, msg.level, msg.message, msg.same, msg.logger, msg.levelno,
                   tuple(msg.origin))


@dataclass
class Submission:
    """A job as the broker sees it: scheduling facts plus opaque payload frames."""

    info: scheduling.JobInfo
    work_frames: List[Any]          # [cloudpickled work, cloudpickled args, *pickled spec frames]
    options: Dict[str, Any] = field(default_factory=dict)


class _Entry:
    __slots__ = ("submission", "sink", "chunks", "prepared")

    def __init__(self, submission: Submission, sink: "queue.SimpleQueue[Any]") -> None:
        self.submission, self.sink = submission, sink
        self.chunks: Dict[int, List[Any]] = {}
        self.prepared: Dict[int, Prepared] = {}


class Broker:
    def __init__(self, loop: Any, context: zmq.Context, address: str,
                 worker_args: Sequence[str] = (), arena_idle_seconds: float = IDLE_SECONDS,
                 keep_workers: int = 1, worker_idle_seconds: float = WORKER_IDLE_SECONDS) -> None:
        self.loop = loop
        # Only workers this runtime started get in: each proves it with its own token in the
        # PLAIN handshake, which the ZAP handler checks before the ROUTER sees a frame of it.
        # The handler is bound first: a PLAIN server without one would let anyone in.
        self.tokens = PlainTokens()
        self.zap = ZapHandler(context, self.tokens)
        loop.add_reader(self.zap.fd, self.zap.handle)
        self.router = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        # A ROUTER drops what it cannot queue; a lost Release or SegmentMapped would leak a
        # region or hang a worker, and our queues are bounded by the scheduler anyway.
        self.router.setsockopt(zmq.SNDHWM, 0)
        plain_server(self.router)
        self.router.bind(address)
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.scheduler = scheduling.Scheduler()
        self.inputs = InputTransport(arena_idle_seconds)  # large input frames (transfers.py)
        worker_args = [*worker_args, *self.inputs.worker_args()]
        self.supervisor = Supervisor(self.address, loop, self._on_worker_exit, worker_args,
                                     tokens=self.tokens)
        self.jobs: Dict[str, _Entry] = {}
        self.ready: set = set()
        #: how many workers to have: the warm pool, job demand, surplus retirement
        self.pool = PoolSize(keep_workers, worker_idle_seconds)
        self.respawns = health.Respawns()       # backoff, and when no worker can be kept alive
        self._respawn_timer: Optional[Any] = None
        self.liveness = health.Liveness()       # stopped workers, silent peers
        self.drops = intake.Drops()             # messages no peer should have sent
        self.broken: Optional[BaseException] = None
        self.arena_maps = ArenaMaps(self._releases_queued)
        self.arena_warned = False
        loop.add_reader(self.router.getsockopt(zmq.FD), self._drain)
        self._ticker = loop.call_later(TICK_SECONDS, self._tick)

    # ---- calls marshalled from client threads -----------------------------------------------
    def scale(self, workers: int, job_id: Optional[str] = None) -> None:
        """Have at least ``workers`` worker processes alive (for job ``job_id``, while it runs).

        Up to the runtime's default count they stay warm for later jobs; those above it retire
        once no job has wanted them for ``worker_idle_seconds``."""
        self.supervisor.pool_size = self.pool.want(workers, job_id)
        self._guard(self._replenish)

    def submit(self, submission: Submission, sink: "queue.SimpleQueue[Any]") -> None:
        if self.broken is not None:
            sink.put(RuntimeBroken(self.broken))
            return
        self.jobs[submission.info.job_id] = _Entry(submission, sink)
        self._guard(lambda: self._perform(self.scheduler.submit(submission.info, time.monotonic())))

    def cancel(self, job_id: str) -> None:
        self._guard(lambda: self._perform(self.scheduler.cancel(job_id, time.monotonic())))

    def prepare_inputs(self, frames: List[Any]) -> Optional[Prepared]:
        """`InputTransport.prepare`, from the client's thread."""
        return self.inputs.prepare(frames)

    def feed(self, job_id: str, first: int, count: int, frames: List[Any],
             prepared: Optional[Prepared] = None) -> None:
        """A chunk of input; ``prepared``: what `prepare_inputs` made of it."""
        prepared = self.inputs.accept(prepared)
        entry = self.jobs.get(job_id)
        if entry is None:
            if prepared is not None:
                self.inputs.discard(prepared, held=False)
            return
        if count:
            entry.chunks[first] = frames  # keeps the buffers that ``remote`` points into alive
            if prepared is not None:
                entry.prepared[first] = prepared
                self.inputs.hold(prepared)
        self._guard(lambda: self._perform(
            self.scheduler.input_arrived(job_id, first, count, time.monotonic())))

    def feed_end(self, job_id: str, total: int) -> None:
        if job_id in self.jobs:
            self._guard(lambda: self._perform(
                self.scheduler.input_ended(job_id, total, time.monotonic())))

    def worker_pids(self) -> List[int]:
        return [pid for pid in map(self.supervisor.pid, list(self.supervisor.children)) if pid]

    def helper_pids(self) -> List[int]:
        """Our processes that are not workers (the reaper)."""
        return list(self.supervisor.helper_pids())

    def stats(self) -> Dict[str, Any]:
        """Counters of what went wrong and was survived (for `LocalRuntime.stats`)."""
        return {"workers_ready": len(self.ready), "dropped_messages": self.drops.count,
                "last_dropped": self.drops.last, "stale_results": self.scheduler.stale_results,
                "stopped_workers_lost": self.liveness.stopped_found,
                "silent_workers_lost": self.liveness.silent_found,
                "early_deaths_in_a_row": self.respawns.early_deaths}

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
        if isinstance(exc, RuntimeBrokenError):
            self.broken = exc
        else:
            self.broken = RuntimeBrokenError(f"the dcplocal broker failed: {type(exc).__name__}: {exc}")
            self.broken.__cause__ = exc
        for entry in self.jobs.values():
            entry.sink.put(RuntimeBroken(self.broken))
        self.jobs.clear()

    def _drain(self) -> None:
        try:
            while self.router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                try:
                    self._handle(frames)
                except codec.ProtocolError as exc:  # a stray, stale or hostile peer: never fatal
                    self.drops.drop(frames[0].bytes, exc)
        except zmq.Again:
            pass
        except Exception as exc:  # noqa: BLE001
            self._break(exc)

    def _handle(self, frames: List[Any]) -> None:
        identity = frames[0].bytes
        msg = intake.decode(frames)
        now = time.monotonic()
        worker = identity[:-3] if identity.endswith(b"/hb") else identity
        if worker in self.scheduler.workers:  # (not every identity: a flood of strangers)
            self.liveness.heard_from(worker, now)
        if isinstance(msg, protocol.TaskDone):
            self._task_done(identity, msg, frames, now)
        elif isinstance(msg, protocol.SegmentOpened):
            self._send(identity, protocol.SegmentMapped(msg.segment_id,
                                                        self._map_segment(identity, msg)))
        elif isinstance(msg, protocol.SegmentsClosed):
            self.arena_maps.closed(identity, msg.segment_ids)
        elif isinstance(msg, protocol.InputsReleased):
            self.inputs.released(identity, msg.regions)
        elif isinstance(msg, protocol.Heartbeat):
            self.scheduler.heartbeat(identity[:-3], msg.task_id, msg.slice_index, msg.slice_age,
                                     msg.progress_age, msg.progress, msg.progress_calls, now)
        elif isinstance(msg, (protocol.Console, protocol.WorkEvent)):
            if not any(task.job_id == msg.job_id for task in self.scheduler.queues.get(identity, ())):
                raise codec.ProtocolError(f"an event of job {msg.job_id!r}, which it runs no task of")
            entry = self.jobs.get(msg.job_id)
            if entry is not None:
                entry.sink.put(_event_notice(msg, frames[2:]))
        elif isinstance(msg, protocol.Ready):
            if identity in self.ready or identity in self.scheduler.workers:
                raise codec.ProtocolError("Ready again")  # would orphan the tasks it holds
            self.ready.add(identity)
            self.inputs.ready(identity, msg.maps_inputs, msg.reads_inputs)
            self.respawns.ready()
            self._perform(self.scheduler.add_worker(identity, now))
        else:
            raise codec.ProtocolError(f"{type(msg).__name__} is not a message a worker sends")

    def _task_done(self, identity: bytes, msg: protocol.TaskDone, frames: List[Any],
                   now: float) -> None:
        """A result must match the task its worker runs (a mismatch would file results under the
        wrong slices or job); one for a task it does not run is stale, the scheduler counts it.
        A worker whose result for its running task cannot be taken is lost: that task would
        otherwise wait for it forever."""
        task = self.scheduler.running(identity)
        current = task is not None and task.task_id == msg.task_id
        self.inputs.task_done(identity, msg.task_id)
        try:
            if task is not None and current and (
                    (msg.job_id, msg.first, msg.count) != (task.job_id, task.first, task.count)
                    or not 0 <= msg.errors <= task.count or msg.elapsed < 0):
                raise codec.ProtocolError(f"a TaskDone that does not match its task {msg.task_id}")
            payload = restore_frames(frames[2:], {
                index: self.arena_maps.resolve(identity, where)
                for index, where in placements(msg.placed)})
        except (ValueError, TypeError, StopIteration, codec.ProtocolError) as exc:  # e.g. a late
            # message of a forgotten worker, or one whose frames do not add up
            if current:
                self._lose(identity, f"its result could not be taken: {exc}", now)
            raise codec.ProtocolError(str(exc)) from exc
        accepted, out = self.scheduler.task_done(identity, msg.task_id, msg.elapsed, msg.errors,
                                                 now, leaving=msg.leaving)
        entry = self.jobs.get(msg.job_id)
        if accepted and entry is not None:
            entry.sink.put(Results(msg.task_id, msg.first, msg.count, msg.elapsed, msg.errors,
                                   payload, self.scheduler.status(msg.job_id)))
        self._perform(out)

    def _map_segment(self, identity: bytes, msg: protocol.SegmentOpened) -> bool:
        pid = self.supervisor.pid(identity)
        try:
            if pid is None:
                raise ProcessLookupError(f"no process for worker {identity!r}")
            self.arena_maps.map(identity, pid, msg.segment_id, msg.fd)
            return True
        except ValueError:  # a bogus fd: an empty file, say; its results take the socket
            return False
        except OSError as exc:
            if isinstance(exc, PermissionError) and not self.arena_warned:  # not just a death
                self.arena_warned = True
                _log.warning("cannot map a worker's result arena (%s); its large results "
                             "travel through the socket instead", exc)
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
                self.jobs[ins.job_id].sink.put(InputWanted(ins.count))
            elif isinstance(ins, scheduling.ReleaseChunk):
                entry = self.jobs.get(ins.job_id)
                if entry is not None:
                    entry.chunks.pop(ins.chunk_first, None)
                    prepared = entry.prepared.pop(ins.chunk_first, None)
                    if prepared is not None:
                        self.inputs.discard(prepared)
            elif isinstance(ins, scheduling.SliceFailed):
                self.jobs[ins.job_id].sink.put(SliceFailed(ins.slice_index, ins.error, ins.details))
            elif isinstance(ins, scheduling.KillWorker):
                self.supervisor.kill(ins.worker)
            elif isinstance(ins, scheduling.ForgetJob):
                self._send(ins.worker, protocol.DropJob(ins.job_id))
            elif isinstance(ins, scheduling.JobEnded):
                entry = self.jobs.pop(ins.job_id)
                # a job refused before it ran (an invalid JobInfo) raises its error in the client
                entry.sink.put(JobEnded(ins.outcome, ins.error))

    def _dispatch(self, worker: bytes, task: Any) -> None:
        entry = self.jobs[task.job_id]
        chunk: List[Any] = []
        placed: Any = ()
        remote: Any = ()
        if task.chunk_first >= 0:
            chunk, placed, remote = self.inputs.for_task(
                worker, task.task_id, entry.chunks[task.chunk_first],
                entry.prepared.get(task.chunk_first))
        self._send(worker, protocol.Task(task.task_id, task.job_id, task.first, task.count,
                                         task.chunk_first, placed, remote), chunk)

    def _forget(self, identity: bytes) -> None:
        """Let go of everything kept for a worker that is gone."""
        self.ready.discard(identity)
        self.arena_maps.forget_worker(identity)
        self.inputs.forget(identity)
        self.liveness.forget(identity)

    def _on_worker_exit(self, identity: bytes, exitcode: Optional[int]) -> None:
        def forget() -> None:
            self._drain()  # what it sent before it exited (a result, "leaving") counts first
            self._forget(identity)
            self._perform(self.scheduler.remove_worker(identity, exitcode, time.monotonic()))

        def step() -> None:
            admitted = identity in self.ready
            if exitcode == EXIT_NO_BROKER and not admitted:  # (a work function may exit 3 too)
                _log.warning("worker %s could not reach the broker at %s (refused, or nobody "
                             "answered within %g s); see its message above", identity.decode(),
                             self.address, self.supervisor.connect_timeout)
            self.scheduler.retire(identity)
            delay = self.respawns.died(not admitted, len(self.ready - {identity}),
                                       exitcode, time.monotonic())
            if exitcode == 0:
                # A clean exit (recycling) flushed its last messages first, but they may still
                # be in zmq's I/O thread: read them a tick later, or its last result would be
                # taken for lost and its slices re-run.
                self.loop.call_later(TICK_SECONDS, lambda: self._guard(forget))
            else:
                forget()
            self._respawn_after(delay)
        self._guard(step)

    def _respawn_after(self, delay: float) -> None:
        """Replace dead workers now, or after a backoff (one timer at a time)."""
        if delay <= 0:
            self._replenish()
        elif self._respawn_timer is None:
            self._respawn_timer = self.loop.call_later(delay, self._respawn)

    def _respawn(self) -> None:
        self._respawn_timer = None
        self._guard(self._replenish)

    def _check_health(self, now: float) -> None:
        """Fail the runtime if no worker can be kept alive; take back lost workers' tasks."""
        problem = self.respawns.broken(len(self.ready), now)
        if problem is not None:
            self._break(RuntimeBrokenError(problem))
            return
        holding = {worker: task.started_at for worker, task in self.scheduler.busy.items()}
        for worker, reason in self.liveness.lost(holding, self.supervisor.pid, now):
            self._lose(worker, reason, now)

    def _lose(self, worker: bytes, reason: str, now: float) -> None:
        """Take a live worker's tasks back (without an attempt) and kill it."""
        self._perform(self.scheduler.worker_lost(worker, reason, now))
        if self.supervisor.pid(worker) is None:  # not ours: no exit will be reported, forget it
            self._forget(worker)

    def _replenish(self) -> None:
        while len(self.supervisor) < self.pool.target:
            self.supervisor.start()

    def _retire_surplus(self, now: float) -> None:
        """Stop idle workers above every running job's demand once the surplus has lasted
        ``worker_idle_seconds`` (after ``localExec(6)`` the pool goes back to its warm size)."""
        # those told to stop earlier and not yet gone are not counted twice
        stopping = self.scheduler.retiring.intersection(self.supervisor.children)
        surplus = self.pool.surplus(self.jobs, len(self.supervisor) - len(stopping), now)
        if not surplus:
            return
        self.supervisor.pool_size = self.pool.target
        idle = [w for w in self.scheduler.idle if w in self.ready and w not in stopping]
        for identity in idle[:surplus]:
            self.scheduler.retire(identity)
            self._send(identity, protocol.Stop())

    def _tick(self) -> None:
        self.inputs.arena.close_idle()
        self.zap.handle()  # a safety net for the edge-triggered FD, as _drain's below
        self._guard(lambda: self._check_health(time.monotonic()))
        self._guard(lambda: self._retire_surplus(time.monotonic()))
        if self.scheduler.busy:
            self._guard(lambda: self._perform(self.scheduler.tick(time.monotonic())))
        else:
            self._drain()  # a safety net for the edge-triggered FD
        self._ticker = self.loop.call_later(TICK_SECONDS, self._tick)

    def close(self) -> None:
        """Tell every worker to stop, give them a moment, kill the rest, close the socket."""
        self._ticker.cancel()
        if self._respawn_timer is not None:
            self._respawn_timer.cancel()
        for identity in list(self.ready):
            self._send(identity, protocol.Stop())
        self.supervisor.shutdown(timeout=1.0)
        self.loop.remove_reader(self.router.getsockopt(zmq.FD))
        self.router.close(linger=0)
        self.loop.remove_reader(self.zap.fd)
        self.zap.close()
        self.arena_maps.clear()
        self.inputs.close()
