"""Input-set expansion and result collation throughput, and the client memory of 10M-slice jobs.

    python bench/bench_kernels.py [--quick]

Prints a table of slices per second (best of N runs, one core) and writes
bench/results/kernels.json. "expand+collate" is the client/worker hot path for an integer range:
slice indices to values, then a batch of numeric results scattered into the typed result array.
The naive baseline does the same with a Python loop and a list.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time
from typing import Callable, Dict, List

import numpy as np

from dcplocal import stats
from dcplocal.kernels import collate, rng
from dcplocal.kernels import ranges as range_kernels
from dcplocal.ranges import MultiRangeObject, RangeObject

HERE = pathlib.Path(__file__).resolve().parent
N = 1_000_000


def best_rate(fn: Callable[[], None], slices: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return slices / best


def cases() -> Dict[str, Callable[[], None]]:
    int_spec = RangeObject(0, 10 * N - 1, 10).spec
    dec_spec = RangeObject(0, (N - 1) / 10, 0.1).spec
    multi = MultiRangeObject([RangeObject(0, 999), RangeObject(0, 999)]).spec
    dst, done = np.empty(N, dtype=np.int64), np.zeros(N, dtype=bool)
    fdst = np.empty(N, dtype=np.float64)

    def naive() -> None:
        out: List[int] = []
        for i in range(N):
            out.append(0 + i * 10)

    def int_array_collate() -> None:  # expansion into int64 + scatter into the typed results
        done[:] = False
        collate.scatter(dst, done, 0, np.arange(0, 10 * N, 10, dtype=np.int64))

    def int_python_values() -> None:  # what a worker hands to work functions: Python ints
        list(int_spec.slice_data(0, N))

    def decimal_collate() -> None:  # exact: (a + k*b)/d, one correctly rounded division each
        done[:] = False
        collate.scatter(fdst, done, 0, range_kernels.decimal_values(dec_spec.a, dec_spec.b, dec_spec.d, 0, N))

    def normal_numpy() -> None:
        rng.normal(7, 0, N, use_numba=False)

    def normal_numba() -> None:
        rng.normal(7, 0, N, use_numba=True)

    return {
        "naive Python loop (baseline)": naive,
        "int range: expand (int64) + collate": int_array_collate,
        "int range: expand to Python ints": int_python_values,
        "decimal range: exact expand + collate": decimal_collate,
        "multi-range 1000x1000: tuples": lambda: multi.slice_data(0, N),
        "normalRNG by slice index (numpy)": normal_numpy,
        "normalRNG by slice index (numba)": normal_numba,
        "poisson(4) by slice index": lambda: stats.set.poisson(N, 4, seed=1).spec.slice_data(0, N),
    }


def memory_jobs() -> List[dict]:
    reports = []
    for kind in ("range", "generator"):
        out = subprocess.run([sys.executable, str(HERE / "memjob.py"), kind], capture_output=True, text=True)
        reports.append(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0
                       else {"kind": kind, "error": out.stderr[-500:]})
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no 10M jobs")
    opts = parser.parse_args()
    repeats = 3 if opts.quick else 7
    rng.normal(7, 0, 100_000, use_numba=True)  # JIT outside the timed runs
    rows = {name: best_rate(fn, N, repeats) for name, fn in cases().items()}
    baseline = rows["naive Python loop (baseline)"]
    print(f"{'kernel (1M slices, one core)':44s} {'Mslices/s':>10s} {'vs naive':>9s}")
    for name, rate in rows.items():
        print(f"{name:44s} {rate / 1e6:10.1f} {rate / baseline:8.1f}x")
    target = rows["int range: expand (int64) + collate"]
    print(f"target: int expand+collate >= 50 Mslices/s -> {target / 1e6:.0f} ({'met' if target >= 50e6 else 'NOT met'})")
    memory = [] if opts.quick else memory_jobs()
    for report in memory:
        print(f"10M-slice {report['kind']} job: {report.get('seconds')} s, client +{report.get('added_mb')} MB "
              f"(target for the range job: <= 150 MB)")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "kernels.json").write_text(json.dumps(
        {"slices_per_second": rows, "memory_jobs": memory}, indent=2))
    print(f"wrote {out_dir / 'kernels.json'}")


if __name__ == "__main__":
    main()
