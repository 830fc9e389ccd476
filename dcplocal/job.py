"""The Job handle: the spec's properties, events, and ``exec``/``localExec``/``wait``/``cancel``.

A Job turns its input set, work function and arguments into a `JobRequest`, submits it to a
runtime (`runtime_api.Runtime`: the local runtime, or `SerialRuntime` for ``localExec(0)``), then
drives the job from the caller's thread: it reads the link's typed notices, collates results,
feeds streamed input on request, and emits events — so every listener runs on the caller's
thread. With the serial runtime the tasks themselves run on that thread too, so a debugger stops
inside the work function.

Must not know: sockets, processes, brokers, the scheduler's policy (it never imports them).
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import time
import uuid
import weakref
from typing import Any, Dict, Iterator, List, Optional, Tuple

from . import codec, pickling
from .errors import EINVAL, EPERM, ERANGE, ETOOMANYERRORS, ETYPE, JobCancelledError
from .aio import JobAio
from .events import EventEmitter, Payload
from .hostcpus import default_workers
from .inputs import InputSpec
from .jobinputs import DataInput
from .notices import NoticeHandling
from .progress import JobProgress
from .progress import wanted as wanted_progress
from .requirements import validate_requirements
from .results import ResultHandle, ResultStore
from .inprocess import SerialRuntime
from .runtime import default_runtime
from .runtime_api import (Console, InputWanted, JobEnded, JobLink, JobRequest, Results,
                          Runtime, RuntimeBroken, SliceFailed, WorkEvent)
from .sandbox import SandboxEnvironment
from .taskexec import LoadedJob, execute_task

JOB_EVENTS = frozenset({
    "accepted", "readystatechange", "status", "result", "resultsUpdated", "complete", "error",
    "console", "cancel", "noProgress", "noProgressData", "ENOPROGRESS", "ETOOMANYERRORS",
    "ESLICETOOSLOW", "ENOFUNDS", "EWORKERDIED",
})
#: ``status`` events are emitted at most this often (the last one always), so a million-slice
#: job does not call a listener a million times.
STATUS_INTERVAL = 0.1


_NO_SAMPLE = object()

#: Jobs of this process by id, for compute.cancel/status/getJobInfo(job_id); weak, so a job
#: nobody holds any more is forgotten.
JOBS: "weakref.WeakValueDictionary[str, Job]" = weakref.WeakValueDictionary()


class Job(EventEmitter, NoticeHandling):
    """A DCP job handle (``compute.Job``): input set + work function + arguments → output set."""

    def __init__(self, spec: Optional[InputSpec], data: Optional[DataInput], work: Any,
                 args: Tuple[Any, ...] = ()) -> None:
        super().__init__(JOB_EVENTS)
        self._spec, self._data, self._work_fn, self._args = spec, data, work, tuple(args)
        self.public: Dict[str, Any] = {"name": None, "description": None, "link": None}
        self.requirements: Dict[str, Any] = {}
        self.collateResults = True
        self.initialSliceProfile: Optional[Dict[str, Any]] = None
        self.slicePaymentOffer: Any = None
        self.paymentAccount: Any = None
        self.computeGroups: List[Any] = []
        self.contextId: Optional[str] = None
        self.requirePath: List[str] = []
        self.modulePath: List[str] = []
        self.errorLimit = 0
        self.maxAttempts = 4
        self.progressTimeout: Optional[float] = None
        self.sliceTimeout: Optional[float] = None
        self.maxResultBytes: Optional[int] = None
        self.scheduler: Optional[Runtime] = None
        self.id: Optional[str] = None
        self.receipt: Optional[Dict[str, Any]] = None
        self.meanSliceProfile: Optional[Dict[str, Any]] = None
        self.results: Optional[ResultHandle] = None
        self.work = EventEmitter()
        self.state: Dict[str, Any] = {}
        self.status = Payload(runStatus="new", total=None, distributed=None, computed=None)
        self._link: Optional[JobLink] = None
        self._cancel_requested = False
        self._store = ResultStore(0)  # this run's; replaced by _begin
        self._first_error = None
        self._over_limit = False
        self._runtime_let_go = False
        self._progress: Optional[JobProgress] = None
        self._cpu_seconds = 0.0

    @property
    def aio(self) -> JobAio:
        """The awaitable forms of exec/localExec (made on demand: a stored one would tie the job
        and its results into a reference cycle that only the garbage collector frees)."""
        return JobAio(self)

    # ---- public methods ---------------------------------------------------------------------

    def exec(self, slicePaymentOffer: Any = None, paymentAccountKeystore: Any = None,
             initialSliceProfile: Any = None, *, progress: Optional[bool] = None) -> ResultHandle:
        """Deploy on ``job.scheduler`` (default: the embedded local runtime) and block until the
        job ends; returns its results (raises its error: see ``localExec``).

        Example::

            with dcplocal.LocalRuntime(workers=4) as runtime:
                job.scheduler = runtime
                results = job.exec()
        """
        self._take_exec_args(slicePaymentOffer, paymentAccountKeystore, initialSliceProfile)
        show = wanted_progress(progress)
        return self._run_on(self.scheduler or default_runtime(), None, show)

    def localExec(self, cores: Any = None, *exec_args: Any,
                  progress: Optional[bool] = None) -> ResultHandle:
        """Run on this machine and block until the job ends; returns its `ResultHandle`.

        ``cores``: worker processes (None = the CPUs this process may use); ``0`` or ``False``
        runs in this process, serially, so a debugger stops in the work function, with the
        same pickling the workers use. Further arguments are exec's (slicePaymentOffer,
        paymentAccountKeystore, initialSliceProfile). ``progress``: a progress bar (default:
        when stderr is a terminal or a notebook and the job runs over a second;
        ``DCPLOCAL_PROGRESS=0/1`` decides too).

        The first failed slice fails the job (``job.errorLimit`` tolerates more): its exception
        is raised with its own type, the results so far stay in ``job.results``.

        Example::

            results = compute.for_(1, 3, lambda i: i * 10).localExec(2)   # [10, 20, 30]
        """
        if isinstance(cores, bool):
            if cores:
                raise ETYPE("localExec(True) is ambiguous: pass a number of cores, None or False")
        elif cores is not None and not isinstance(cores, numbers.Integral):
            raise ETYPE(f"localExec(cores): cores must be an int, None or False, not {cores!r}")
        elif cores is not None and cores < 0:
            raise EINVAL(f"localExec(cores): cores must be >= 0, not {cores}")
        if len(exec_args) > 3:
            raise ETYPE(f"localExec(cores, slicePaymentOffer, paymentAccountKeystore, "
                        f"initialSliceProfile): got {1 + len(exec_args)} arguments")
        self._take_exec_args(*exec_args)
        show = wanted_progress(progress)
        if cores is False or cores == 0:
            return self._run_on(SerialRuntime(), None, show)
        return self._run_on(self.scheduler or default_runtime(),
                            int(cores or default_workers().cpus), show)

    def _take_exec_args(self, offer: Any = None, keystore: Any = None, profile: Any = None) -> None:
        if offer is not None:
            self.slicePaymentOffer = offer
        if keystore is not None:
            self.setPaymentAccountKeystore(keystore)
        if profile is not None:
            self.initialSliceProfile = profile

    def wait(self) -> ResultHandle:
        """The results of a finished job (the official SDK's ``job.wait()``)."""
        if self.results is None or self.status.runStatus not in ("finished", "complete"):
            raise EPERM(f"job {self.id or '(not deployed)'} has not finished (runStatus "
                        f"{self.status.runStatus!r}); call exec() or localExec() first")
        return self.results

    def cancel(self) -> None:
        """Cancel the job: dispatch stops, running slices are stopped; exec raises ECANCELED.
        Safe from a listener or from any other thread, and before a run that is about to start
        (the run then ends at once); on an ended job it does nothing."""
        if self.status.runStatus in ("finished", "failed", "cancelled") and self._link is None:
            return
        self._cancel_requested = True
        if self._link is not None:
            self._link.cancel()

    def estimate(self, sample: Any = _NO_SAMPLE) -> Dict[str, float]:
        """Run one slice here, in this process, and return its SliceProfile: ``cpuHours`` (CPU
        time), ``gpuHours`` (0), ``inputMBytes`` and ``outputMBytes`` (pickled sizes). The datum is
        ``sample`` or, by default, the first element of the input set."""
        if sample is _NO_SAMPLE:
            sample = self._spec.key(0) if self._spec is not None else self._items.first()
        request = self._request(None)
        job = LoadedJob(request.job_id, request.options,
                        [request.work, request.arguments, *request.spec])
        with SandboxEnvironment(capture_output=True):
            cpu = time.process_time()
            frames, _errors, failed = execute_task(job, 0, 1, [sample], lambda *_: None)
            cpu = time.process_time() - cpu
        if failed:
            raise failed[0][1]
        return {"cpuHours": cpu / 3600, "gpuHours": 0.0,
                "inputMBytes": len(codec.dumps(sample)[0]) / 1e6,
                "outputMBytes": sum(len(memoryview(frame)) for frame in frames[1:]) / 1e6}

    def setSlicePaymentOffer(self, offer: Any) -> None:
        self.slicePaymentOffer = offer

    def setPaymentAccountKeystore(self, keystore: Any) -> None:
        if self.id is not None:
            raise EPERM("the payment account cannot change after the job was deployed")
        self.paymentAccount = keystore

    def requires(self, modules: Any) -> None:
        """Record module dependencies (Python imports need none; kept for API compatibility)."""
        self.requirePath.extend([modules] if isinstance(modules, str) else list(modules))

    def __repr__(self) -> str:
        return f"<dcplocal Job {self.id or '(not deployed)'} {self.status.runStatus}>"

    @property
    def _items(self) -> DataInput:
        """The data input set (a job without a range or distribution has one)."""
        assert self._data is not None
        return self._data

    @property
    def _total(self) -> Optional[int]:
        """Slices in the input set; None while a streamed one has not ended."""
        return len(self._spec) if self._spec is not None else self._items.length

    # ---- preparing ----------------------------------------------------------------------------

    def _check_options(self) -> None:
        _check_whole("errorLimit", self.errorLimit, 0)
        _check_whole("maxAttempts", self.maxAttempts, 1)
        for name in ("progressTimeout", "sliceTimeout"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ETYPE(f"job.{name} must be a number of seconds or None, not {value!r}")
            if not (math.isfinite(value) and float(value) > 0):
                raise EINVAL(f"job.{name} must be a finite number of seconds > 0 (None turns "
                             f"it off), not {value!r}")
        if self.maxResultBytes is not None:
            _check_whole("maxResultBytes", self.maxResultBytes, 1)
        if not isinstance(self.public, dict):
            raise ETYPE(f"job.public must be a dict, not {type(self.public).__name__}")
        validate_requirements(self.requirements)
        _check_slice_count(self._total)

    def _watchdog_interval(self) -> Optional[float]:
        limits = [v for v in (self.progressTimeout, self.sliceTimeout) if v is not None]
        return min(0.25, min(limits) / 8) if limits else None

    def _request(self, cores: Optional[int]) -> JobRequest:
        """What any runtime needs of this job; bad input fails here, before anything starts."""
        self._check_options()
        options = {"spread": bool(self._spec is not None and self._spec.spread),
                   "public": dict(self.public), "heartbeat": self._watchdog_interval(),
                   "max_result_bytes": self.maxResultBytes,
                   # what the workers import and open must be what this process would (warm
                   # workers started before a sys.path change or a chdir included)
                   "sys_path": list(sys.path), "cwd": os.getcwd(), "log_level": _lowest_log_level()}
        return JobRequest(
            self.id or "", _pickle("work function", self._work_fn), _pickle("argument", self._args),
            codec.dumps(self._spec)[:1] if self._spec is not None else [], self._total,
            streaming=self._spec is None, options=options, error_limit=self.errorLimit,
            max_attempts=self.maxAttempts, progress_timeout=self.progressTimeout,
            slice_timeout=self.sliceTimeout,
            initial_slice_seconds=_profile_seconds(self.initialSliceProfile), max_workers=cores)

    def _begin(self) -> str:
        """Fresh run state (store, handle, status); returns the job's id."""
        job_id = self.id = self.id or uuid.uuid4().hex[:16]
        total = self._total
        self._store = ResultStore(total)
        self._first_error = None
        self._over_limit = False
        self._runtime_let_go = False  # the runtime ended the job by a "broken" notice
        self.results = self._make_handle()
        self.status.update(total=total, distributed=0, computed=0)
        self.receipt = {"job": self.id, "time": time.time()}
        JOBS[job_id] = self
        return job_id

    def _make_handle(self) -> ResultHandle:
        # The handle reaches the job weakly: job.results -> handle -> job would be a cycle, and
        # results (large arrays, arena regions) would live until the garbage collector ran.
        job = weakref.ref(self)

        def emit_result(index: int) -> None:
            alive = job()
            if alive is not None:
                alive._emit_result(index)

        if self._spec is not None:
            spec = self._spec
            return ResultHandle(self._store, spec.key, lambda a, b: list(spec.slice_data(a, b - a)),
                                spec.shape, emit_result)
        return ResultHandle(self._store, self._items.key, self._items.keys, None, emit_result)

    def _set_run_status(self, run_status: str) -> None:
        if self.status.runStatus != run_status:
            self.status.runStatus = run_status
            self.emit("readystatechange", run_status)

    # ---- running on a runtime -----------------------------------------------------------------

    @contextlib.contextmanager
    def _progress_bar(self, show: bool) -> Iterator[None]:
        if not show:
            yield
            return
        self._progress = JobProgress(self.status.total, self.public.get("name") or "")
        try:
            yield
        finally:
            progress, self._progress = self._progress, None
            progress.update(self._store.computed, len(self._store.errors), self.status.total)
            progress.close()

    def _run_on(self, runtime: Runtime, cores: Optional[int], show: bool = False) -> ResultHandle:
        if not callable(getattr(runtime, "submit", None)):
            raise ETYPE(f"job.scheduler must be a runtime (dcplocal.LocalRuntime, or any object "
                        f"with submit(JobRequest)), not {type(runtime).__name__}")
        if self.status.runStatus == "running":
            raise EPERM(f"job {self.id} is already running")
        request = self._request(cores)  # bad input fails here, before any worker starts
        request.job_id = self._begin()
        if self._cancel_requested:  # cancelled before it could start: nothing is submitted
            return self._finish("cancelled")
        if self._data is not None:
            self._items.restart()
        self._link = runtime.submit(request)
        if self._cancel_requested:  # cancel() from another thread raced with the submission
            self._link.cancel()
        self.emit("accepted", Payload(job=self))
        self._set_run_status("running")
        try:
            with self._progress_bar(show):
                outcome = self._drive(self._link)
        except BaseException as exc:  # noqa: B902 - Ctrl-C too: the job must end, then re-raise
            self._abandon(self._link, exc)
            raise
        finally:
            self._link = None
        return self._finish(outcome)

    def _drive(self, link: JobLink) -> str:
        last_status = 0.0
        while True:
            notice = link.next_notice(0.5)
            if isinstance(notice, Results):
                self._on_results(notice)
                now = time.monotonic()
                if now - last_status >= STATUS_INTERVAL:
                    last_status = now
                    self._emit_status()
            elif isinstance(notice, (Console, WorkEvent)):
                self._on_event(notice)
            elif isinstance(notice, InputWanted):
                self._items.feed(link, notice.count)
            elif isinstance(notice, SliceFailed):
                self._on_failed(notice)
            elif isinstance(notice, JobEnded):
                if notice.error is not None:  # refused by the runtime: it holds nothing more
                    self._runtime_let_go = True
                    raise notice.error
                self._seal_input()
                self._emit_status()
                return notice.outcome
            elif isinstance(notice, RuntimeBroken):
                self._runtime_let_go = True
                raise notice.error
            if len(self._store.errors) > self.errorLimit and not self._over_limit:
                # failures the runtime cannot count (results or events that would not unpickle
                # here) end the job as the runtime's own would
                self._over_limit = True
                link.cancel()

    def _seal_input(self) -> None:
        """A streamed input set's length is known once it ended: results end there too."""
        if self._data is not None and self._data.length is not None:
            self._store.total = self._data.length
            self.status.total = self._data.length

    def _abandon(self, link: JobLink, exc: BaseException) -> None:
        """A failure on this side of the job (a raising input iterator, an input that will not
        pickle, a bug, Ctrl-C): stop the job in the runtime and let it end there, so it holds no
        worker and no memory, keeping every result reported meanwhile; then say how it ended."""
        if not self._runtime_let_go:  # (a RuntimeBroken notice, or a job the runtime refused)
            link.cancel()
            self._wind_down(link)
        self._cancel_requested = False
        if isinstance(exc, KeyboardInterrupt):
            self._set_run_status("cancelled")
            self.emit("cancel", Payload(job=self.id, address=self.id, reason="KeyboardInterrupt"))
        else:
            self._set_run_status("failed")

    def _wind_down(self, link: JobLink, timeout: float = 3.0) -> None:
        """Take the cancelled job's last notices until it ended (at most ``timeout`` seconds:
        the runtime stops a cancelled job within one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                notice = link.next_notice(0.1)
            except KeyboardInterrupt:
                continue
            if isinstance(notice, (JobEnded, RuntimeBroken)):
                return
            try:
                if isinstance(notice, Results):
                    self._on_results(notice)
                elif isinstance(notice, SliceFailed):
                    self._on_failed(notice)
            except Exception:  # noqa: BLE001 - the first failure is the one being raised
                continue

    def _finish(self, outcome: str) -> ResultHandle:
        assert self.results is not None
        cancelled, self._cancel_requested = self._cancel_requested, False  # this run's, read once
        if (cancelled and outcome != "complete") or (outcome == "cancelled"
                                                     and not self._over_limit):
            self._set_run_status("cancelled")
            self.emit("cancel", Payload(job=self.id, address=self.id))
            raise JobCancelledError(f"job {self.id} was cancelled; "
                                    f"{self._store.computed} results are kept in job.results")
        if outcome == "failed" or len(self._store.errors) > self.errorLimit:
            self._set_run_status("failed")
            error = self._job_error()
            code = getattr(error, "code", None)
            if code in JOB_EVENTS:
                self.emit(code, Payload(job=self.id, address=self.id, error=error))
            raise error
        self._set_run_status("finished")
        self._update_profile()
        self.emit("complete", self.results)
        return self.results

    def _job_error(self) -> BaseException:
        store = self._store
        if self.errorLimit == 0 and self._first_error is not None:
            return self._first_error
        error = ETOOMANYERRORS(f"job {self.id}: {len(store.errors)} slices failed, more than "
                               f"errorLimit={self.errorLimit}")
        error.__cause__ = self._first_error
        return error

    def _update_profile(self) -> None:
        computed = max(1, self._store.computed)
        self.meanSliceProfile = {"cpuHours": self._cpu_seconds / computed / 3600, "gpuHours": 0.0}


def _lowest_log_level() -> int:
    """The lowest level any logger of this process would handle: the workers send no record
    below it."""
    import logging

    levels = [logging.getLogger().getEffectiveLevel()]
    levels += [logger.level for logger in list(logging.Logger.manager.loggerDict.values())
               if isinstance(logger, logging.Logger) and logger.level]
    return min(levels)


def _check_whole(name: str, value: Any, least: int) -> None:
    """ETYPE unless ``value`` is an int (not a bool), EINVAL unless it is at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ETYPE(f"job.{name} must be an int, not {value!r}")
    if value < least:
        raise EINVAL(f"job.{name} must be >= {least}, not {value!r}")


#: Bytes of client memory a slice needs at the least: its done flag and an 8-byte result slot.
SLOT_BYTES = 9


def _check_slice_count(total: Optional[int]) -> None:
    """ERANGE for an input set too large to hold one result per slice on this machine."""
    if total is None:
        return
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX sysconf: assume 1 TiB
        memory = 1 << 40
    if total * SLOT_BYTES > memory:
        raise ERANGE(f"the input set has {total:,} slices; their results need at least "
                     f"{total * SLOT_BYTES:,} bytes, more than this machine's {memory:,}")


def _profile_seconds(profile: Any) -> Optional[float]:
    """Seconds per slice from a SliceProfile's ``cpuHours`` (None when absent or invalid)."""
    if isinstance(profile, dict) and isinstance(profile.get("cpuHours"), (int, float)):
        seconds = float(profile["cpuHours"]) * 3600
        return seconds if seconds > 0 else None
    return None


def _pickle(what: str, obj: Any) -> bytes:
    """``obj`` pickled by value (as code travels) or ETYPE naming the object that would not."""
    try:
        return pickling.dumps_by_value(obj)
    except Exception as exc:  # noqa: BLE001 - re-raised typed, with the culprit named
        raise ETYPE(f"the {what} cannot be sent to a worker process: {type(exc).__name__}: {exc} "
                    f"(object: {obj!r:.200})") from exc

