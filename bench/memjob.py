"""Client memory of a 10M-slice job: prints JSON {kind, slices, seconds, baseline_mb, peak_mb, added_mb}.

Run as ``python bench/memjob.py range|generator [slices]``; used by bench/bench_kernels.py and by
the slow test that bounds client memory. Peak RSS is the kernel's VmHWM (not getrusage's
ru_maxrss, which Linux carries across execve from the parent); the baseline is taken after a
warm-up job, so runtime start-up is not counted.
"""
from __future__ import annotations

import json
import sys
import time

from dcplocal import compute


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def main() -> None:
    kind = sys.argv[1]
    slices = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
    compute.for_(0, 999, lambda x: x + 1).localExec(2)  # warm runtime
    baseline = status_mb("VmRSS")
    started = time.perf_counter()
    if kind == "range":
        job = compute.for_(0, slices - 1, lambda x: x + 1)
    else:
        job = compute.for_((x for x in range(slices)), lambda x: x + 1)
    results = job.localExec(2)
    seconds = time.perf_counter() - started
    assert len(results) == slices and results[slices - 1] == slices and results[12345] == 12346
    peak = status_mb("VmHWM")
    print(json.dumps({"kind": kind, "slices": slices, "seconds": round(seconds, 3),
                      "baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1),
                      "added_mb": round(peak - baseline, 1)}))


if __name__ == "__main__":
    main()
