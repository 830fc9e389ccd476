"""One task of a job, run here: ``execute_task(job, first, count, data, emit)``.

The run-a-batch sequence every runtime shares: unpickle the job's work function, arguments and
input spec once (`LoadedJob`), run the work function over the task's slices in the sandbox's
batch loop, and pack the outcome as a TaskDone payload (results, then error descriptions). The
worker process calls it for each Task; the serial runtime (``localExec(0)``) and
``Job.estimate`` call it in the client; a Dask runtime would call it on a Dask worker. So what
crosses a process boundary is pickled the same way everywhere.

Pure, as far as user code lets it be: no sockets, no processes, no clock but the batch's own
timing. The caller installs the sandbox environment (`sandbox.SandboxEnvironment`) around it.
Must not know: sockets, the broker, the user API.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import codec, pickling
from .sandbox import Emit, load_work, pack_outcome, run_batch


class LoadedJob:
    """A job's work function, arguments and input spec, unpickled on first use.

    Unpickling runs user code (``__reduce__``, module imports), so it happens inside the first
    task, under the watchdog, and a failure becomes an error of each slice of the job.
    """

    def __init__(self, job_id: str, options: Dict[str, Any], frames: List[Any]) -> None:
        self.job_id, self.options = job_id, options
        self.frames: Optional[List[Any]] = frames   # [work, arguments, *spec]
        self.error: Optional[BaseException] = None
        self.fn: Any = None
        self.args: Any = ()
        self.spec: Any = None

    def load(self) -> None:
        if self.frames is None:
            return
        frames, self.frames = self.frames, None
        try:
            self.fn = load_work(pickling.loads(frames[0]))
            self.args = pickling.loads(frames[1])
            self.spec = codec.loads(frames[2:3]) if len(frames) > 2 else None
        except BaseException as exc:  # noqa: B902 - reported on every slice of this job
            self.error = exc


Outcome = Tuple[List[Any], int, List[Tuple[int, BaseException]]]


def execute_task(job: LoadedJob, first: int, count: int, data: Optional[Iterable[Any]],
                 emit: Emit, at_item: Optional[Callable[[int], None]] = None,
                 unreadable: Optional[BaseException] = None, interruptible: bool = False
                 ) -> Outcome:
    """Run slices ``first … first+count-1`` of ``job`` and pack their outcome.

    ``data``: the task's input items (a data job), or None to expand them from the job's input
    spec. ``unreadable``: the items could not even be read (every slice fails with it).
    ``interruptible``: Ctrl-C (KeyboardInterrupt) propagates instead of failing a slice.
    Returns ``(frames, errors, failures)``: the TaskDone payload (`sandbox.pack_outcome`), how
    many slices failed, and the work function's (slice index, exception) failures, whose
    tracebacks the caller may drop once the payload is sent.
    """
    job.load()
    failure = job.error if job.error is not None else unreadable
    if failure is not None:
        failed = [(first + i, failure) for i in range(count)]
        results: List[Any] = [None] * count
    else:
        if data is None:
            data = job.spec.slice_data(first, count)
        results, failed, _ = run_batch(job.fn, data, job.args, job.options.get("spread", False),
                                       job.job_id, first, emit, job.options.get("public"),
                                       interruptible)
    frames, errors = pack_outcome(results, failed, first, job.options.get("max_result_bytes"),
                                  at_item)
    return frames, errors, failed
