"""dcplocal against its peers: the same five workloads on every installed implementation.

    python bench/bench_peers.py                     # everything, 5 repetitions (~10 min, 2 cores)
    python bench/bench_peers.py --quick             # 3 repetitions
    python bench/bench_peers.py --only W1,W5 --peers dcplocal,pool,serial

Implementations (2 workers each): serial loop, multiprocessing.Pool.map, ProcessPoolExecutor.map,
joblib/loky, Ray, Dask distributed, dcplocal. Warm pools are built once, before W1-W4, and
reused; W5 measures a cold start. Prints a table of medians (seconds, ratios to Pool.map and
to serial, whether dcplocal meets its target) and writes ``bench/results/peers.json``, plus the
per-slice overhead sweep to ``bench/results/overhead.json`` (and ``overhead.png`` with
matplotlib). See bench/README.md for what each workload measures.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"


def _importable_everywhere() -> None:
    """Make ``peers.work`` (and a checkout's dcplocal) importable here and in every worker.

    Workers started by multiprocessing spawn, loky, Dask's nanny, Ray's raylet and dcplocal's
    supervisor all inherit the environment, so PYTHONPATH reaches them all.
    """
    for path in (str(ROOT), str(BENCH)):
        if path not in sys.path:
            sys.path.insert(0, path)
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(BENCH), str(ROOT), *inherited]))


_importable_everywhere()

from peers.base import Peer  # noqa: E402 - needs the path set up above
from peers.registry import PEERS  # noqa: E402
from peers import report, runner, sections, work  # noqa: E402
from peers.report import Section  # noqa: E402
from peers.runner import Series  # noqa: E402

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "overhead")
#: the overhead sweep compares dcplocal with the cheapest stdlib pool and the serial loop
SWEEP_PEERS = ("serial", "pool", "dcplocal")
SWEEP_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 5")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--peers", default=",".join(p.key for p in PEERS),
                        help="comma-separated subset of " + ",".join(p.key for p in PEERS))
    parser.add_argument("--cap", type=float, default=60.0, help="per-run time cap, seconds")
    args = parser.parse_args(argv)
    args.only = _subset(parser, "--only", args.only, WORKLOADS)
    args.peers = _subset(parser, "--peers", args.peers, [p.key for p in PEERS])
    args.reps = 3 if args.quick else 5
    return args


def _subset(parser: argparse.ArgumentParser, flag: str, text: str, known: Sequence[str]) -> List[str]:
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in known]
    if unknown:
        parser.error(f"{flag}: unknown {', '.join(unknown)} (choose from {', '.join(known)})")
    return wanted


def available_peers(keys: Sequence[str], classes: Sequence[Any] = PEERS) -> Dict[str, Any]:
    """Instances of the selected peers (of ``classes``) that can run here, and why the others
    cannot."""
    chosen, skipped = [], {}
    for cls in classes:
        if cls.key not in keys:
            continue
        peer = cls()
        reason = peer.missing()
        if reason:
            skipped[cls.key] = reason
            print(f"skipping {cls.key}: {reason}", file=sys.stderr)
        else:
            chosen.append(peer)
    return {"peers": chosen, "skipped": skipped}


def background_load(seconds: float = 2.0) -> Optional[float]:
    """Machine-wide CPU busy fraction over ``seconds`` (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil.cpu_percent(interval=seconds) / 100.0


def machine(peers: Sequence[Peer], skipped: Dict[str, str]) -> Dict[str, Any]:
    versions: Dict[str, str] = {}
    for peer in peers:
        versions.update(peer.versions())
    versions["numpy"] = numpy.__version__
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "versions": versions, "skipped": skipped}


def warm_workloads(args: argparse.Namespace, peers: Sequence[Peer]) -> List[Section]:
    """W1-W4 on the warm pools, each as alternating rounds; one table section per workload."""
    def measure(load: work.Workload, extra: Any = None) -> Dict[str, Series]:
        return runner.run_workload(load, peers, args.reps, args.cap, extra)

    blocks: List[Section] = []
    if "W1" in args.only:
        load = work.w1()
        blocks.append(sections.w1_section(measure(load), len(load.inputs)))
    if "W2" in args.only:
        loops = work.calibrate_burn()
        print(f"W2: {loops:,} loops take ~60 ms here", file=sys.stderr)
        load = work.w2(loops)
        blocks.append(sections.w2_section(measure(load), len(load.inputs)))
    if "W3" in args.only:
        load = work.w3()
        blocks.append(sections.w3_section(measure(load), len(load.inputs)))
    if "W4" in args.only:
        load = work.w4()
        baselines: Dict[str, Series] = {}
        series = measure(load, sections.memcpy_baseline(baselines, len(load.inputs)))
        blocks.append(sections.w4_section({**series, **baselines}, len(load.inputs)))
    return blocks


def overhead_sweep(args: argparse.Namespace, peers: Sequence[Peer]) -> Dict[int, Dict[str, Series]]:
    chosen = [p for p in peers if p.key in SWEEP_PEERS]
    return {n: runner.run_workload(work.w1(n), chosen, args.reps, args.cap) for n in SWEEP_SIZES}


def start_all(peers: Sequence[Peer]) -> List[Peer]:
    """Start every warm pool (in PEERS order); a peer that fails to start sits the run out."""
    started = []
    for peer in peers:
        began = time.perf_counter()
        try:
            peer.start()
        except Exception as exc:  # noqa: BLE001 - reported, the others go on
            print(f"{peer.key} failed to start: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        print(f"started {peer.key} in {time.perf_counter() - began:.2f} s", file=sys.stderr)
        started.append(peer)
    return started


def stop_all(peers: Sequence[Peer]) -> None:
    for peer in peers:
        try:
            peer.stop()
        except Exception as exc:  # noqa: BLE001
            print(f"{peer.key} failed to stop cleanly: {exc}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    found = available_peers(args.peers)
    peers: List[Peer] = found["peers"]
    meta = machine(peers, found["skipped"])
    meta.update(reps=args.reps, cap_s=args.cap, workers=2, only=args.only)
    blocks: List[Section] = []
    sweep: Dict[int, Dict[str, Series]] = {}
    began = time.perf_counter()
    # Other processes on the machine (a test suite, a build) would skew every number: say so.
    meta["background_load_before"] = background_load()
    if set(args.only) & {"W1", "W2", "W3", "W4", "overhead"}:
        warm = start_all(peers)
        blocks += warm_workloads(args, warm)
        meta["background_load_idle_pools"] = background_load()  # measured warm, all pools idle
        if "overhead" in args.only:
            # Only the sweep's peers stay up: idle Ray/Dask clusters poll and would add noise.
            stop_all([p for p in warm if p.key not in SWEEP_PEERS])
            sweep = overhead_sweep(args, warm)
        stop_all(warm)
    if "W5" in args.only:
        # The serial loop has no pool to start: a cold start means nothing for it.
        pools = [p for p in peers if p.key != "serial"]
        blocks += sections.w5_sections(runner.run_cold_starts(pools, args.reps, args.cap))
    meta["wall_s"] = time.perf_counter() - began
    print_and_save(meta, blocks, sweep, {p.key: p.label for p in peers})
    return 0


def print_and_save(meta: Dict[str, Any], blocks: Sequence[Section],
                   sweep: Dict[int, Dict[str, Series]], labels: Dict[str, str]) -> None:
    load = meta.get("background_load_idle_pools")
    print(f"\ndcplocal vs peers - Python {meta['python']}, {meta['cpus']} CPUs, 2 workers each, "
          f"median of {meta['reps']} alternating repetitions, cap {meta['cap_s']:g} s per run")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    for key, reason in meta["skipped"].items():
        print(f"skipped {key}: {reason}")
    before = meta.get("background_load_before")
    if before is not None:
        print(f"machine CPU busy before the benchmark started: {before * 100:.1f}%"
              + ("  <- other processes are running: expect noisy results" if before > 0.05 else ""))
    if load is not None:
        print(f"machine CPU busy with all warm pools idle: {load * 100:.1f}%")
    print("times are medians; '~' = extrapolated from a reduced slice count (see notes); "
          "ratios compare seconds per slice\n")
    print(report.table(blocks))
    report.write_json(RESULTS / "peers.json", {"meta": meta, "workloads": report.sections_json(blocks)})
    print(f"wrote {RESULTS / 'peers.json'}")
    if sweep:
        print("\n" + report.overhead_chart(sweep))
        report.write_json(RESULTS / "overhead.json", report.overhead_json(sweep))
        print(f"wrote {RESULTS / 'overhead.json'}")
        if report.overhead_png(RESULTS / "overhead.png", sweep, labels):
            print(f"wrote {RESULTS / 'overhead.png'}")
    print(f"total wall time {meta['wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
