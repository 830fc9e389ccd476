"""`SerialRuntime`: ``localExec(0)`` — the job's tasks run one after another in this process.

It is a runtime like any other (`runtime_api.Runtime`): the job submits a `JobRequest` and reads
notices from the link. The difference is when the work happens: a task runs inside
``next_notice``, on the thread that drives the job, so a debugger stops inside the work
function. Each task goes through `taskexec.execute_task`, exactly as on a worker: the work
function, arguments, input items, results, errors and events are pickled and unpickled the same
way, so a program that fails on workers fails here too, with the same error.

Must not know: sockets, processes, the Job class.
"""
from __future__ import annotations

import collections
import itertools
import time
from typing import Any, Deque, List, Optional, Tuple

from . import codec
from .protocol import Console as ConsoleMessage
from .runtime_api import (Console, InputWanted, JobEnded, JobRequest, Notice, Results,
                          WorkEvent)
from .sandbox import SandboxEnvironment
from .taskexec import LoadedJob, execute_task

#: A task's slices start at 1 and grow x8 while tasks stay under TASK_SECONDS, up to
#: TASK_SLICES: slow slices run one per task, so their console output, progress and a cancel
#: are seen after each slice; fast ones share a task, so a million cost no more than a loop.
TASK_SLICES = 256
TASK_SECONDS = 0.02


class SerialJobLink:
    """One job run in this process, a task per `next_notice` call that finds nothing queued."""

    def __init__(self, request: JobRequest) -> None:
        self.request = request
        self.job = LoadedJob(request.job_id, request.options,
                             [request.work, request.arguments, *request.spec])
        self.notices: Deque[Notice] = collections.deque()
        self.chunks: Deque[Tuple[int, int, List[Any]]] = collections.deque()  # fed, not run
        self.next_first = 0          # the next slice to run
        self.total = request.total
        self.asked = False           # an InputWanted is out and not answered yet
        self.failed = 0
        self.cancelled = False
        self.ended = False
        self.task_ids = itertools.count(1)
        self.task_slices = 1

    # ---- the job's calls -------------------------------------------------------------------
    def cancel(self) -> None:
        self.cancelled = True

    def feed(self, first: int, count: int, frames: List[Any]) -> None:
        self.asked = False
        if count:
            self.chunks.append((first, count, frames))

    def feed_end(self, total: int) -> None:
        self.asked = False
        self.total = total

    def next_notice(self, timeout: float) -> Optional[Notice]:
        if not self.notices and not self.ended:
            self._step()
        return self.notices.popleft() if self.notices else None

    # ---- running ----------------------------------------------------------------------------
    def _step(self) -> None:
        if self.cancelled or self.failed > self.request.error_limit:
            self._end("cancelled" if self.cancelled else "failed")
        elif not self.request.streaming:
            assert self.total is not None
            if self.next_first >= self.total:
                self._end("complete")
            else:
                count = min(self.task_slices, self.total - self.next_first)
                self._run(self.next_first, count, None)
        elif self.chunks:
            first, count, frames = self.chunks.popleft()
            self._run(first, count, codec.unpack_inputs(frames, 0, count))
        elif self.total is not None and self.next_first >= self.total:
            self._end("complete")
        elif not self.asked:
            self.asked = True
            self.notices.append(InputWanted(self.task_slices))

    def _end(self, outcome: str) -> None:
        self.ended = True
        self.notices.append(JobEnded(outcome))

    def _run(self, first: int, count: int, data: Any) -> None:
        task_id = next(self.task_ids)
        started = time.perf_counter()
        with SandboxEnvironment(capture_output=True):
            frames, errors, _ = execute_task(self.job, first, count, data, self._event,
                                             interruptible=True)
        elapsed = time.perf_counter() - started
        if elapsed < TASK_SECONDS:
            self.task_slices = min(TASK_SLICES, self.task_slices * 8)
        elif elapsed > 4 * TASK_SECONDS:
            self.task_slices = max(1, self.task_slices // 8)
        self.failed += errors
        self.next_first = first + count
        self.notices.append(Results(task_id, first, count, elapsed, errors, frames,
                                    {"distributed": first + count}))

    def _event(self, msg: Any, frames: Any = ()) -> None:
        """What the sandbox emits while a slice runs, as the notice a worker's would become."""
        if isinstance(msg, ConsoleMessage):
            self.notices.append(Console(msg.slice_index, msg.level, msg.message, msg.same,
                                        msg.logger, msg.levelno, tuple(msg.origin)))
        else:
            self.notices.append(WorkEvent(msg.slice_index, msg.name, list(frames)))


class SerialRuntime:
    """Runs a job's tasks in this process, one after another (``localExec(0)``)."""

    def submit(self, request: JobRequest) -> SerialJobLink:
        return SerialJobLink(request)
