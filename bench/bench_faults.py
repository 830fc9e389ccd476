"""Fault handling costs: how fast a dead worker is noticed, and what random kills cost a job.

    python bench/bench_faults.py [--quick]

* **Detection latency**: a worker running a slice is SIGKILLed; the latency is the time from the
  ``kill`` call to the broker loop's handling of the worker's exit (its pidfd turned readable),
  which re-queues its slices before it starts a replacement process (fork+exec, ~5 ms more). The
  handler is wrapped to timestamp its entry; nothing else changes.
* **Chaos**: 2,000 slices of 2 ms on 2 workers, with a random worker SIGKILLed every 0.5 s (the
  slow test ``test_chaos_random_worker_kills``), against the same job with no kills, alternating.
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
from typing import Any, Dict, List, Optional

import dcplocal
from dcplocal import compute, supervisor

HERE = pathlib.Path(__file__).resolve().parent
exits: Dict[int, float] = {}  # pid -> monotonic time its exit had been handled


def _record_exits() -> None:
    reap = supervisor.Supervisor._reap

    def timed(self: Any, identity: bytes) -> None:
        child = self.children.get(identity)
        if child is not None:
            exits[child.popen.pid] = time.monotonic()
        reap(self, identity)
    supervisor.Supervisor._reap = timed


def sleepy(x: int) -> int:
    time.sleep(0.002)
    return x * x + 1


def detection_latency(trials: int) -> List[float]:
    runtime = dcplocal.default_runtime()
    latencies = []
    for _ in range(trials):
        job = compute.for_(0, 39, lambda x: (time.sleep(0.05), x)[1])
        done = threading.Event()
        thread = threading.Thread(target=lambda: (job.localExec(2), done.set()))
        thread.start()
        time.sleep(0.1)  # both workers are inside a slice
        victim = random.choice(runtime.worker_pids())
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=30)
        assert done.is_set(), "the job did not finish after a worker was killed"
        latencies.append(exits[victim] - killed)
    return latencies


def chaos_run(kill_every: Optional[float], seed: int) -> float:
    rng = random.Random(seed)
    runtime = dcplocal.default_runtime()
    runtime.ensure_workers(2)
    stop = threading.Event()

    def chaos() -> None:
        while not stop.wait(kill_every):
            pids = runtime.worker_pids()
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    killer = threading.Thread(target=chaos) if kill_every else None
    started = time.perf_counter()
    if killer:
        killer.start()
    try:
        results = compute.for_(0, 1999, sleepy).localExec(2)
    finally:
        stop.set()
        if killer:
            killer.join()
    seconds = time.perf_counter() - started
    assert list(results) == [sleepy(x) for x in range(2000)], "chaos lost or corrupted a result"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and repetitions")
    opts = parser.parse_args()
    _record_exits()
    random.seed(7)
    compute.for_(0, 3, sleepy).localExec(2)  # warm runtime
    trials, reps = (10, 2) if opts.quick else (30, 3)
    latencies = detection_latency(trials)
    clean: List[float] = []
    chaotic: List[float] = []
    for rep in range(reps):  # alternate, so drift in the machine hits both
        clean.append(chaos_run(None, rep))
        chaotic.append(chaos_run(0.5, rep))
    report = {
        "detection_ms": {"median": statistics.median(latencies) * 1e3, "max": max(latencies) * 1e3,
                         "trials": trials},
        "chaos_s": {"fault_free": statistics.median(clean), "kill_every_0.5s": statistics.median(chaotic),
                    "ratio": statistics.median(chaotic) / statistics.median(clean), "runs": reps},
    }
    print(f"dead-worker detection (SIGKILL -> broker handles the exit), {trials} trials:")
    print(f"  median {report['detection_ms']['median']:.1f} ms   max {report['detection_ms']['max']:.1f} ms")
    print(f"2,000 x 2 ms slices on 2 workers, median of {reps}:")
    print(f"  fault-free {report['chaos_s']['fault_free']:.2f} s   a worker SIGKILLed every 0.5 s "
          f"{report['chaos_s']['kill_every_0.5s']:.2f} s   ratio {report['chaos_s']['ratio']:.2f}x "
          f"(target <= 3x)")
    out = HERE / "results" / "faults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
