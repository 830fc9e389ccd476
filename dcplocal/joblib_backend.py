"""joblib on dcplocal: ``with joblib.parallel_backend("dcplocal"): Parallel(n_jobs=2)(...)``.

``import dcplocal.joblib_backend`` registers the backend (so does calling `register`); importing
``dcplocal`` alone never imports joblib, which stays an optional dependency.

joblib groups its tasks into ``BatchedCalls`` (sizing them from measured durations, as it does
for loky) and hands each batch to `DcpLocalBackend.submit`; the batches go to a
`dcplocal.Executor`, which runs the batches submitted close together as one dcplocal job on the
warm runtime. A task's exception comes back with its own type, and joblib re-raises it. Nested
``Parallel`` calls inside a task run sequentially in that worker: each worker already owns a core.

``joblib.parallel_backend("dcplocal", runtime=rt)`` runs on a `LocalRuntime` of your own.

Must not know: sockets, processes, jobs; it only speaks joblib's backend protocol to an Executor.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Optional, Tuple

import joblib  # type: ignore[import-untyped]  # joblib ships no type information
from joblib._parallel_backends import (  # type: ignore[import-untyped]
    AutoBatchingMixin, FallbackToBackend, ParallelBackendBase, SequentialBackend)

from .executor import Executor

NAME = "dcplocal"


class DcpLocalBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's backend protocol on a `dcplocal.Executor` (one per ``Parallel`` call)."""

    supports_retrieve_callback = True  # results come back through futures' done-callbacks
    supports_inner_max_num_threads = False
    uses_threads = False
    supports_sharedmem = False  # require="sharedmem" makes joblib choose threads instead

    def __init__(self, nesting_level: Optional[int] = None, inner_max_num_threads: Any = None,
                 runtime: Any = None, **backend_kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads,
                         **backend_kwargs)
        self._runtime = runtime
        self._executor: Optional[Executor] = None
        self._n_jobs = 1

    def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
        """Workers a call gets: ``n_jobs``, or for ``-k`` all CPUs but ``k - 1``, as joblib's own
        backends count them."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(joblib.cpu_count() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: Optional[int] = 1, parallel: Any = None, prefer: Any = None,
                  require: Any = None, **backend_kwargs: Any) -> int:
        """Start a call: an Executor of ``n_jobs`` workers; one worker runs in this process."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:  # as joblib's process backends do: no process for a serial call
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        self._n_jobs = n_jobs
        self._executor = Executor(n_jobs, runtime=self._runtime)
        return n_jobs

    def submit(self, func: Callable[[], Any], callback: Optional[Callable[[Any], None]] = None) -> Future:
        assert self._executor is not None, "configure() was not called"
        future = self._executor.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    apply_async = submit  # what older joblib releases call (1.6 calls submit)

    def retrieve_result_callback(self, out: Future) -> Any:
        return out.result()

    def terminate(self) -> None:
        """End of a call: its executor is shut down (the runtime and its workers stay warm)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed: stop the call's other jobs, and start afresh if joblib asks to."""
        if self._executor is not None:
            self._executor._abort()
            self._executor.shutdown(wait=True)
            self._executor = None
        if ensure_ready:
            self._executor = Executor(self._n_jobs, runtime=self._runtime)

    def get_nested_backend(self) -> Tuple[Any, Optional[int]]:
        """Nested calls inside a task run sequentially in its worker."""
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None


def register() -> None:
    """Make ``"dcplocal"`` a joblib backend name (done on import; calling it again is harmless)."""
    joblib.register_parallel_backend(NAME, DcpLocalBackend)


register()
