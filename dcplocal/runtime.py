"""LocalRuntime: the embedded scheduler — a broker thread plus its worker processes.

One explicit, resettable object (no hidden globals): ``with LocalRuntime() as rt: ...``, or the
default runtime that ``job.localExec``/``job.exec`` use, reachable as ``default_runtime()`` and
rebuilt by ``reset_default_runtime()``. Worker processes stay alive across jobs, so a second job
pays neither process start-up nor imports; ``close()`` (also run at exit) stops them.

The runtime starts its thread and event loop lazily, on first use. Everything that touches the
broker is marshalled onto that loop; the caller gets back a `JobLink` whose queue it drains on
its own thread.

Must not know: the Job handle, results, events — it moves submissions and frames.
"""
from __future__ import annotations

import sys

from .errors import EINVAL, ETYPE, EUNMET, RuntimeBrokenError

if sys.platform == "win32":  # first: asyncio, zmq and the POSIX calls below fail obscurely there
    raise EUNMET(f"dcplocal's local runtime supports Linux (and, with fallbacks, other "
                 f"POSIX systems); this is {sys.platform!r}. Run it under WSL2 or in a "
                 f"Linux container.")

import asyncio  # noqa: E402
import atexit  # noqa: E402
import numbers  # noqa: E402
import queue  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

import zmq  # noqa: E402

from . import hostcpus, rundir  # noqa: E402
from .arena import IDLE_SECONDS  # noqa: E402
from .broker import WORKER_IDLE_SECONDS, Broker, Submission  # noqa: E402
from .runtime_api import JobRequest, Notice, RuntimeBroken  # noqa: E402
from .scheduling import JobInfo  # noqa: E402


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LocalJobLink:
    """The job's end of a job on a LocalRuntime (a `runtime_api.JobLink`): the broker puts its
    notices into ``queue``; calls back are marshalled onto the broker's loop."""

    def __init__(self, runtime: "LocalRuntime", job_id: str) -> None:
        self.runtime, self.job_id = runtime, job_id
        self.queue: "queue.SimpleQueue[Notice]" = queue.SimpleQueue()

    def next_notice(self, timeout: float) -> Optional[Notice]:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            broken = self.runtime.broken  # the broker thread itself died: nobody will tell
            return RuntimeBroken(broken) if broken is not None else None

    def cancel(self) -> None:
        self.runtime.call(lambda b: b.cancel(self.job_id))

    def feed(self, first: int, count: int, frames: List[Any]) -> None:
        # Large frames are readied (described, or copied into the input arena) here, on the
        # client's thread, so the broker's thread goes on dispatching meanwhile.
        prepared = self.runtime.prepare_inputs(frames)
        self.runtime.call(lambda b: b.feed(self.job_id, first, count, frames, prepared))

    def feed_end(self, total: int) -> None:
        self.runtime.call(lambda b: b.feed_end(self.job_id, total))


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ETYPE(f"LocalRuntime({name}=…) must be an int, not {value!r}")
    if value < 1:
        raise EINVAL(f"LocalRuntime({name}=…) must be at least 1, not {value!r} (0 workers: use "
                     f"job.localExec(0) to run in this process)")
    return int(value)


def _seconds(name: str, value: Any) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value < float("inf")):
        raise EINVAL(f"LocalRuntime({name}=…) must be a finite number of seconds >= 0, "
                     f"not {value!r}")


class LocalRuntime:
    """Broker thread + worker processes on this machine.

    ``workers``: processes for ``exec()`` (default: all cores; ``localExec(n)`` asks for n).
    ``memory_limit``: bytes of address space per worker (setrlimit), so a runaway slice raises
    MemoryError instead of meeting the OOM killer. ``recycle_slices`` / ``recycle_rss``: a worker
    retires, between tasks, after that many slices or once its private resident memory (RSS
    less shared pages, so its result arena does not count) exceeds that many bytes (for work
    functions that leak); a fresh one takes its place. ``arena_idle_seconds``: how long a
    worker keeps a wholly free segment of its result arena warm for the next job (default 60 s;
    0 gives memory back as soon as the client drops its large results).
    ``max_workers``: the most workers a job may ask for (default: DCPLOCAL_MAX_WORKERS, else 4x
    the CPUs this process may use). ``worker_idle_seconds``: workers above ``workers`` (started
    for a ``localExec(n)`` asking more) retire after this long with no job wanting them.

    Example::

        with dcplocal.LocalRuntime(workers=4, memory_limit=2 << 30) as runtime:
            job.scheduler = runtime
            results = job.exec()
    """

    def __init__(self, workers: Optional[int] = None, *, memory_limit: Optional[int] = None,
                 recycle_slices: Optional[int] = None, recycle_rss: Optional[int] = None,
                 arena_idle_seconds: Optional[float] = None, max_workers: Optional[int] = None,
                 worker_idle_seconds: float = WORKER_IDLE_SECONDS) -> None:
        self.max_workers = (hostcpus.max_workers().cpus if max_workers is None
                            else _count("max_workers", max_workers))
        self.default_workers = (hostcpus.default_workers().cpus if workers is None
                                else _count("workers", workers))
        self.allowed_cpus = hostcpus.allowed_cpus().cpus
        self._warned = [False]
        hostcpus.check_workers(self.default_workers, self.max_workers, self.allowed_cpus,
                               self._warned, 2)
        _seconds("worker_idle_seconds", worker_idle_seconds)
        self.worker_idle_seconds = float(worker_idle_seconds)
        self.worker_args: List[str] = []
        for flag, value in (("--memory-limit", memory_limit), ("--recycle-slices", recycle_slices),
                            ("--recycle-rss", recycle_rss)):
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise EINVAL(f"LocalRuntime({flag[2:].replace('-', '_')}=…) must be a positive int, not {value!r}")
                self.worker_args += [flag, str(value)]
        if arena_idle_seconds is not None:
            _seconds("arena_idle_seconds", arena_idle_seconds)
            self.worker_args += ["--arena-idle-seconds", repr(float(arena_idle_seconds))]
        self.arena_idle_seconds = IDLE_SECONDS if arena_idle_seconds is None else float(arena_idle_seconds)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._broker: Optional[Broker] = None
        self._context: Optional[zmq.Context] = None
        self._tmpdir: Optional["tempfile.TemporaryDirectory[str]"] = None
        self._started_error: Optional[BaseException] = None

    # ---- lifecycle --------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            ready = threading.Event()
            self._started_error = None
            self._thread = threading.Thread(target=self._run, args=(ready,), name="dcplocal-broker",
                                            daemon=True)
            self._thread.start()
            ready.wait()
            if self._started_error is not None:
                raise RuntimeBrokenError(f"runtime failed to start: {self._started_error}")

    def _run(self, ready: threading.Event) -> None:
        try:  # even making the loop can fail (uvloop's import during interpreter shutdown)
            loop = _new_event_loop()
            asyncio.set_event_loop(loop)
            self._tmpdir = rundir.make()
            # Two I/O threads: receiving large results is dominated by page faults on fresh
            # buffers; a second thread overlaps them (measured ~10-20% on 100 x 8 MB results).
            self._context = zmq.Context(io_threads=2)
            self._broker = Broker(loop, self._context, rundir.socket_address(self._tmpdir.name),
                                  self.worker_args, self.arena_idle_seconds,
                                  keep_workers=self.default_workers,
                                  worker_idle_seconds=self.worker_idle_seconds)
            self._loop = loop
        except BaseException as exc:  # noqa: B902 - handed to the thread that waits for us
            self._started_error = exc
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            self._broker.close()
            self._context.term()
            loop.close()
            self._tmpdir.cleanup()

    def call(self, fn: Any) -> None:
        """Run ``fn(broker)`` on the broker's thread (fire and forget)."""
        self._ensure_started()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, self._broker)

    def query(self, fn: Any, timeout: float = 10.0) -> Any:
        """Run ``fn(broker)`` on the broker's thread and return its result."""
        self._ensure_started()
        assert self._loop is not None
        done: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._loop.call_soon_threadsafe(lambda: done.put(fn(self._broker)))
        return done.get(timeout=timeout)

    def ensure_workers(self, workers: Optional[int]) -> None:
        self.call(lambda b: b.scale(workers or self.default_workers))

    def submit(self, request: JobRequest) -> LocalJobLink:
        """Run ``request`` on this runtime's workers (`runtime_api.Runtime`)."""
        workers = request.max_workers or self.default_workers
        # refused before anything starts: 10,000 workers is a typo, not a plan
        # stacklevel 4: the user's line that called localExec (via Job._run_on)
        hostcpus.check_workers(workers, self.max_workers, self.allowed_cpus, self._warned, 4)
        if self.broken is not None:  # the previous job saw RuntimeBrokenError: start afresh
            self.close()
        job_id = request.job_id
        info = JobInfo(job_id, request.total, streaming=request.streaming,
                       error_limit=request.error_limit, max_attempts=request.max_attempts,
                       progress_timeout=request.progress_timeout,
                       slice_timeout=request.slice_timeout, max_workers=request.max_workers,
                       initial_slice_seconds=request.initial_slice_seconds)
        submission = Submission(info, [request.work, request.arguments, *request.spec],
                                request.options)
        link = LocalJobLink(self, job_id)

        def start(broker: Broker) -> None:  # one step: its demand is never seen without its job
            broker.scale(workers, job_id)
            broker.submit(submission, link.queue)
        self.call(start)
        return link

    def prepare_inputs(self, frames: List[Any]) -> Any:
        """`Broker.prepare_inputs`, from the client's thread."""
        broker = self._broker
        return broker.prepare_inputs(frames) if broker is not None else None

    def worker_pids(self) -> List[int]:
        return self.query(lambda b: b.worker_pids())

    def helper_pids(self) -> List[int]:
        """Processes of this runtime that are not workers (its reaper)."""
        return self.query(lambda b: b.helper_pids())

    @property
    def socket_dir(self) -> Optional[str]:
        """The runtime's private directory (its broker's ipc socket), once started."""
        return self._tmpdir.name if self._tmpdir is not None else None

    def stats(self) -> Dict[str, Any]:
        """What the runtime survived: messages dropped from peers, stale results, workers lost
        to a stop or to silence, deaths before Ready in a row (see broker.Broker.stats)."""
        return self.query(lambda b: b.stats())

    @property
    def broken(self) -> Optional[BaseException]:
        return self._broker.broken if self._broker is not None else None

    def close(self) -> None:
        """Stop workers and the broker thread; the runtime may be used again afterwards."""
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
            self._thread = self._loop = self._broker = None

    def reset(self) -> None:
        """Close and forget everything; the next use starts fresh (e.g. after RuntimeBrokenError)."""
        self.close()

    def __enter__(self) -> "LocalRuntime":
        self._ensure_started()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_default: Optional[LocalRuntime] = None
_default_lock = threading.Lock()


def default_runtime() -> LocalRuntime:
    """The runtime used by ``localExec``/``exec`` when none is given (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LocalRuntime()
        return _default


def reset_default_runtime() -> None:
    """Close the default runtime; the next job starts a fresh one."""
    global _default
    with _default_lock:
        runtime, _default = _default, None
    if runtime is not None:
        runtime.close()


atexit.register(reset_default_runtime)
