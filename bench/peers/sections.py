"""One table section per workload: its extra column, dcplocal's target, and W4's memcpy baseline.

Each ``wN_section`` takes the workload's measurements (``{peer key: Series}``) and returns a
`Section` for `report.table`. Targets are the issue's goals for dcplocal; they are evaluated and
printed, never asserted.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import numpy as np

from . import report, runner, work
from .base import pool_chunksize
from .report import Section, Verdict
from .runner import Series


def pool_note(section: Section) -> None:
    """Say which chunksize Pool.map and Ray's Pool picked for this workload's slice count."""
    for key in ("pool", "ray"):
        if key in section.series:
            section.series[key].note = f"chunksize {pool_chunksize(section.slices):,}"


def w1_section(series: Dict[str, Series], slices: int) -> Section:
    def target(s: Dict[str, Series]) -> Verdict:
        mine = s["dcplocal"]
        to_pool, to_serial = report.ratio(mine, s.get("pool")), report.ratio(mine, s.get("serial"))
        detail = f"({_r(to_pool)}xPool, {_r(to_serial)}xserial)"
        if to_pool is None or to_serial is None:
            return None, detail
        return to_pool <= 0.5 and to_serial <= 2, detail

    section = Section("W1", f"{slices:,} trivial slices (x + 1)", slices, series,
                      ("us/slice", lambda s: f"{s.per_slice * 1e6:.3f}"),
                      ("<= 0.5x Pool.map and <= 2x serial", target))
    pool_note(section)
    return section


def w2_section(series: Dict[str, Series], slices: int) -> Section:
    serial = series.get("serial")

    def ideal(s: Series) -> Optional[float]:
        """Fraction of the ideal 2-worker speedup: serial time / (2 x this time)."""
        if serial is None or not serial.ok:
            return None
        return serial.per_slice / (2 * s.per_slice)

    def target(s: Dict[str, Series]) -> Verdict:
        value = ideal(s["dcplocal"])
        return (None if value is None else value >= 0.95), f"({_pct(value)})"

    section = Section("W2", f"{slices} slices of ~60 ms pure-Python CPU", slices, series,
                      ("% ideal", lambda s: _pct(ideal(s))), (">= 95% of ideal speedup", target))
    pool_note(section)
    return section


def w3_section(series: Dict[str, Series], slices: int) -> Section:
    section = Section("W3", f"{slices} slices, each a distinct 1 MiB float64 argument", slices, series,
                      ("ms/slice", lambda s: f"{s.per_slice * 1e3:.3f}"),
                      ("ahead of every peer", report.ahead_of_every_peer))
    pool_note(section)
    return section


def w4_section(series: Dict[str, Series], slices: int) -> Section:
    fresh = series.get("memcpy-fresh")

    def to_memcpy(s: Series) -> str:
        ratio = report.ratio(s, fresh)
        return "-" if ratio is None else f"{ratio:.2f}"

    def target(s: Dict[str, Series]) -> Verdict:
        ahead, detail = report.ahead_of_every_peer(s)
        ratio = report.ratio(s["dcplocal"], fresh)
        met = None if ahead is None or ratio is None else ahead and ratio <= 2
        return met, f"{detail} ({_r(ratio)}x memcpy)"

    section = Section("W4", f"{slices} slices, each returning an 8 MB float64 array", slices, series,
                      ("x memcpy", to_memcpy), ("ahead of every peer and <= 2x memcpy", target))
    pool_note(section)
    return section


def w5_sections(out: Dict[str, Dict[str, Series]]) -> List[Section]:
    def cold_target(s: Dict[str, Series]) -> Verdict:
        return s["dcplocal"].median <= 0.5, f"({s['dcplocal'].median:.3f} s)"

    def warm_target(s: Dict[str, Series]) -> Verdict:
        return s["dcplocal"].median <= 0.030, f"({s['dcplocal'].median * 1e3:.1f} ms)"

    ms = ("ms", lambda s: f"{s.median * 1e3:.1f}")
    return [Section("W5 cold", "no pool -> result of a 1-slice job (pool start included)", 1,
                    out["cold"], ms, ("<= 0.5 s", cold_target)),
            Section("W5 warm", "a 10-slice job right after the cold one", 10, out["warm"], ms,
                    ("<= 30 ms", warm_target))]


def _r(value: Optional[float]) -> str:
    return "?" if value is None else f"{value:.2f}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def memcpy_baseline(series: Dict[str, Series], slices: int) -> Callable[[], None]:
    """W4's reference: copy the same 800 MB (slices x 8 MB) into fresh and into reused buffers.

    Fresh buffers pay the page faults that any receiver of new results pays; reused buffers
    are pure memory bandwidth. The returned callable times one of each per round.
    """
    sources = [work.big_result(i) for i in range(slices)]
    targets = [np.empty_like(a) for a in sources]
    for target in targets:
        target.fill(0)  # touch every page once, so "warm" really is warm
    series["memcpy-fresh"] = Series("memcpy-fresh", f"memcpy {slices} x 8 MB into fresh buffers", slices)
    series["memcpy-warm"] = Series("memcpy-warm", f"memcpy {slices} x 8 MB into reused buffers", slices)

    def one_round() -> None:
        runner.settle()
        started = time.perf_counter()
        copies = [a.copy() for a in sources]
        series["memcpy-fresh"].times.append(time.perf_counter() - started)
        del copies
        started = time.perf_counter()
        for target, source in zip(targets, sources):
            np.copyto(target, source)
        series["memcpy-warm"].times.append(time.perf_counter() - started)

    return one_round
