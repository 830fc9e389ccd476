"""The scheduler's brain: a pure state machine, events in, instructions out.

`Scheduler` decides which worker runs which slices, how many slices go in one task (adaptive
batching), when a dead worker's slices are retried, when a slice has stopped making progress, and
when a job has ended. It never touches a socket, a process, a clock or a payload: the caller (the
broker) passes ``now`` in, performs the returned instructions, and carries payloads around it.

Slices are identified by their 0-based index. A task is a contiguous run ``[first, first+count)``
of one job; each dispatch gets a fresh ``task_id`` that doubles as the attempt id, so a late or
duplicate result (from a worker already declared dead) is recognised and ignored.

Pipelining: a worker may hold PIPELINE_DEPTH tasks, the first running and the rest queued in its
socket, so it starts the next task the moment it sends a result instead of idling for the round
trip (measured at 1-2 ms on 2 busy cores: 20 ms per worker on a 60 ms job). A queued task cannot
be moved to a worker that turns idle, so one is queued only away from the tail, or when it is too
short to unbalance the tail (PREFETCH_TAIL_SECONDS). A job whose next task must not be queued
keeps its round-robin turn: the slot stays empty, so a worker frees up for it rather than another
job keeping every worker busy until its own tail.

Retry policy: a worker that dies mid-task has its running task split in halves and re-queued
without penalty, so an innocent slice batched with a crasher is isolated in log2(batch) steps; a
single-slice task whose worker dies costs that slice one attempt, and after ``max_attempts`` the
slice fails alone with WorkerDiedError. Its queued tasks never ran: they go back whole.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

from .errors import EINVAL, ENOPROGRESS, ESLICETOOSLOW, WorkerDiedError

#: Aim for tasks of ~20 ms: long enough that a round trip (0.1 ms idle, 1-10 ms when the workers
#: hold both cores and the broker thread waits for one) is hidden behind the queued next task,
#: short enough that a cancel or the tail of a job waits for at most a few tens of ms.
TARGET_TASK_SECONDS = 0.02
#: A batch grows at most 8x per measured task, so one unrepresentative fast sample cannot create
#: a task that holds the tail hostage; 8x still reaches 10^6-slice batches in ~7 round trips.
GROWTH = 8
#: Guided self-scheduling: a task takes at most remaining / (TAIL_FACTOR * workers) slices, so
#: near the end batches shrink and no worker idles while another holds a long one.
TAIL_FACTOR = 2
#: ...but never below what runs in ~2 ms: a shorter task cannot unbalance the tail noticeably,
#: and each split costs a round trip (without a floor, 1M trivial slices end in ~35
#: single-digit tasks).
TAIL_FLOOR_SECONDS = 0.002
#: Seconds a cancelled or failed job's in-flight tasks may take to come back before their workers
#: are killed: short enough to honour "stop within 1 s", long enough to keep results in flight.
CANCEL_GRACE = 0.5
#: A streamed (iterable) job keeps this many chunks per worker parsed and ready at the broker.
CHUNKS_PER_WORKER = 2
#: Tasks a worker may hold at once: the running one plus the next, queued.
PIPELINE_DEPTH = 2
#: In the tail, a task is queued behind a running one only if it should take at most this long:
#: that is the most an idle worker can then wait for it.
PREFETCH_TAIL_SECONDS = 0.005


@dataclass
class JobInfo:
    """What the scheduler needs to know of a job (no work function, no data)."""

    job_id: str
    total: Optional[int]  # None while a streamed input set has not reached its end
    streaming: bool = False  # data job: input arrives from the client in chunks, on request
    error_limit: int = 0
    max_attempts: int = 4
    progress_timeout: Optional[float] = None
    slice_timeout: Optional[float] = None
    max_workers: Optional[int] = None
    #: the user's estimate of one slice's duration (job.initialSliceProfile), seeds the batch size
    initial_slice_seconds: Optional[float] = None


def _is_int(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_seconds(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def job_info_problem(info: JobInfo) -> Optional[str]:
    """What is wrong with ``info`` (None: nothing). The client validates options first; this
    keeps a bad value (``max_attempts="3"``, a NaN timeout) from reaching arithmetic that runs
    later, on a worker's death or a tick, where it would break the runtime for every job."""
    checks = [("total", info.total is None or _is_int(info.total, 0)),
              ("error_limit", _is_int(info.error_limit, 0)),
              ("max_attempts", _is_int(info.max_attempts, 1)),
              ("progress_timeout", info.progress_timeout is None or _is_seconds(info.progress_timeout)),
              ("slice_timeout", info.slice_timeout is None or _is_seconds(info.slice_timeout)),
              ("max_workers", info.max_workers is None or _is_int(info.max_workers, 1)),
              ("initial_slice_seconds", info.initial_slice_seconds is None
               or _is_seconds(info.initial_slice_seconds))]
    bad = [name for name, ok in checks if not ok]
    if not bad:
        return None
    return f"job {info.job_id}: invalid " + ", ".join(f"{n}={getattr(info, n)!r}" for n in bad)


@dataclass
class TaskRecord:
    task_id: int
    job_id: str
    first: int
    count: int
    chunk_first: int = -1
    worker: Any = None
    dispatched_at: float = 0.0
    started_at: float = 0.0  # when it began running, as far as the broker knows
    # watchdog facts from the latest heartbeat, re-based on the broker's clock
    beat_at: float = 0.0
    slice_index: int = -1
    slice_age: float = 0.0
    progress_age: float = 0.0
    progress: Optional[float] = None
    progress_calls: int = 0
    deadline: Optional[float] = None  # set when the job was cancelled/failed


# ---- instructions -------------------------------------------------------------------------
@dataclass(frozen=True)
class SendJob:
    worker: Any
    job_id: str


@dataclass(frozen=True)
class Dispatch:
    worker: Any
    task: TaskRecord


@dataclass(frozen=True)
class KillWorker:
    worker: Any
    reason: str


@dataclass(frozen=True)
class ForgetJob:
    worker: Any
    job_id: str


@dataclass(frozen=True)
class RequestInput:
    job_id: str
    count: int


@dataclass(frozen=True)
class ReleaseChunk:
    job_id: str
    chunk_first: int


@dataclass(frozen=True)
class SliceFailed:
    job_id: str
    slice_index: int
    error: Exception
    #: for ENOPROGRESS/ESLICETOOSLOW: the spec's noProgress facts (timestamp, progressReports)
    details: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class JobEnded:
    job_id: str
    outcome: str  # "complete" | "cancelled" | "failed"
    #: why the job was refused before it ran (an invalid JobInfo); None otherwise
    error: Optional[Exception] = None


@dataclass
class _Job:
    info: JobInfo
    next_slice: int = 0               # first slice never dispatched (high-water mark)
    input_done: bool = False          # streamed: the client said the input set ended
    chunks: Deque[Tuple[int, int]] = field(default_factory=deque)  # streamed: ready, undispatched
    chunk_left: Dict[int, int] = field(default_factory=dict)       # streamed: unresolved per chunk
    input_requested: bool = False
    retry: Deque[Tuple[int, int, int]] = field(default_factory=deque)  # (first, count, chunk_first)
    inflight: Dict[int, TaskRecord] = field(default_factory=dict)
    attempts: Dict[int, int] = field(default_factory=dict)         # slice -> deaths as a lone slice
    known_by: Set[Any] = field(default_factory=set)
    batch: int = 1
    slice_seconds: Optional[float] = None
    # decaying sums of measured task seconds and their slice counts (see task_done)
    measured_seconds: float = 0.0
    measured_slices: float = 0.0
    resolved: int = 0   # slices with a final outcome (result or failure)
    failed: int = 0
    stopping: Optional[str] = None    # "cancelled" | "failed"
    ended: bool = False

    def pending(self) -> bool:
        if self.stopping:
            return False
        if self.retry or self.chunks:
            return True
        return not self.info.streaming and self.next_slice < (self.info.total or 0)

    def undistributed(self) -> float:
        """Slices not yet handed to any worker (infinite while a stream has no known length)."""
        retrying = sum(count for _, count, _ in self.retry)
        if self.info.total is None:
            return math.inf
        return self.info.total - self.next_slice + retrying

    def all_resolved(self) -> bool:
        total = self.info.total
        input_complete = self.input_done or not self.info.streaming
        return input_complete and total is not None and self.resolved >= total


class Scheduler:
    """Pure scheduling state machine; every public method returns a list of instructions."""

    def __init__(self) -> None:
        self.jobs: Dict[str, _Job] = {}
        #: worker -> its tasks in the order it runs them: the first is running, the rest queued
        self.queues: Dict[Any, Deque[TaskRecord]] = {}
        self.workers: Set[Any] = set()
        self.retiring: Set[Any] = set()            # known to be gone; results still accepted
        self._next_task_id = 1
        self._rr = 0                               # round-robin cursor over jobs
        self.stale_results = 0                     # late/duplicate results ignored
        self._now = 0.0                            # clock of the event being handled

    @property
    def idle(self) -> List[Any]:
        """Workers holding no task."""
        return [worker for worker, tasks in self.queues.items() if not tasks]

    @property
    def busy(self) -> Dict[Any, TaskRecord]:
        """Worker -> the task it is running, for every worker running one."""
        return {worker: tasks[0] for worker, tasks in self.queues.items() if tasks}

    # ---- workers --------------------------------------------------------------------------
    def add_worker(self, worker: Any, now: float) -> List[Any]:
        self._now = now
        self.workers.add(worker)
        self.queues[worker] = deque()
        return self._dispatch(now)

    def retire(self, worker: Any) -> None:
        """The worker's process has exited: give it nothing more while its last results (already
        sent) are read; remove_worker follows."""
        self.retiring.add(worker)

    def remove_worker(self, worker: Any, exitcode: Optional[int], now: float) -> List[Any]:
        """A worker process is gone (died or was stopped); its tasks, if any, are retried."""
        self._now = now
        tasks = self._drop_worker(worker)
        running = tasks.popleft() if tasks else None
        out = self._give_back(tasks)  # first, so the running task's halves go before them
        if running is not None:
            job = self.jobs.get(running.job_id)
            if job is not None and job.inflight.pop(running.task_id, None) is not None:
                out += self._requeue_after_death(job, running, exitcode)
                out += self._maybe_end(job)
        return out + self._dispatch(now)

    def worker_lost(self, worker: Any, reason: str, now: float) -> List[Any]:
        """A worker's process is alive but lost (stopped, or a silent peer): it is killed, and
        every task it held, the running one too, goes back whole without costing an attempt.
        Its slices did nothing wrong; its results, should any still come, are stale."""
        self._now = now
        if worker not in self.queues:
            return []
        out: List[Any] = [KillWorker(worker, reason)]
        return out + self._give_back(self._drop_worker(worker)) + self._dispatch(now)

    def running(self, worker: Any) -> Optional[TaskRecord]:
        """The task ``worker`` runs now (the next result it may send), if any."""
        tasks = self.queues.get(worker)
        return tasks[0] if tasks else None

    def _drop_worker(self, worker: Any) -> Deque[TaskRecord]:
        """Forget a worker; returns the tasks it held (running first)."""
        self.workers.discard(worker)
        self.retiring.discard(worker)
        for job in self.jobs.values():
            job.known_by.discard(worker)
        return self.queues.pop(worker, None) or deque()

    def _give_back(self, tasks: Deque[TaskRecord]) -> List[Any]:
        """Tasks taken back without having failed: queued ones that never ran, ones we stopped
        (not a crash), and a stopped job's queued ones past its grace. A stopped job resolves
        them; a live one runs them again, whole and first, without costing an attempt."""
        out: List[Any] = []
        for task in reversed(tasks):
            job = self.jobs.get(task.job_id)
            if job is None or job.inflight.pop(task.task_id, None) is None:
                continue
            if job.stopping:
                out += self._resolve(job, task.first, task.count, task.chunk_first, failed=0)
                out += self._maybe_end(job)
            else:
                job.retry.appendleft((task.first, task.count, task.chunk_first))
        return out

    def _requeue_after_death(self, job: _Job, task: TaskRecord, exitcode: Optional[int]) -> List[Any]:
        if job.stopping:
            return self._resolve(job, task.first, task.count, task.chunk_first, failed=0)
        if task.count > 1:
            half = task.count // 2
            job.retry.appendleft((task.first + half, task.count - half, task.chunk_first))
            job.retry.appendleft((task.first, half, task.chunk_first))
            return []
        attempts = job.attempts.get(task.first, 0) + 1
        job.attempts[task.first] = attempts
        if attempts < job.info.max_attempts:
            job.retry.appendleft((task.first, 1, task.chunk_first))
            return []
        how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
        error = WorkerDiedError(
            f"slice {task.first + 1} (sliceIndex {task.first}): worker process died ({how}) "
            f"on each of {attempts} attempts", task.first, exitcode, attempts)
        return [SliceFailed(job.info.job_id, task.first, error)] + self._resolve(
            job, task.first, 1, task.chunk_first, failed=1)

    # ---- jobs -----------------------------------------------------------------------------
    def submit(self, info: JobInfo, now: float) -> List[Any]:
        self._now = now
        problem = job_info_problem(info)
        if problem is not None:  # this job fails alone; the runtime and other jobs go on
            return [JobEnded(info.job_id, "failed", EINVAL(problem))]
        job = _Job(info)
        if info.initial_slice_seconds:  # the user's estimate counts as one measured slice
            job.slice_seconds = job.measured_seconds = info.initial_slice_seconds
            job.measured_slices = 1.0
            job.batch = self._target_batch(info.initial_slice_seconds)
        self.jobs[info.job_id] = job
        out = self._request_input(job) + self._maybe_end(job)
        return out + self._dispatch(now)

    def input_arrived(self, job_id: str, first: int, count: int, now: float) -> List[Any]:
        self._now = now
        job = self.jobs[job_id]
        job.input_requested = False
        if count:
            job.chunks.append((first, count))
            job.chunk_left[first] = count
        return self._request_input(job) + self._dispatch(now)

    def input_ended(self, job_id: str, total: int, now: float) -> List[Any]:
        self._now = now
        job = self.jobs[job_id]
        job.input_requested = False
        job.info.total = total
        job.input_done = True
        return self._maybe_end(job) + self._dispatch(now)

    def cancel(self, job_id: str, now: float, outcome: str = "cancelled") -> List[Any]:
        """Stop dispatching ``job_id``; in-flight tasks get CANCEL_GRACE to come back."""
        job = self.jobs.get(job_id)
        if job is None or job.ended or job.stopping:
            return []
        self._now = now
        job.stopping = outcome
        job.retry.clear()
        for task in job.inflight.values():
            task.deadline = now + CANCEL_GRACE
        return self._maybe_end(job)

    # ---- results and heartbeats -----------------------------------------------------------
    def task_done(self, worker: Any, task_id: int, elapsed: float, errors: int,
                  now: float, leaving: bool = False) -> Tuple[bool, List[Any]]:
        """A task's results arrived. Returns (accepted, instructions); a stale result is refused,
        and so is one of a task its stopped job gave up while it was queued (see `tick`).

        ``leaving``: the worker exits after this task (recycling); what is queued behind it goes
        back without penalty, and it gets nothing more.
        """
        tasks = self.queues.get(worker)
        if not tasks or tasks[0].task_id != task_id:  # a worker runs its tasks in order
            self.stale_results += 1
            return False, []
        self._now = now
        task = tasks.popleft()
        if tasks:  # the queued task started as this one's result was sent
            tasks[0].started_at = tasks[0].beat_at = now
        job = self.jobs.get(task.job_id)
        accepted = job is not None and job.inflight.pop(task_id, None) is not None
        out: List[Any] = []
        if job is not None and accepted:
            # Size batches by what the task cost as seen from here (transfer of inputs and
            # results included), not only the worker's compute time: a task with 50 MB of input
            # is slow even when its slices are quick.
            seconds = max(elapsed, now - task.started_at)
            if task.count and seconds > 0:
                # Weighted by slices, halved per task: a 512-slice task outweighs the 1-slice
                # ones before it (whose time is mostly the round trip), and the estimate still
                # follows a drift in slice time within a few tasks.
                job.measured_seconds = job.measured_seconds / 2 + seconds
                job.measured_slices = job.measured_slices / 2 + task.count
                job.slice_seconds = job.measured_seconds / job.measured_slices
                job.batch = min(job.batch * GROWTH, self._target_batch(job.slice_seconds))
            # a worker cannot fail more slices than its task had (nor fewer than none)
            failed = min(max(errors, 0), task.count)
            out += self._resolve(job, task.first, task.count, task.chunk_first, failed=failed)
            out += self._maybe_end(job)
        if leaving:
            out += self._give_back(self._drop_worker(worker))
        return accepted, out + self._dispatch(now)

    @staticmethod
    def _target_batch(slice_seconds: float, seconds: float = TARGET_TASK_SECONDS) -> int:
        return max(1, round(seconds / max(slice_seconds, 1e-9)))

    def heartbeat(self, worker: Any, task_id: int, slice_index: int, slice_age: float,
                  progress_age: float, progress: Optional[float], calls: int, now: float) -> None:
        task = next((t for t in self.queues.get(worker, ()) if t.task_id == task_id), None)
        if task is None:
            return
        task.beat_at, task.slice_index = now, slice_index
        task.slice_age, task.progress_age = slice_age, progress_age
        task.progress, task.progress_calls = progress, calls

    def tick(self, now: float) -> List[Any]:
        """Enforce cancel grace periods, progress and slice timeouts."""
        self._now = now
        out: List[Any] = []
        for worker, tasks in list(self.queues.items()):
            if not tasks:
                continue
            # A stopped job's task still queued at its grace deadline is given up: the job ends
            # without it. Its record stays in the queue, which must match the order the worker
            # runs tasks in; the worker is stopped below if it is still running it by then.
            overdue = [t for t in list(tasks)[1:] if t.deadline is not None and now >= t.deadline]
            out += self._give_back(deque(overdue))
            task = tasks[0]  # only the running task can be overdue; queued ones have not started
            if task.deadline is None:
                out += self._check_timeouts(self.jobs[task.job_id], task, worker, now)
            elif now >= task.deadline:  # a stopped job's task queued behind a live one is
                # killed once it runs, not while the live task does (that would waste its work)
                out += self._abandon(worker, "cancelled job's task outlived its grace")
        return out + self._dispatch(now)

    def _check_timeouts(self, job: _Job, task: TaskRecord, worker: Any, now: float) -> List[Any]:
        info = job.info
        if info.progress_timeout is None and info.slice_timeout is None:
            return []
        since_beat = now - (task.beat_at or task.dispatched_at)
        slice_age = task.slice_age + since_beat
        progress_age = task.progress_age + since_beat
        if info.progress_timeout is not None and progress_age > info.progress_timeout:
            error: Exception = ENOPROGRESS(
                f"slice {self._culprit(task) + 1} (sliceIndex {self._culprit(task)}) reported no "
                f"progress for {progress_age:.2f} s (progressTimeout {info.progress_timeout} s)")
        elif info.slice_timeout is not None and slice_age > info.slice_timeout:
            error = ESLICETOOSLOW(
                f"slice {self._culprit(task) + 1} (sliceIndex {self._culprit(task)}) ran for "
                f"{slice_age:.2f} s (sliceTimeout {info.slice_timeout} s)")
        else:
            return []
        culprit = self._culprit(task)
        details = {"timestamp": slice_age, "progressReports": self._progress_reports(task, slice_age)}
        out = [SliceFailed(info.job_id, culprit, error, details), KillWorker(worker, str(error))]
        # The culprit's batch-mates did nothing wrong: they go back to the queue.
        queued = self._drop_worker(worker)
        queued.popleft()
        del job.inflight[task.task_id]
        out += self._give_back(queued)
        end = task.first + task.count
        if culprit + 1 < end:
            job.retry.appendleft((culprit + 1, end - culprit - 1, task.chunk_first))
        if culprit > task.first:
            job.retry.appendleft((task.first, culprit - task.first, task.chunk_first))
        out += self._resolve(job, culprit, 1, task.chunk_first, failed=1)
        return out + self._maybe_end(job)

    @staticmethod
    def _culprit(task: TaskRecord) -> int:
        """The slice the watchdog blames: the one running at the last heartbeat, in the task."""
        if task.slice_index < 0:
            return task.first
        return min(max(task.slice_index, task.first), task.first + task.count - 1)

    @staticmethod
    def _progress_reports(task: TaskRecord, slice_age: float) -> Dict[str, Any]:
        last_at = max(0.0, slice_age - task.progress_age) if task.progress_calls else None
        report = {"timestamp": last_at, "progress": task.progress, "value": task.progress,
                  "throttledReports": max(0, task.progress_calls - 1)}
        return {"last": dict(report), "lastUpdate": dict(report)}

    def _abandon(self, worker: Any, reason: str) -> List[Any]:
        """Kill a worker that holds a stopped job's overdue task; a live job's tasks go back."""
        out: List[Any] = [KillWorker(worker, reason)]
        return out + self._give_back(self._drop_worker(worker))

    # ---- bookkeeping ----------------------------------------------------------------------
    def _resolve(self, job: _Job, first: int, count: int, chunk_first: int, failed: int) -> List[Any]:
        job.resolved += count
        job.failed += failed
        out: List[Any] = []
        if chunk_first >= 0:
            left = job.chunk_left[chunk_first] - count
            job.chunk_left[chunk_first] = left
            if left == 0:
                del job.chunk_left[chunk_first]
                out.append(ReleaseChunk(job.info.job_id, chunk_first))
        if failed and job.failed > job.info.error_limit and not job.stopping:
            job.stopping = "failed"
            job.retry.clear()
            job.chunks.clear()
            for task in job.inflight.values():
                task.deadline = self._now + CANCEL_GRACE
        return out

    def _maybe_end(self, job: _Job) -> List[Any]:
        if job.ended or job.inflight:
            return []
        if not (job.all_resolved() or job.stopping):
            return []
        job.ended = True
        outcome = job.stopping or "complete"
        out: List[Any] = [ForgetJob(w, job.info.job_id) for w in sorted(job.known_by, key=repr)]
        out += [ReleaseChunk(job.info.job_id, c) for c in sorted(job.chunk_left)]
        out.append(JobEnded(job.info.job_id, outcome))
        del self.jobs[job.info.job_id]
        return out

    # ---- dispatch -------------------------------------------------------------------------
    def _request_input(self, job: _Job) -> List[Any]:
        if not job.info.streaming or job.input_done or job.input_requested or job.stopping:
            return []
        # Unmeasured, a worker runs one 1-slice task at a time: more 1-item chunks than workers
        # would outlive the first measurement and hold the batch at 1 for as many round trips.
        per_worker = CHUNKS_PER_WORKER if job.slice_seconds is not None else 1
        if len(job.chunks) >= per_worker * self._workers_for(job):
            return []
        job.input_requested = True
        count = job.batch
        if job.info.total is not None:  # known length: the same guided tail as range jobs
            left = job.info.total - job.next_slice - sum(n for _, n in job.chunks)
            count = min(count, self._tail_cap(job, left), max(1, left))
        return [RequestInput(job.info.job_id, count)]

    def _workers_for(self, job: _Job) -> int:
        """How many workers may run ``job`` at once (at least 1, to divide by)."""
        return max(1, min(len(self.workers), job.info.max_workers or len(self.workers)))

    def _tail_cap(self, job: _Job, remaining: int) -> int:
        """Guided self-scheduling: the most slices one task may take with ``remaining`` left —
        a 1/(TAIL_FACTOR * workers) share, but never less than TAIL_FLOOR_SECONDS of work."""
        workers = self._workers_for(job)
        cap = max(1, math.ceil(remaining / (TAIL_FACTOR * workers)))
        if job.slice_seconds is not None:
            cap = max(cap, self._target_batch(job.slice_seconds, TAIL_FLOOR_SECONDS))
        return cap

    def _dispatch(self, now: float) -> List[Any]:
        """Give every idle worker a task, then queue one more behind each running task."""
        out: List[Any] = []
        for depth in range(PIPELINE_DEPTH):
            for worker, tasks in self.queues.items():
                if len(tasks) != depth or worker in self.retiring:
                    continue
                job = self._next_job(worker, queued=depth > 0)
                if job is None:
                    continue
                task = self._take(job, now, worker)
                if worker not in job.known_by:
                    job.known_by.add(worker)
                    out.append(SendJob(worker, job.info.job_id))
                out.append(Dispatch(worker, task))
                out += self._request_input(job)
        return out

    def _next_job(self, worker: Any, queued: bool) -> Optional[_Job]:
        jobs = list(self.jobs.values())
        for i in range(len(jobs)):
            job = jobs[(self._rr + i) % len(jobs)]
            if not job.pending():
                continue
            limit = job.info.max_workers
            holders = {task.worker for task in job.inflight.values()}
            if limit is None or worker in holders or len(holders) < limit:
                if queued and not self._worth_queueing(job):
                    # Its turn, but it needs a worker with nothing queued. Giving the slot to
                    # another job would keep every worker busy and starve this one until the
                    # other job's tail: leave the slot empty so this worker frees up for it.
                    return None
                self._rr = (self._rr + i + 1) % len(jobs)
                return job
        return None

    def _worth_queueing(self, job: _Job) -> bool:
        """Queue a task behind a running one away from the tail, or when it is short.

        A retry is never queued: it may hold the slice that killed a worker, and it should run
        as soon as a worker is free, not behind somebody else's task.
        """
        if job.retry:
            return False
        workers = self._workers_for(job)
        if job.undistributed() >= TAIL_FACTOR * workers * job.batch:
            return True
        if job.slice_seconds is None:  # unmeasured: a slice may take minutes
            return False
        return job.slice_seconds * min(job.batch, job.undistributed()) <= PREFETCH_TAIL_SECONDS

    def _take(self, job: _Job, now: float, worker: Any) -> TaskRecord:
        if job.retry:
            first, count, chunk_first = job.retry.popleft()
        elif job.chunks:
            first, count = job.chunks.popleft()
            chunk_first = first
            job.next_slice = first + count
        else:
            remaining = (job.info.total or 0) - job.next_slice
            count = min(job.batch, self._tail_cap(job, remaining), remaining)
            first, chunk_first = job.next_slice, -1
            job.next_slice += count
        task = TaskRecord(self._next_task_id, job.info.job_id, first, count, chunk_first,
                          worker, now, started_at=now, beat_at=now)
        self._next_task_id += 1
        job.inflight[task.task_id] = task
        self.queues[worker].append(task)
        return task

    # ---- invariants -----------------------------------------------------------------------
    def validate(self) -> None:
        """Check the invariants every step must keep; AssertionError names the broken one.
        For tests (called after every step of the simulator), not for the broker's hot path."""
        assert set(self.queues) == self.workers, "queues and workers disagree"
        assert self.retiring <= self.workers, "a retiring worker is not a worker"
        held: Dict[int, TaskRecord] = {}
        for worker, tasks in self.queues.items():
            assert len(tasks) <= PIPELINE_DEPTH, f"{worker!r} holds {len(tasks)} tasks"
            for task in tasks:
                assert task.worker == worker, f"task {task.task_id} is queued on another worker"
                assert task.task_id not in held, f"task {task.task_id} is queued twice"
                held[task.task_id] = task
        for job_id, job in self.jobs.items():
            self._validate_job(job_id, job, held)

    @staticmethod
    def _validate_job(job_id: str, job: _Job, held: Dict[int, TaskRecord]) -> None:
        assert not job.ended, f"job {job_id} ended but is still known"
        assert 0 <= job.failed <= job.resolved, f"job {job_id}: {job.failed} failed of {job.resolved}"
        for task_id, task in job.inflight.items():
            assert held.get(task_id) is task, f"job {job_id}: in-flight task {task_id} held by nobody"
            assert task.job_id == job_id and task.count >= 1
        if job.stopping:
            assert not job.retry, f"stopped job {job_id} still has slices to retry"
            return
        spans = [(t.first, t.count) for t in job.inflight.values()]
        spans += [(first, count) for first, count, _ in job.retry] + list(job.chunks)
        total = job.info.total
        if not job.info.streaming and total is not None:
            spans.append((job.next_slice, total - job.next_slice))
        spans = sorted(span for span in spans if span[1])
        for (a, n), (b, _) in zip(spans, spans[1:]):
            assert a + n <= b, f"job {job_id}: slices {b}.. are pending twice"
        if not job.info.streaming and total is not None:
            pending = sum(count for _, count in spans)
            assert job.resolved + pending == total, \
                f"job {job_id}: {job.resolved} resolved + {pending} pending != {total} slices"
        assert all(0 < n <= job.info.max_attempts for n in job.attempts.values())

    # ---- status ---------------------------------------------------------------------------
    def status(self, job_id: str) -> Dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            return {}
        return {"total": job.info.total, "distributed": job.next_slice,
                "computed": job.resolved - job.failed}
