"""dcplocal.Executor.map against ProcessPoolExecutor.map and multiprocessing.Pool.map.

    python bench/bench_executor.py              # W1 and W2, 5 alternating repetitions
    python bench/bench_executor.py --quick      # 3 repetitions
    python bench/bench_executor.py --only W1

The same workloads as ``bench_peers.py`` (``peers/work.py``), on warm pools of 2 workers, timed
with its runner (alternating rounds, quiet start, results checked outside the clock):

* W1: 1,000,000 trivial slices (``x + 1``, a module-level function), results consumed as a list;
* W2: 64 slices of ~60 ms pure-Python CPU, as % of the ideal 2-worker speed-up over the serial
  loop.

Rows: the serial loop; ``Pool(2).map`` (default chunksize); ``ProcessPoolExecutor(2).map`` with
its default ``chunksize=1`` (W1 on 20,000 slices, extrapolated: the million takes minutes) and
with Pool's chunksize; ``dcplocal.Executor(2).map`` (chunksize ignored: batches adapt); and
``compute.for_(...).localExec(2)`` for reference. Prints a table and writes
``bench/results/executor.json``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import bench_peers  # noqa: F401 - puts bench/ and the checkout on every process's path
from peers import report, runner, work
from peers.base import WORKERS, Peer, pool_chunksize
from peers.dcplocal_peer import DcpLocal
from peers.report import Section
from peers.runner import Series
from peers.stdlib import Executor as PpeMap
from peers.stdlib import PoolMap, Serial

WORKLOADS = ("W1", "W2")


class PpeChunked(PpeMap):
    key = "ppe-chunked"
    label = "ProcessPoolExecutor.map (Pool's chunksize)"
    w1_slices = None  # type: ignore[assignment]  # PPE's row sets an int: this one runs all

    def run(self, fn: Callable[[Any], Any], inputs: work.Inputs) -> List[Any]:
        assert self.executor is not None
        return list(self.executor.map(fn, inputs, chunksize=pool_chunksize(len(inputs))))


class ExecutorMap(Peer):
    key = "executor"
    label = "dcplocal.Executor(2).map"
    requires = ("dcplocal", "zmq", "cloudpickle")

    def __init__(self) -> None:
        self.executor: Optional[Any] = None

    def start(self) -> None:
        import dcplocal

        self.executor = dcplocal.Executor(WORKERS)
        list(self.executor.map(work.inc, range(4)))  # the warm runtime: workers started

    def stop(self) -> None:
        import dcplocal

        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        dcplocal.reset_default_runtime()

    def run(self, fn: Callable[[Any], Any], inputs: work.Inputs) -> List[Any]:
        assert self.executor is not None
        return list(self.executor.map(fn, inputs))


class LocalExec(DcpLocal):
    label = "dcplocal compute.for_(...).localExec(2)"

    def stop(self) -> None:
        """The runtime is shared with the Executor row, which resets it."""


#: Process pools first: they fork before dcplocal's broker thread exists.
PEERS = (Serial, PoolMap, PpeMap, PpeChunked, ExecutorMap, LocalExec)


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 5")
    parser.add_argument("--only", default="W1,W2", help="comma-separated subset of W1,W2")
    parser.add_argument("--cap", type=float, default=60.0, help="per-run time cap, seconds")
    args = parser.parse_args(argv)
    args.only = [w for w in args.only.split(",") if w]
    if set(args.only) - set(WORKLOADS):
        parser.error(f"--only: choose from {','.join(WORKLOADS)}")
    args.reps = 3 if args.quick else 5
    return args


def faster_than(reference: Optional[Series]) -> Callable[[Series], str]:
    """How many times faster per slice than ``reference`` (PPE.map at its default chunksize)."""
    def metric(s: Series) -> str:
        slower = report.ratio(reference, s) if reference is not None else None
        return "-" if slower is None else f"{slower:,.1f}x"
    return metric


def w1(series: Dict[str, Series], slices: int) -> Section:
    return Section("W1", f"{slices:,} trivial slices (x + 1), results as a list", slices, series,
                   ("vs PPE.map", faster_than(series.get("ppe"))))


def w2(series: Dict[str, Series], slices: int) -> Section:
    serial = series.get("serial")

    def ideal(s: Series) -> str:
        speedup = report.ratio(serial, s) if serial is not None else None
        return "-" if speedup is None else f"{speedup / WORKERS * 100:.1f}%"

    return Section("W2", f"{slices} slices of ~60 ms pure-Python CPU", slices, series, ("% ideal", ideal))


def notes(section: Section) -> Section:
    for key in ("pool", "ppe-chunked"):
        if key in section.series:
            section.series[key].note = f"chunksize {pool_chunksize(section.slices):,}"
    if "executor" in section.series:
        section.series["executor"].note = "chunksize ignored: batches adapt"
    return section


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    found = bench_peers.available_peers([cls.key for cls in PEERS], PEERS)
    peers: List[Peer] = found["peers"]
    skipped: Dict[str, str] = found["skipped"]
    meta = bench_peers.machine(peers, skipped)
    meta.update(reps=args.reps, cap_s=args.cap, workers=WORKERS, only=args.only,
                background_load_before=bench_peers.background_load())
    started = bench_peers.start_all(peers)
    blocks: List[Section] = []
    try:
        if "W1" in args.only:
            load = work.w1()
            blocks.append(notes(w1(runner.run_workload(load, started, args.reps, args.cap),
                                   len(load.inputs))))
        if "W2" in args.only:
            loops = work.calibrate_burn()
            print(f"W2: {loops:,} loops take ~60 ms here", file=sys.stderr)
            load = work.w2(loops)
            blocks.append(notes(w2(runner.run_workload(load, started, args.reps, args.cap),
                                   len(load.inputs))))
    finally:
        bench_peers.stop_all(started)
    print(f"\ndcplocal.Executor.map vs the stdlib - Python {meta['python']}, {meta['cpus']} CPUs, "
          f"{WORKERS} workers each, median of {args.reps} alternating repetitions")
    load_before = meta.get("background_load_before")
    if load_before is not None:
        print(f"machine CPU busy before the benchmark started: {load_before * 100:.1f}%"
              + ("  <- other processes are running: expect noisy results" if load_before > 0.05 else ""))
    print("times are medians; '~' = extrapolated from a reduced slice count\n")
    print(report.table(blocks))
    path = bench_peers.RESULTS / "executor.json"
    report.write_json(path, {"meta": meta, "workloads": report.sections_json(blocks)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
