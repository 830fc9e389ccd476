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

import asyncio
import atexit
import os
import queue
import shutil
import tempfile
import threading
from typing import Any, Dict, List, Optional

import zmq

from .arena import IDLE_SECONDS
from .broker import Broker, Submission
from .errors import EINVAL, RuntimeBrokenError


def _remove_stale_socket_dirs() -> None:
    """Remove the socket directories of runtimes whose process died without cleaning up
    (``kill -9``); each is named after its process id."""
    temp = tempfile.gettempdir()
    for name in os.listdir(temp):
        prefix, _, rest = name.partition("-")
        pid, dash, _ = rest.partition("-")
        if prefix != "dcplocal" or not dash or not pid.isdigit() or int(pid) == os.getpid():
            continue
        path = os.path.join(temp, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # not ours to judge (another user's process, a vanished entry)
            continue


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class JobLink:
    """The client's end of one submitted job: a queue of broker notices and the calls back."""

    def __init__(self, runtime: "LocalRuntime", job_id: str) -> None:
        self.runtime, self.job_id = runtime, job_id
        self.queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()

    def cancel(self) -> None:
        self.runtime.call(lambda b: b.cancel(self.job_id))

    def feed(self, first: int, count: int, frames: List[Any]) -> None:
        # Large frames are readied (described, or copied into the input arena) here, on the
        # client's thread, so the broker's thread goes on dispatching meanwhile.
        prepared = self.runtime.prepare_inputs(frames)
        self.runtime.call(lambda b: b.feed(self.job_id, first, count, frames, prepared))

    def feed_end(self, total: int) -> None:
        self.runtime.call(lambda b: b.feed_end(self.job_id, total))


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
    """

    def __init__(self, workers: Optional[int] = None, *, memory_limit: Optional[int] = None,
                 recycle_slices: Optional[int] = None, recycle_rss: Optional[int] = None,
                 arena_idle_seconds: Optional[float] = None) -> None:
        self.default_workers = workers or os.cpu_count() or 1
        self.worker_args: List[str] = []
        for flag, value in (("--memory-limit", memory_limit), ("--recycle-slices", recycle_slices),
                            ("--recycle-rss", recycle_rss)):
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise EINVAL(f"LocalRuntime({flag[2:].replace('-', '_')}=…) must be a positive int, not {value!r}")
                self.worker_args += [flag, str(value)]
        if arena_idle_seconds is not None:
            if (not isinstance(arena_idle_seconds, (int, float)) or isinstance(arena_idle_seconds, bool)
                    or not 0 <= arena_idle_seconds < float("inf")):
                raise EINVAL(f"LocalRuntime(arena_idle_seconds=…) must be a finite number of seconds "
                             f">= 0, not {arena_idle_seconds!r}")
            self.worker_args += ["--arena-idle-seconds", repr(float(arena_idle_seconds))]
        self.arena_idle_seconds = IDLE_SECONDS if arena_idle_seconds is None else float(arena_idle_seconds)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._broker: Optional[Broker] = None
        self._context: Optional[zmq.Context] = None
        self._tmpdir: Optional[tempfile.TemporaryDirectory] = None
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
        loop = _new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            _remove_stale_socket_dirs()
            self._tmpdir = tempfile.TemporaryDirectory(prefix=f"dcplocal-{os.getpid()}-")
            # Two I/O threads: receiving large results is dominated by page faults on fresh
            # buffers; a second thread overlaps them (measured ~10-20% on 100 x 8 MB results).
            self._context = zmq.Context(io_threads=2)
            address = f"ipc://{self._tmpdir.name}/broker" if hasattr(zmq, "IPC_PATH_MAX_LEN") \
                else "tcp://127.0.0.1:*"
            self._broker = Broker(loop, self._context, address, self.worker_args,
                                  self.arena_idle_seconds)
            self._loop = loop
        except BaseException as exc:  # noqa: B902 - handed to the thread that waits for us
            self._started_error = exc
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

    def submit(self, submission: Submission, workers: Optional[int] = None) -> JobLink:
        if self.broken is not None:  # the previous job saw RuntimeBrokenError: start afresh
            self.close()
        self.ensure_workers(workers)
        link = JobLink(self, submission.info.job_id)
        self.call(lambda b: b.submit(submission, link.queue))
        return link

    def prepare_inputs(self, frames: List[Any]) -> Any:
        """`Broker.prepare_inputs`, from the client's thread."""
        broker = self._broker
        return broker.prepare_inputs(frames) if broker is not None else None

    def worker_pids(self) -> List[int]:
        return self.query(lambda b: b.worker_pids())

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
