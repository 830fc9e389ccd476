"""Turning measurements into the printed table, the JSON files and the overhead chart.

Every comparison is made per slice (median seconds / slices measured), so a peer measured on a
reduced slice count (PPE and Dask on W1) is compared fairly, and its full-size time is shown as
an extrapolation marked with "~".
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .runner import Series

#: Series keys that are baselines, not competitors (they never count as "a peer" in targets).
BASELINES = ("serial", "memcpy-fresh", "memcpy-warm")
DCPLOCAL = "dcplocal"


#: a target's judgement: (met — None when a reference did not run —, the number it was judged on)
Verdict = Tuple[Optional[bool], str]


@dataclass
class Section:
    """One workload's block of the table."""

    key: str
    title: str
    slices: int                       # the workload's full slice count
    series: Dict[str, Series]
    metric: Tuple[str, Callable[[Series], str]]
    target: Optional[Tuple[str, Callable[[Dict[str, Series]], Verdict]]] = None  # (goal, judge)


def ratio(series: Series, reference: Optional[Series]) -> Optional[float]:
    """Per-slice time of ``series`` over ``reference``'s (None when either did not run)."""
    if reference is None or not series.ok or not reference.ok:
        return None
    return series.per_slice / reference.per_slice


def _fmt_ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fmt_time(series: Series, slices: int) -> str:
    if not series.ok:
        return series.status if series.status.startswith(">") else "-"
    full = series.per_slice * slices
    return f"~{full:.3f}" if series.slices != slices else f"{full:.3f}"


def _status_note(series: Series, slices: int) -> str:
    notes = [series.note] if series.note else []
    if series.ok and series.slices != slices:
        notes.append(f"measured {series.slices:,} slices in {series.median:.3f} s, extrapolated")
    if series.status.startswith(">"):
        notes.append(f"interrupted after {len(series.times)} completed runs; the rest skipped")
    elif not series.ok:
        notes.append(series.status)
    return "; ".join(notes)


def section_lines(section: Section) -> List[str]:
    pool, serial = section.series.get("pool"), section.series.get("serial")
    metric_name, metric = section.metric
    target_name = section.target[0] if section.target else ""
    head = (f"  {'implementation':<48} {'median s':>10} {metric_name:>11} {'xPool.map':>9} "
            f"{'xserial':>8}  {'target met?':<12} notes")
    lines = [f"{section.key}  {section.title}" + (f"   [target: {target_name}]" if target_name else ""),
             head, "  " + "-" * (len(head) + 10)]
    for key, series in section.series.items():
        verdict = ""
        if key == DCPLOCAL and section.target and series.ok:
            met, detail = section.target[1](section.series)
            verdict = {True: "yes ", False: "NO ", None: "n/a "}[met] + detail
        lines.append(f"  {series.label[:48]:<48} {_fmt_time(series, section.slices):>10} "
                     f"{(metric(series) if series.ok else '-'):>11} {_fmt_ratio(ratio(series, pool)):>9} "
                     f"{_fmt_ratio(ratio(series, serial)):>8}  {verdict:<12} "
                     f"{_status_note(series, section.slices)}")
    return lines


def competitors(series: Dict[str, Series]) -> List[Series]:
    """The parallel peers other than dcplocal (baselines excluded)."""
    return [s for k, s in series.items() if k not in BASELINES and k != DCPLOCAL]


def ahead_of_every_peer(series: Dict[str, Series]) -> Verdict:
    """dcplocal's per-slice time is below every other parallel peer's (a failed peer is behind)."""
    mine = series[DCPLOCAL].per_slice
    rivals = [(s.peer, s.per_slice) for s in competitors(series) if s.ok]
    if not rivals:
        return None, "(no peer ran)"
    best_key, best = min(rivals, key=lambda item: item[1])
    return mine < best, f"({mine / best:.2f}x {best_key})"


def table(sections: Sequence[Section]) -> str:
    lines: List[str] = []
    for section in sections:
        lines += section_lines(section) + [""]
    return "\n".join(lines)


def write_json(path: Path, payload: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def sections_json(sections: Sequence[Section]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for section in sections:
        block: Dict[str, Any] = {"title": section.title, "slices": section.slices,
                                 "series": {k: s.as_json() for k, s in section.series.items()}}
        pool, serial = section.series.get("pool"), section.series.get("serial")
        block["ratios"] = {k: {"to_pool": ratio(s, pool), "to_serial": ratio(s, serial),
                               section.metric[0]: section.metric[1](s) if s.ok else None}
                           for k, s in section.series.items()}
        dcp = section.series.get(DCPLOCAL)
        if section.target and dcp is not None and dcp.ok:
            met, detail = section.target[1](section.series)
            block["target"] = {"goal": section.target[0], "met": met, "detail": detail}
        out[section.key] = block
    return out


# ---- the per-slice overhead chart ---------------------------------------------------------
#: bars span this range of µs per slice on a log scale
CHART_LOW_US, CHART_HIGH_US, CHART_WIDTH = 0.01, 10_000.0, 50


def _bar(us: float) -> str:
    span = math.log10(CHART_HIGH_US / CHART_LOW_US)
    filled = (math.log10(max(us, CHART_LOW_US) / CHART_LOW_US) / span) * CHART_WIDTH
    return "#" * max(1, min(CHART_WIDTH, round(filled)))


def overhead_chart(sweep: Dict[int, Dict[str, Series]]) -> str:
    lines = [f"Per-slice cost of trivial work (x + 1), µs per slice, log scale "
             f"{CHART_LOW_US:g}..{CHART_HIGH_US:g} µs",
             f"  {'slices':>9}  {'':<10} {'µs/slice':>10}"]
    for size, series in sweep.items():
        for key, one in series.items():
            label = f"{size:>9,}" if key == next(iter(series)) else " " * 9
            if one.ok:
                us = one.per_slice * 1e6
                lines.append(f"  {label}  {key:<10} {us:>10.3f}  |{_bar(us)}")
            else:
                lines.append(f"  {label}  {key:<10} {'-':>10}  {one.status}")
    return "\n".join(lines)


def overhead_json(sweep: Dict[int, Dict[str, Series]]) -> Dict[str, Any]:
    keys = list(next(iter(sweep.values())).keys()) if sweep else []
    return {"sizes": list(sweep),
            "per_slice_us": {k: [sweep[n][k].per_slice * 1e6 if sweep[n][k].ok else None
                                 for n in sweep] for k in keys},
            "median_s": {k: [sweep[n][k].median for n in sweep] for k in keys},
            "times_s": {k: [sweep[n][k].times for n in sweep] for k in keys}}


def overhead_png(path: Path, sweep: Dict[int, Dict[str, Series]], labels: Dict[str, str]) -> bool:
    """Log-log plot of µs per slice against slice count; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    data = overhead_json(sweep)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for key, values in data["per_slice_us"].items():
        points = [(n, v) for n, v in zip(data["sizes"], values) if v is not None]
        if points:
            axes.plot(*zip(*points), marker="o", label=labels.get(key, key))
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("slices (trivial work function x + 1)")
    axes.set_ylabel("µs per slice (median wall time / slices)")
    axes.set_title("Per-slice overhead, 2 workers")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
