"""Costs of the everyday conveniences: the progress bar, and a fresh runtime's first
distribution job (numba's JIT stall, before and after the numpy default).

    python bench/bench_everyday.py [--quick]

* **Progress bar on W1**: 1M trivial slices, results as a list, with ``progress=True`` (the bar
  drawn to a discarded stderr) against ``progress=False``, alternating, in one process.
* **First distribution job**: in a fresh process, a 2M-sample ``stats.set.random`` job on a new
  runtime whose workers are already up, then later ``stats.set.normal`` jobs; run with the
  numpy default and with ``DCPLOCAL_NUMBA=1`` (numba's kernel, as before), side by side.

Prints a table and writes bench/results/everyday.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

HERE = pathlib.Path(__file__).resolve().parent

FIRST_JOB = """
import json, statistics, time
from dcplocal import compute, stats, reset_default_runtime
firsts, later = [], []
for trial in range({trials}):
    reset_default_runtime()
    compute.for_(0, 1, abs).localExec(2)          # workers up, nothing compiled yet
    t = time.perf_counter()
    compute.for_(stats.set.random(2_000_000, 0, 1, seed=trial), abs).localExec(2)
    firsts.append(time.perf_counter() - t)
    for s in range(3):
        t = time.perf_counter()
        compute.for_(stats.set.normal(2_000_000, 0, 1, seed=10 + s), abs).localExec(2)
        later.append(time.perf_counter() - t)
print(json.dumps([statistics.median(firsts), statistics.median(later)]))
"""


def increment(x: int) -> int:
    return x + 1


def progress_cost(rounds: int) -> Dict[str, float]:
    from dcplocal import compute

    runs: Dict[bool, List[float]] = {True: [], False: []}
    saved, sys.stderr = sys.stderr, open(os.devnull, "w")
    try:
        compute.for_(0, 1, increment).localExec(2)
        for _ in range(rounds):
            for shown in (False, True):
                started = time.perf_counter()
                list(compute.for_(0, 999_999, increment).localExec(2, progress=shown))
                runs[shown].append(time.perf_counter() - started)
    finally:
        sys.stderr.close()
        sys.stderr = saved
    off, on = statistics.median(runs[False]), statistics.median(runs[True])
    return {"off_s": off, "on_s": on, "ratio": on / off}


def first_job(numba: bool, trials: int) -> Dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "DCPLOCAL_NUMBA"}
    if numba:
        env["DCPLOCAL_NUMBA"] = "1"
    done = subprocess.run([sys.executable, "-c", FIRST_JOB.format(trials=trials)], env=env,
                          capture_output=True, text=True, check=True)
    first, later = json.loads(done.stdout.strip().splitlines()[-1])
    return {"first_s": first, "later_s": later, "stall_s": first - later}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    results: Dict[str, Any] = {"progress_w1": progress_cost(rounds),
                               "first_job_numpy": first_job(False, 2 if args.quick else 3),
                               "first_job_numba": first_job(True, 2 if args.quick else 3)}
    bar = results["progress_w1"]
    print(f"{'measure':<44}{'value':>26}")
    print(f"{'W1 1M, progress=False':<44}{bar['off_s']:>25.3f}s")
    print(f"{'W1 1M, progress=True':<44}{bar['on_s']:>25.3f}s")
    print(f"{'  ratio on/off':<44}{bar['ratio']:>25.3f}x")
    for key, label in (("first_job_numpy", "numpy (default)"), ("first_job_numba", "numba (before)")):
        row = results[key]
        print(f"{'first 2M distribution job, ' + label:<44}{row['first_s']:>25.3f}s")
        print(f"{'  later ones':<44}{row['later_s']:>25.3f}s")
        print(f"{'  first-job stall':<44}{row['stall_s'] * 1e3:>24.0f}ms")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "everyday.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
