"""Timing machinery: alternating repetitions, a per-run time cap, medians, result checks.

Implementations are interleaved within each repetition (in a different, reproducibly shuffled
order each time), so a slow drift of the machine — another process waking up, thermal
throttling, memory fragmentation — spreads over all of them instead of penalising whichever ran
last. Every timed run is followed by a check of its results, outside the clock.

The cap is enforced with SIGALRM: a run that exceeds it is interrupted (``RunTimeout`` is raised
in the main thread, even inside a blocking wait), recorded as "> cap", its pool is rebuilt, and
its remaining repetitions are skipped.
"""
from __future__ import annotations

import contextlib
import gc
import random
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from .base import Peer
from .work import Inputs, Workload, check_inc, inc


class RunTimeout(Exception):
    """A timed run went over the per-run cap."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise RunTimeout in the main thread if the block lasts longer than ``seconds``."""
    def expire(signum: int, frame: Any) -> None:
        raise RunTimeout(f"over the {seconds:g} s cap")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Series:
    """The repeated measurements of one implementation on one workload."""

    peer: str
    label: str
    slices: int
    times: List[float] = field(default_factory=list)
    status: str = "ok"   # "ok", "> cap (60 s)", "error: …", "WRONG RESULT: …", "skipped: …"
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.times)

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.times) if self.times else None

    @property
    def per_slice(self) -> Optional[float]:
        """Median seconds per slice (how runs over different slice counts are compared)."""
        return self.median / self.slices if self.median is not None and self.slices else None

    def as_json(self) -> Dict[str, Any]:
        return {"label": self.label, "slices": self.slices, "times_s": self.times,
                "median_s": self.median, "per_slice_us": _us(self.per_slice),
                "status": self.status, "note": self.note}


def _us(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else seconds * 1e6


def settle(quiet: float = 0.10, longest: float = 2.0) -> None:
    """Between runs: collect garbage and wait until the machine is quiet.

    A peer may go on working after its results are back — joblib deletes its memmapped copies,
    Dask releases data, the kernel frees the previous run's 800 MB — and that work would be
    charged to whichever implementation runs next. So: wait (up to ``longest`` seconds) until
    a 50 ms window sees the CPUs busy less than ``quiet`` of the time.
    """
    gc.collect()
    try:
        import psutil
    except ImportError:
        time.sleep(0.2)
        return
    deadline = time.monotonic() + longest
    while psutil.cpu_percent(interval=0.05) > quiet * 100 and time.monotonic() < deadline:
        pass


def warm(inputs: Inputs) -> None:
    """Read every array of the input set once, so each implementation starts from inputs in
    warm memory — as they are right after the caller made them.

    On this VM, memory left untouched for a second reads 3-6x slower the first time (measured:
    summing 100 MiB of arrays took 13 ms back to back and 76-84 ms after 1 s idle), so
    without this W3 charged whichever implementation ran after the longest pause.
    """
    if isinstance(inputs, list):
        for item in inputs:
            if hasattr(item, "sum"):
                item.sum()


def timed_run(peer: Peer, fn: Callable[[Any], Any], inputs: Inputs,
              check: Callable[[Sequence[Any], Inputs], None], cap: float) -> float:
    """Seconds for one ``peer.run`` including materialisation; then check the results."""
    settle()
    warm(inputs)
    with deadline(cap):
        started = time.perf_counter()
        results = peer.run(fn, inputs)
        elapsed = time.perf_counter() - started
    check(results, inputs)
    return elapsed


def recover(peer: Peer) -> None:
    """After a timeout or an error the peer's pool may be wedged: rebuild it (untimed)."""
    with contextlib.suppress(Exception):
        peer.stop()
    peer.start()


def shuffled(peers: Sequence[Peer], rep: int) -> List[Peer]:
    """This round's order: a reproducible shuffle, so no peer always follows the same one."""
    order = list(peers)
    random.Random(rep).shuffle(order)
    return order


def record_failure(series: Series, peer: Peer, exc: BaseException, cap: float,
                   rebuild: bool = True) -> None:
    """Mark the series failed with a readable status; rebuild the peer if its pool may be wedged."""
    if isinstance(exc, RunTimeout):
        series.status = f"> cap ({cap:g} s)"
    elif isinstance(exc, AssertionError):
        series.status = f"WRONG RESULT: {exc}"
    else:
        series.status = f"error: {type(exc).__name__}: {exc}"
    print(f"    {peer.key}: {series.status}", file=sys.stderr)
    if rebuild and not isinstance(exc, AssertionError):
        try:
            recover(peer)
        except Exception as again:  # noqa: BLE001 - the peer sits out the following workloads
            print(f"    {peer.key}: could not be restarted: {again}", file=sys.stderr)


def slices_for(peer: Peer, workload: Workload) -> Inputs:
    """The workload's inputs, cut to the peer's W1 slice count when it declares one."""
    if workload.key == "W1" and peer.w1_slices:
        return workload.inputs[: peer.w1_slices]
    return workload.inputs


def run_workload(workload: Workload, peers: Sequence[Peer], reps: int, cap: float,
                 extra: Optional[Callable[[], None]] = None) -> Dict[str, Series]:
    """Warm each peer up (untimed, on a few inputs), then ``reps`` alternating timed rounds.

    ``extra`` runs at the start of every round, for a baseline timed in the same rhythm.
    """
    series = {p.key: Series(p.key, p.label, len(slices_for(p, workload))) for p in peers}
    for peer in peers:
        try:
            timed_run(peer, workload.fn, workload.inputs[:4], workload.check, cap)
        except Exception as exc:  # noqa: BLE001 - recorded, the other peers go on
            record_failure(series[peer.key], peer, exc, cap)
    for rep in range(reps):
        if extra is not None:
            extra()
        for peer in shuffled(peers, rep):
            one = series[peer.key]
            if one.status != "ok":
                continue
            try:
                one.times.append(timed_run(peer, workload.fn, slices_for(peer, workload),
                                           workload.check, cap))
            except Exception as exc:  # noqa: BLE001
                record_failure(one, peer, exc, cap)
        print(f"  {workload.key} round {rep + 1}/{reps}: " + ", ".join(
            f"{k} {s.times[-1]:.3f}s" for k, s in series.items() if s.status == "ok" and s.times),
            file=sys.stderr)
    return series


def cold_then_warm(peer: Peer, cap: float, warm_slices: int) -> Sequence[float]:
    """(seconds from no pool to the result of a 1-slice job, seconds of a job right after)."""
    settle()
    with deadline(cap):
        started = time.perf_counter()
        peer.start()
        first = peer.run(inc, range(1))
        cold = time.perf_counter() - started
        started = time.perf_counter()
        second = peer.run(inc, range(warm_slices))
        warm = time.perf_counter() - started
    check_inc(first, range(1))
    check_inc(second, range(warm_slices))
    return cold, warm


def run_cold_starts(peers: Sequence[Peer], reps: int, cap: float,
                    warm_slices: int = 10) -> Dict[str, Dict[str, Series]]:
    """W5: ``reps`` alternating rounds of stop (untimed), cold 1-slice job, warm small job.

    Returns ``{"cold": {peer: Series}, "warm": {peer: Series}}``.
    """
    out = {"cold": {p.key: Series(p.key, p.label, 1) for p in peers},
           "warm": {p.key: Series(p.key, p.label, warm_slices) for p in peers}}
    for peer in peers:
        with contextlib.suppress(Exception):  # "from nothing": no pool may survive from W1-W4
            peer.stop()
    for rep in range(reps):
        for peer in shuffled(peers, rep):
            cold, warm = out["cold"][peer.key], out["warm"][peer.key]
            if cold.status != "ok":
                continue
            try:
                seconds = cold_then_warm(peer, cap, warm_slices)
                cold.times.append(seconds[0])
                warm.times.append(seconds[1])
            except Exception as exc:  # noqa: BLE001
                record_failure(cold, peer, exc, cap, rebuild=False)
                warm.status = cold.status
            finally:
                with contextlib.suppress(Exception):
                    peer.stop()
        print(f"  W5 round {rep + 1}/{reps}: " + ", ".join(
            f"{k} {s.times[-1]:.3f}s" for k, s in out["cold"].items() if s.status == "ok" and s.times),
            file=sys.stderr)
    return out
