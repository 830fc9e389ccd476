"""The ``dcplocal`` command (also ``python -m dcplocal``): one subcommand per job to do.

    dcplocal info                  what this host allows: CPUs and why, workers, paths, fast paths
    dcplocal run SCRIPT [ARGS...]  run a Python script as __main__, with a progress bar on its jobs
    dcplocal bench [--quick]       a short side-by-side run against multiprocessing.Pool here

Each subcommand is a function ``_cmd_<name>(args) -> exit code`` with its own subparser in
`_parser`, so a service (``scheduler``, ``worker``) is one more subparser, not a rework.

Must not know: the broker, sockets, how jobs run; it uses the public API only.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import dcplocal


def _cmd_info(args: argparse.Namespace) -> int:
    found = dcplocal.info()
    if args.json:
        found = dict(found, limits=[{"cpus": limit.cpus, "why": limit.why}
                                    for limit in found["limits"]])
        print(json.dumps({"version": dcplocal.__version__, "python": sys.version.split()[0],
                          **found}, indent=2, default=str))
        return 0
    print(f"dcplocal {dcplocal.__version__} on Python {sys.version.split()[0]} ({sys.platform})")
    print(found)
    memory = _memory_bytes()
    if memory:
        print(f"memory:           {memory / 2 ** 30:.1f} GiB")
    return 0


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.script):
        print(f"dcplocal run: no such script: {args.script}", file=sys.stderr)
        return 2
    # the script's own jobs get a bar unless the user chose otherwise
    os.environ.setdefault("DCPLOCAL_PROGRESS", "1" if sys.stderr.isatty() else "auto")
    script = os.path.abspath(args.script)  # as `python script.py` sets __file__ (3.9+)
    sys.argv = [args.script, *args.args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _increment(x: int) -> int:
    return x + 1


def _spin(seconds: float) -> float:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _cmd_bench(args: argparse.Namespace) -> int:
    """Median of a few runs of two workloads, dcplocal and Pool.map side by side, 2 workers."""
    import multiprocessing
    import statistics

    from .compute import for_

    workers = 2
    trivial = 100_000 if args.quick else 1_000_000
    slices, seconds = 16, 0.05
    rounds = 3 if args.quick else 5
    rows: List[Dict[str, Any]] = []
    with multiprocessing.Pool(workers) as pool:
        pool.map(_increment, range(workers))            # warm both sides before timing
        for_(0, workers - 1, _increment).localExec(workers)
        runs: Dict[str, List[float]] = {"dcplocal W1": [], "Pool W1": [], "dcplocal W2": [],
                                        "Pool W2": []}
        for _ in range(rounds):
            runs["dcplocal W1"].append(_timed(lambda: list(
                for_(0, trivial - 1, _increment).localExec(workers, progress=False))))
            runs["Pool W1"].append(_timed(lambda: pool.map(_increment, range(trivial))))
            runs["dcplocal W2"].append(_timed(lambda: for_(
                [seconds] * slices, _spin).localExec(workers, progress=False)))
            runs["Pool W2"].append(_timed(lambda: pool.map(_spin, [seconds] * slices, chunksize=1)))
    ideal = slices * seconds / workers
    for workload, label in (("W1", f"{trivial:,} trivial slices, results as a list"),
                            ("W2", f"{slices} x {seconds * 1e3:.0f} ms CPU, % of ideal")):
        ours, theirs = (statistics.median(runs[f"{who} {workload}"]) for who in ("dcplocal", "Pool"))
        rows.append({"workload": workload, "what": label, "dcplocal_s": ours, "pool_s": theirs,
                     "ratio": ours / theirs})
    print(f"{'workload':<9}{'what':<42}{'dcplocal':>10}{'Pool.map':>10}{'ratio':>8}")
    for row in rows:
        if row["workload"] == "W2":
            cells = f"{100 * ideal / row['dcplocal_s']:>9.1f}%{100 * ideal / row['pool_s']:>9.1f}%"
        else:
            cells = f"{row['dcplocal_s']:>9.3f}s{row['pool_s']:>9.3f}s"
        print(f"{row['workload']:<9}{row['what']:<42}{cells}{row['ratio']:>7.2f}x")
    print(f"(medians of {rounds} alternating runs, {workers} workers each; ratio = dcplocal time "
          f"/ Pool time, lower is better)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=2)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcplocal", description="The DCP Compute API on this "
                                     "machine: local worker processes for compute.for_ jobs.")
    parser.add_argument("--version", action="version", version=f"dcplocal {dcplocal.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = commands.add_parser("info", help="what this host allows and why (CPUs, workers, "
                               "paths, kernel fast paths)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=_cmd_info)

    run = commands.add_parser("run", help="run a Python script with a progress bar on its jobs")
    run.add_argument("script", help="the script, run as __main__")
    run.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    run.set_defaults(run=_cmd_run)

    bench = commands.add_parser("bench", help="a short comparison with multiprocessing.Pool here")
    bench.add_argument("--quick", action="store_true", help="smaller workloads, 3 rounds")
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    bench.set_defaults(run=_cmd_bench)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``dcplocal`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except dcplocal.DCPError as exc:
        print(f"dcplocal {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
