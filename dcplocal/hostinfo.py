"""``dcplocal.info()``: what the runtime found out about this host, and why.

On a shared node the first question is "why did my job get N workers?", the second "where are
my sockets and may the fast paths run here?". ``print(dcplocal.info())`` (or
``python -m dcplocal.hostinfo``) answers both without starting a runtime.

Must not know: jobs, brokers, sockets. It gathers what hostcpus, rundir and features say.
"""
from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, Dict

from . import features, hostcpus, rundir


class Info(Dict[str, Any]):
    """A plain dict of findings that prints as a readable report."""

    def __str__(self) -> str:
        lines = [f"allowed CPUs:     {self['cpus']}"]
        lines += [f"  {limit.cpus:>4}  {limit.why}" for limit in self["limits"]]
        lines += [f"workers by default: {self['workers']} ({self['workers_why']})",
                  f"worker cap:       {self['max_workers']} ({self['max_workers_why']})",
                  f"threads a worker: {self['threads_per_worker']} per BLAS/OpenMP pool"
                  f" (unless set in the environment)",
                  f"temp dir:         {self['tempdir']}",
                  f"socket dir goes in: {self['socket_base']} "
                  f"(dcplocal-{self['host_tag']}-<pid>-*)"]
        lines += [f"fast path {name + ':':<9} {state}" for name, state in self["fast_paths"].items()]
        return "\n".join(lines)


def info() -> Info:
    """What was detected and why: CPUs (with every limit found), the default worker count and
    the cap, the temp and socket directories, and which kernel fast paths are allowed."""
    workers = hostcpus.default_workers()
    cap = hostcpus.max_workers()
    allowed = hostcpus.allowed_cpus()
    try:
        base = rundir.choose_base()
    except OSError as exc:
        base = f"(none: {exc})"
    return Info(cpus=allowed.cpus, cpus_why=allowed.why, limits=hostcpus.limits(),
                workers=workers.cpus, workers_why=workers.why,
                max_workers=cap.cpus, max_workers_why=cap.why,
                threads_per_worker=max(1, allowed.cpus // max(1, workers.cpus)),
                tempdir=tempfile.gettempdir(), socket_base=base, host_tag=rundir.host_tag(),
                fast_paths=features.report(), platform=sys.platform, pid=os.getpid())


if __name__ == "__main__":
    print(info())
