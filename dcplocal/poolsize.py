"""How many worker processes a runtime should have: the warm pool, job demand, and retirement.

A runtime keeps a warm pool between jobs, up to its own worker count; a job may ask for more
(``localExec(6)`` on a 2-worker runtime), and those extra workers are wanted only while some
job wants them. Once the pool has been larger than every live demand for ``idle_seconds``, the
surplus retires (the broker stops idle workers), so a shared node gets its memory back::

    want(job, n)        a job asks for n workers          -> the pool grows to n at once
    surplus(jobs, now)  with the jobs still alive, the    -> how many workers to stop now
                        pool's size, and the clock

Pure: the clock is passed in; no processes, no sockets. The broker acts on the answers.

Must not know: sockets, processes, the scheduler.
"""
from __future__ import annotations

from typing import Container, Dict, Optional


class PoolSize:
    def __init__(self, keep: int, idle_seconds: float) -> None:
        #: the most workers kept warm between jobs (the runtime's own count)
        self.keep = keep
        self.idle_seconds = idle_seconds
        #: the warm pool: grows with what jobs asked for, up to ``keep``
        self.kept = 0
        #: job id -> workers it asked for, while the job lives
        self.demand: Dict[str, int] = {}
        #: the most workers wanted since the pool last shrank (what to start)
        self.target = 0
        self._surplus_since: Optional[float] = None

    def want(self, workers: int, job_id: Optional[str] = None) -> int:
        """A job (or the runtime itself) wants ``workers``; returns the new target."""
        self.kept = max(self.kept, min(workers, self.keep))
        if job_id is not None:
            self.demand[job_id] = workers
        self.target = max(self.target, workers)
        return self.target

    def surplus(self, live_jobs: Container[str], size: int, now: float) -> int:
        """How many of ``size`` workers to retire now (0 while the grace period runs); lowers
        the target to what is still wanted once the grace period is over."""
        for job_id in [j for j in self.demand if j not in live_jobs]:
            del self.demand[job_id]
        wanted = max([self.kept, *self.demand.values()])
        if size <= wanted:
            self._surplus_since = None
            return 0
        if self._surplus_since is None:
            self._surplus_since = now
        if now - self._surplus_since < self.idle_seconds:
            return 0
        self.target = wanted
        return size - wanted
