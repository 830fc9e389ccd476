"""Worker health, as the broker judges it: respawn backoff, the no-worker window, lost workers.

Three questions, each answered by a small policy object with the clock passed in:

* `Respawns`: how long to wait before replacing a worker that died, and when to give up. A
  worker that dies before it says Ready may be a victim (the OOM killer, a chaos test, a node
  under pressure) or a sign that no worker can start at all (a broken interpreter, an import
  error). A worker that ended itself before Ready (an exit code, SIGSEGV, SIGABRT) is replaced
  after a backoff (10 ms doubling to 1 s) so a crash loop costs little; one killed from outside
  (SIGKILL, SIGTERM) is replaced at once: backing off would leave fewer processes, and a killer
  that picks among them would then find each one sooner (measured: with a SIGKILL every 0.2 s
  among 2 workers, backing off on kills kept every worker from ever getting Ready). The
  runtime is declared broken only after `NO_WORKER_SECONDS` with no Ready worker at all while
  workers keep dying; a healthy worker anywhere keeps the runtime going.
* `Liveness`: which workers holding tasks are lost although their process has not exited. A
  process we started is judged by its state in ``/proc/<pid>/stat``: ``T`` (SIGSTOP, a frozen
  job step) is lost at once. That is exact and costs ~10 µs, and a slice inside a long C call
  that holds the GIL is ``R``/``S``/``D``, never ``T``, so it is left to progressTimeout and
  sliceTimeout. A peer we did not start (or any peer where ``/proc`` cannot be read) is judged
  by silence instead: workers send a liveness beat every second while they hold a task
  (worker.py), and a peer silent for `SILENT_PEER_SECONDS` while holding one is lost. Silence is
  only the fallback because a GIL-holding C call silences the beat too.

Must not know: sockets, messages, jobs, the scheduler — it deals in identities, pids and times.
"""
from __future__ import annotations

import signal
from typing import Any, Callable, Dict, List, Optional, Tuple

#: The first replacement after a death before Ready waits this long; each further one in a row
#: doubles it, up to RESPAWN_MAX_DELAY. 10 ms is invisible next to an interpreter's start
#: (~0.2 s); a 1 s cap keeps a crash loop to ~1 process start a second.
RESPAWN_FIRST_DELAY = 0.01
RESPAWN_MAX_DELAY = 1.0
#: With no Ready worker for this long while workers keep dying before Ready, the runtime is
#: broken (RuntimeBrokenError). A worker starts in ~0.2-0.5 s here; 20 s covers a node under
#: heavy load or imports from a slow shared filesystem many times over, and is still short
#: enough that a job on a runtime that cannot start workers fails rather than hangs. Tests
#: override it (a module attribute, read at each check).
NO_WORKER_SECONDS = 20.0
#: A peer judged by silence (see module doc) is lost after this long without a message while
#: holding a task: 30 liveness beats missed. Long, because a GIL-holding C call silences the
#: beat too, and a lost peer's tasks are run again elsewhere.
SILENT_PEER_SECONDS = 30.0
#: Exit codes of a process killed from outside rather than ending itself (see module doc).
KILLED_FROM_OUTSIDE = (-signal.SIGKILL, -signal.SIGTERM)
#: Busy workers' process states are read this often: a stop is seen within ~0.1 s, at ~10 µs
#: per busy worker per check (0.6 % of a core for 64 workers).
STATE_CHECK_SECONDS = 0.1


class Respawns:
    """Backoff for replacing dead workers, and the window after which none can be kept alive."""

    def __init__(self) -> None:
        self.early_deaths = 0               # in a row, since a worker last said Ready
        self.crashes = 0                    # of those, the ones not killed from outside
        self.last_exitcode: Optional[int] = None
        #: since when no worker has been Ready (None: one is, or none has died yet)
        self.unready_since: Optional[float] = None

    def ready(self) -> None:
        self.early_deaths = self.crashes = 0
        self.unready_since = None

    def died(self, early: bool, ready_left: int, exitcode: Optional[int], now: float) -> float:
        """A worker exited (``early``: before Ready); returns the delay before replacing it."""
        self.last_exitcode = exitcode
        if ready_left == 0 and self.unready_since is None:
            self.unready_since = now
        if not early:
            return 0.0
        self.early_deaths += 1
        if exitcode in KILLED_FROM_OUTSIDE:
            return 0.0
        self.crashes += 1
        return min(RESPAWN_MAX_DELAY, RESPAWN_FIRST_DELAY * 2 ** (self.crashes - 1))

    def broken(self, ready_now: int, now: float) -> Optional[str]:
        """Why the runtime cannot keep a worker alive, once it has been so for the window."""
        window = NO_WORKER_SECONDS
        if ready_now or not self.early_deaths or self.unready_since is None:
            return None
        if now - self.unready_since < window:
            return None
        return (f"no worker process stayed alive for {window:g} s: {self.early_deaths} in a row "
                f"exited before they were ready (last exit code {self.last_exitcode}); see their "
                f"stderr above")


def process_state(pid: int, proc: str = "/proc") -> Optional[str]:
    """The state letter of process ``pid`` (``R``, ``S``, ``T``, …); None if it cannot be read."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'
    end = text.rfind(b")")
    state = text[end + 2:end + 3] if end >= 0 else b""
    return state.decode() if state.isalpha() else None


class Liveness:
    """Finds workers that hold tasks but are lost: stopped processes and silent peers."""

    def __init__(self, read_state: Callable[[int], Optional[str]] = process_state) -> None:
        self.read_state = read_state
        self.heard: Dict[Any, float] = {}   # worker -> when we last had a message from it
        self.next_check = 0.0
        self.stopped_found = 0
        self.silent_found = 0

    def heard_from(self, worker: Any, now: float) -> None:
        self.heard[worker] = now

    def forget(self, worker: Any) -> None:
        self.heard.pop(worker, None)

    def lost(self, holding: Dict[Any, float], pid_of: Callable[[Any], Optional[int]],
             now: float) -> List[Tuple[Any, str]]:
        """``(worker, reason)`` of each lost worker among ``holding`` (worker -> when it got or
        started its running task)."""
        if now < self.next_check:
            return []
        self.next_check = now + STATE_CHECK_SECONDS
        found = []
        for worker, since in holding.items():
            pid = pid_of(worker)
            state = self.read_state(pid) if pid else None
            if state == "T":
                self.stopped_found += 1
                found.append((worker, f"worker process {pid} is stopped (SIGSTOP?)"))
            elif state is None:
                quiet = now - max(since, self.heard.get(worker, since))
                if quiet > SILENT_PEER_SECONDS:
                    self.silent_found += 1
                    found.append((worker, f"worker {worker!r} held a task and sent nothing "
                                          f"for {quiet:.1f} s"))
        return found
