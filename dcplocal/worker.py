"""Worker process main: ``python -m dcplocal.worker --connect ADDR --identity ID``.

One DEALER socket to the broker's ROUTER. The flow is pull-based: the worker says ``Ready`` once,
and every ``TaskDone`` it sends is its request for the next task (credit of one: a task of
~20 ms hides the round trip, and no slices sit queued on a worker that might die)::

    worker                      broker
      | --- Ready(pid) ---------> |
      | <-- JobDef [+work,args,spec]   (once per job per worker; the work function is cached)
      | <-- Task [+chunk] ------- |
      | --- Console / WorkEvent ->|   (while the task runs)
      | --- TaskDone [+results] ->|
      | <-- DropJob / Stop ------ |

When a job asks for a watchdog (progress or slice timeout), a second DEALER on a thread sends
``Heartbeat`` facts about the running slice every ``interval`` seconds; it keeps ticking while the
work function spins in pure Python, because the GIL is handed over every few ms.

Process hygiene: the worker asks the kernel to SIGKILL it when its parent dies, and leads its
own process group so the supervisor can kill it together with any children its work function
started, and so a Ctrl-C at the terminal reaches the client only.

Imports: protocol, codec, sandbox, inputs (worker side only) — never the user API.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from . import codec, protocol
from .sandbox import SandboxEnvironment, _running, describe_error, load_work, run_batch


def _die_with_parent(parent_pid: int) -> None:
    """PR_SET_PDEATHSIG: the kernel kills us when the process that started us exits."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 == PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent_pid and os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class _LoadedJob:
    def __init__(self, options: Dict[str, Any], frames: List[Any]) -> None:
        import cloudpickle  # deferred: a worker that never gets a job need not import it

        self.options = options
        self.error: Optional[BaseException] = None
        try:
            self.fn = load_work(cloudpickle.loads(frames[0]))
            self.args = cloudpickle.loads(frames[1])
            self.spec = codec.loads(frames[2:3]) if len(frames) > 2 else None
        except BaseException as exc:  # noqa: B902 - reported on every slice of this job
            self.error = exc


class _Heartbeat(threading.Thread):
    """Sends watchdog facts about the running slice while a task of a watched job runs."""

    def __init__(self, context: Any, address: str, identity: bytes) -> None:
        super().__init__(name="dcplocal-heartbeat", daemon=True)
        import zmq

        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, identity + b"/hb")
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)
        self.task_id = 0          # 0 = nothing to watch
        self.interval = 0.1
        self.wake = threading.Event()

    def watch(self, task_id: int, interval: float) -> None:
        self.task_id, self.interval = task_id, interval
        self.wake.set()

    def run(self) -> None:
        slice_index, slice_since, calls, progress_since = -1, 0.0, -1, 0.0
        while True:
            self.wake.wait()
            task_id = self.task_id
            if not task_id:
                self.wake.clear()
                continue
            now = time.monotonic()
            index, seen_calls = _running.slice_index, _running.progress_calls
            if index != slice_index:
                slice_index, slice_since, progress_since = index, now, now
                calls = seen_calls
            elif seen_calls != calls:
                calls, progress_since = seen_calls, now
            beat = protocol.Heartbeat(task_id, index, now - slice_since, now - progress_since,
                                      _running.progress_value, seen_calls)
            self.socket.send(codec.encode(beat))
            time.sleep(self.interval)


class Worker:
    def __init__(self, address: str, identity: bytes) -> None:
        import zmq

        self.zmq = zmq
        self.address, self.identity = address, identity
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, identity)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.connect(address)
        self.jobs: Dict[str, _LoadedJob] = {}
        self.heartbeat: Optional[_Heartbeat] = None

    def send(self, msg: protocol.Message, frames: List[Any] = ()) -> None:
        self.socket.send_multipart([codec.encode(msg), *frames], copy=False)

    def serve(self) -> None:
        self.send(protocol.Ready(os.getpid()))
        with SandboxEnvironment(capture_output=True):
            while True:
                frames = self.socket.recv_multipart(copy=False)
                msg = codec.decode(frames[0].bytes)
                if isinstance(msg, protocol.Task):
                    self.run_task(msg, frames[1:])
                elif isinstance(msg, protocol.JobDef):
                    self.jobs[msg.job_id] = _LoadedJob(msg.options, frames[1:])
                elif isinstance(msg, protocol.DropJob):
                    self.jobs.pop(msg.job_id, None)
                elif isinstance(msg, protocol.Stop):
                    return

    def _watch(self, task: protocol.Task, job: _LoadedJob) -> None:
        interval = job.options.get("heartbeat")
        if interval:
            if self.heartbeat is None:
                self.heartbeat = _Heartbeat(self.context, self.address, self.identity)
                self.heartbeat.start()
            self.heartbeat.watch(task.task_id, interval)

    def run_task(self, task: protocol.Task, chunk: List[Any]) -> None:
        job = self.jobs[task.job_id]
        if job.error is not None:
            errors = [describe_error(job.error, task.first + i) for i in range(task.count)]
            return self._reply(task, [None] * task.count, errors, 0.0)
        if task.chunk_first >= 0:
            start = task.first - task.chunk_first
            data = codec.loads(chunk)[start:start + task.count]
        else:
            data = job.spec.slice_data(task.first, task.count)
        self._watch(task, job)
        try:
            results, errors, elapsed = run_batch(
                job.fn, data, job.args, job.options.get("spread", False), task.job_id,
                task.first, self.send, job.options.get("public"))
        finally:
            if self.heartbeat is not None:
                self.heartbeat.watch(0, 0)
        self._reply(task, results, [describe_error(exc, index) for index, exc in errors], elapsed)

    def _reply(self, task: protocol.Task, results: List[Any], errors: List[Dict[str, Any]],
               elapsed: float) -> None:
        frames, failures = codec.pack_results(results)
        for offset, exc in failures:
            failure = describe_error(exc, task.first + offset)
            failure["message"] = (f"result of slice {task.first + offset + 1} (type "
                                  f"{type(results[offset]).__name__}) could not be pickled: {exc}")
            errors.append(failure)
        if errors:
            frames.append(codec.dumps(errors)[0])
        done = protocol.TaskDone(task.task_id, task.job_id, task.first, task.count, elapsed, len(errors))
        self.send(done, frames)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dcplocal.worker")
    parser.add_argument("--connect", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--parent", type=int, default=0)
    opts = parser.parse_args(argv)
    _die_with_parent(opts.parent)
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the client's to handle
    worker = Worker(opts.connect, opts.identity.encode())
    worker.serve()
    worker.socket.close(linger=1000)
    worker.context.term()


if __name__ == "__main__":
    main()
