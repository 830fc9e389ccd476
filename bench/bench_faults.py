"""Fault handling costs: how fast a dead or stopped worker is noticed, and what kills cost a job.

    python bench/bench_faults.py [--quick]

* **Detection latency**: a worker running a slice is SIGKILLed; the latency is the time from the
  ``kill`` call to the broker loop's handling of the worker's exit (its pidfd turned readable),
  which re-queues its slices before it starts a replacement process (fork+exec, ~5 ms more). The
  handler is wrapped to timestamp its entry; nothing else changes.
* **Stop latency**: a worker running a slice is SIGSTOPped; the latency is the time from the
  ``kill`` call to the scheduler's ``worker_lost`` (its tasks go back, it is SIGKILLed). The
  broker reads busy workers' process states every health.STATE_CHECK_SECONDS (0.1 s).
* **Chaos**: 2,000 slices of 2 ms on 2 workers, with a random worker SIGKILLed every 0.5 s (the
  slow test ``test_chaos_random_worker_kills``), against the same job with no kills, alternating.
* **Chaos, 2M slices**: 2,000,000 slices of ~3 µs with a random worker (starting ones included)
  SIGKILLed every 0.2 s (issue 13: this failed 3 runs out of 3 before deaths before Ready
  stopped breaking the runtime), against the same job with no kills, alternating.
Results are checked exactly on every run.

Prints a table and writes bench/results/faults.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import signal
import statistics
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import dcplocal
from dcplocal import compute, scheduling, supervisor

HERE = pathlib.Path(__file__).resolve().parent
exits: Dict[int, float] = {}  # pid -> monotonic time its exit had been handled
lost: Dict[bytes, float] = {}  # worker identity -> monotonic time it was taken for lost


def _record_exits() -> None:
    reap = supervisor.Supervisor._reap

    def timed(self: Any, identity: bytes) -> None:
        child = self.children.get(identity)
        if child is not None:
            exits[child.popen.pid] = time.monotonic()
        reap(self, identity)
    supervisor.Supervisor._reap = timed


def _record_losses() -> None:
    worker_lost = scheduling.Scheduler.worker_lost

    def timed(self: Any, worker: Any, reason: str, now: float) -> Any:
        lost.setdefault(worker, time.monotonic())
        return worker_lost(self, worker, reason, now)
    scheduling.Scheduler.worker_lost = timed  # type: ignore[method-assign]


def chaos_square(x: int) -> int:
    total = 0
    for k in range(32):
        total += k * x
    return total % 1_000_003


def run_under_kills(job: Any, kill_every: Optional[float], seed: int) -> Tuple[Any, float, int]:
    """Run ``job`` on 2 workers while a random worker is SIGKILLed every ``kill_every`` seconds
    (none when None): its results, the seconds it took, and how many kills landed."""
    rng = random.Random(seed)
    runtime = dcplocal.default_runtime()
    runtime.ensure_workers(2)
    stop = threading.Event()
    kills = []

    def chaos() -> None:
        while not stop.wait(kill_every):
            pids = runtime.worker_pids()
            if pids:
                try:
                    victim = rng.choice(pids)
                    os.kill(victim, signal.SIGKILL)
                    kills.append(victim)
                except ProcessLookupError:
                    pass
    killer = threading.Thread(target=chaos) if kill_every else None
    started = time.perf_counter()
    if killer:
        killer.start()
    try:
        results = job.localExec(2)
    finally:
        stop.set()
        if killer:
            killer.join()
    return results, time.perf_counter() - started, len(kills)


def chaos_2m_run(kill_every: Optional[float], seed: int) -> Tuple[float, int]:
    """Seconds for the 2M-slice job, and how many kills landed."""
    results, seconds, kills = run_under_kills(compute.for_(0, 1_999_999, chaos_square),
                                              kill_every, seed)
    x = np.arange(2_000_000, dtype=np.int64)
    assert np.array_equal(np.asarray(results), (496 * x) % 1_000_003), "chaos lost a result"
    return seconds, kills


def sleepy(x: int) -> int:
    time.sleep(0.002)
    return x * x + 1


def _signal_latency(trials: int, signum: int, handled: Callable[[int, Dict[int, bytes]], float]
                    ) -> List[float]:
    """Seconds from sending ``signum`` to a worker running a slice to the runtime's handling
    of it (``handled(pid, identities)`` gives when), for ``trials`` jobs that must still end."""
    runtime = dcplocal.default_runtime()
    latencies = []
    for _ in range(trials):
        job = compute.for_(0, 39, lambda x: (time.sleep(0.05), x)[1])
        done = threading.Event()
        thread = threading.Thread(target=lambda: (job.localExec(2), done.set()))
        thread.start()
        time.sleep(0.1)  # both workers are inside a slice
        identities = runtime.query(lambda b: {b.supervisor.pid(i): i for i in b.supervisor.children})
        victim = random.choice(runtime.worker_pids())
        sent = time.monotonic()
        os.kill(victim, signum)
        thread.join(timeout=30)
        assert done.is_set(), f"the job did not finish after a worker got signal {signum}"
        latencies.append(handled(victim, identities) - sent)
    return latencies


def detection_latency(trials: int) -> List[float]:
    """SIGKILL: until the broker handled the worker's exit."""
    return _signal_latency(trials, signal.SIGKILL, lambda pid, _: exits[pid])


def stop_latency(trials: int) -> List[float]:
    """SIGSTOP: until the scheduler took the stopped worker for lost."""
    return _signal_latency(trials, signal.SIGSTOP, lambda pid, identities: lost[identities[pid]])


def chaos_run(kill_every: Optional[float], seed: int) -> float:
    results, seconds, _ = run_under_kills(compute.for_(0, 1999, sleepy), kill_every, seed)
    assert list(results) == [sleepy(x) for x in range(2000)], "chaos lost or corrupted a result"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and repetitions")
    opts = parser.parse_args()
    _record_exits()
    _record_losses()
    random.seed(7)
    compute.for_(0, 3, sleepy).localExec(2)  # warm runtime
    trials, reps = (10, 2) if opts.quick else (30, 3)
    latencies = detection_latency(trials)
    stops = stop_latency(trials)
    clean: List[float] = []
    chaotic: List[float] = []
    clean_2m: List[float] = []
    chaotic_2m: List[Tuple[float, int]] = []
    for rep in range(reps):  # alternate, so drift in the machine hits both
        clean.append(chaos_run(None, rep))
        chaotic.append(chaos_run(0.5, rep))
        clean_2m.append(chaos_2m_run(None, rep)[0])
        chaotic_2m.append(chaos_2m_run(0.2, rep))
    chaotic_2m_s = statistics.median(s for s, _ in chaotic_2m)
    report = {
        "detection_ms": {"median": statistics.median(latencies) * 1e3, "max": max(latencies) * 1e3,
                         "trials": trials},
        "stop_detection_ms": {"median": statistics.median(stops) * 1e3, "max": max(stops) * 1e3,
                              "trials": trials},
        "chaos_s": {"fault_free": statistics.median(clean), "kill_every_0.5s": statistics.median(chaotic),
                    "ratio": statistics.median(chaotic) / statistics.median(clean), "runs": reps},
        "chaos_2m_s": {"fault_free": statistics.median(clean_2m), "kill_every_0.2s": chaotic_2m_s,
                       "ratio": chaotic_2m_s / statistics.median(clean_2m), "runs": reps,
                       "kills": [k for _, k in chaotic_2m]},
    }
    print(f"dead-worker detection (SIGKILL -> broker handles the exit), {trials} trials:")
    print(f"  median {report['detection_ms']['median']:.1f} ms   max {report['detection_ms']['max']:.1f} ms")
    print(f"stopped-worker detection (SIGSTOP -> its tasks taken back), {trials} trials:")
    print(f"  median {report['stop_detection_ms']['median']:.1f} ms   "
          f"max {report['stop_detection_ms']['max']:.1f} ms")
    print(f"2,000 x 2 ms slices on 2 workers, median of {reps}:")
    print(f"  fault-free {report['chaos_s']['fault_free']:.2f} s   a worker SIGKILLed every 0.5 s "
          f"{report['chaos_s']['kill_every_0.5s']:.2f} s   ratio {report['chaos_s']['ratio']:.2f}x "
          f"(target <= 3x)")
    c2 = report["chaos_2m_s"]
    print(f"2,000,000 x ~3 us slices on 2 workers, median of {reps}, results exact every run:")
    print(f"  fault-free {c2['fault_free']:.2f} s   a worker SIGKILLed every 0.2 s "
          f"{c2['kill_every_0.2s']:.2f} s ({c2['kills']} kills)   ratio {c2['ratio']:.2f}x")
    out = HERE / "results" / "faults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
