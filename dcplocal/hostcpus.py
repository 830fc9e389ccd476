"""How many CPUs this process may use, and so how many workers a job gets by default.

On a shared node ``os.cpu_count()`` is the wrong answer: a batch job's allocation is a subset of
the node (an affinity mask, a cgroup CPU quota, what SLURM or PBS granted). The allowed count is
the smallest of every limit found, each kept with the reason it was found, so ``dcplocal.info()``
can say why a job got the workers it got::

    affinity         os.sched_getaffinity(0)             -> CPUs in the mask
    cgroup v2 / v1   cpu.max, cpu.cfs_quota_us/period     -> quota / period, rounded up, >= 1
    SLURM            SLURM_CPUS_PER_TASK, else SLURM_CPUS_ON_NODE
    PBS              PBS_NCPUS, else NCPUS
    explicit         DCPLOCAL_WORKERS                     (the worker count only, not the CPUs)

``DCPLOCAL_WORKERS`` lowers the default worker count; it does not change how many CPUs the
threads of BLAS/OpenMP libraries are divided over. Asking for more workers than the allowed CPUs
warns once; more than the cap (4x the allowed CPUs, or ``DCPLOCAL_MAX_WORKERS``) is refused.

Must not know: workers, sockets, jobs. It reads the environment and /proc and /sys only.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from .errors import EINVAL

#: A job may ask for more workers than CPUs (I/O-bound work functions), but not without bound:
#: 10,000 workers of ~17 MiB each is an accident, not a plan.
CAP_FACTOR = 4

#: Per-thread-pool variables set in workers to max(1, allowed CPUs // workers), unless set.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class OversubscriptionWarning(UserWarning):
    """A job asked for more worker processes than this process has CPUs."""


class Limit(NamedTuple):
    """One limit on the CPUs this process may use, and where it came from."""

    cpus: int
    why: str


def _env_int(env: Mapping[str, str], name: str) -> Optional[int]:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value.split("(")[0])  # SLURM_CPUS_ON_NODE may read "4(x2)" on old SLURMs
    except ValueError:
        raise EINVAL(f"{name}={value!r} is not a whole number") from None
    if number < 1:
        raise EINVAL(f"{name}={value!r} must be at least 1")
    return number


def _quota(quota: int, period: int) -> int:
    return max(1, math.ceil(quota / period))


def _cgroup_paths(proc_cgroup: str) -> Tuple[Optional[str], Optional[str]]:
    """(v2 path, v1 cpu controller path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        with open(proc_cgroup) as lines:
            for line in lines:
                _id, controllers, path = line.rstrip("\n").split(":", 2)
                if not controllers:
                    v2 = path
                elif "cpu" in controllers.split(","):
                    v1 = path
    except (OSError, ValueError):
        pass
    return v2, v1


def _ancestors(root: str, path: str) -> List[str]:
    """``root/path`` and each directory above it up to ``root`` (a parent's quota binds too)."""
    parts = [p for p in path.split("/") if p and p != ".."]
    return [os.path.join(root, *parts[:n]) for n in range(len(parts), -1, -1)]


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cgroup_limit(sys_cgroup: str = "/sys/fs/cgroup",
                 proc_cgroup: str = "/proc/self/cgroup") -> Optional[Limit]:
    """The tightest cgroup CPU quota over this process's cgroup and its ancestors (v2, else v1)."""
    v2, v1 = _cgroup_paths(proc_cgroup)
    found: List[Limit] = []
    if v2 is not None:
        for directory in _ancestors(sys_cgroup, v2):
            fields = (_read(os.path.join(directory, "cpu.max")) or "max").split()
            if fields[0] != "max" and len(fields) == 2:
                cpus = _quota(int(fields[0]), int(fields[1]))
                found.append(Limit(cpus, f"cgroup v2 {directory}/cpu.max = {' '.join(fields)}"))
    if v1 is not None and not found:
        for mount in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
            for directory in _ancestors(os.path.join(sys_cgroup, mount), v1):
                quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
                period = _read(os.path.join(directory, "cpu.cfs_period_us"))
                if quota and period and int(quota) > 0 and int(period) > 0:
                    found.append(Limit(_quota(int(quota), int(period)),
                                       f"cgroup v1 {directory}/cpu.cfs_quota_us = {quota} "
                                       f"per {period}"))
    return min(found) if found else None


def limits(env: Optional[Mapping[str, str]] = None) -> List[Limit]:
    """Every limit on this process's CPUs that was found (at least the machine's own count)."""
    env = os.environ if env is None else env
    found: List[Limit] = []
    try:
        found.append(Limit(len(os.sched_getaffinity(0)), "affinity: os.sched_getaffinity(0)"))
    except (AttributeError, OSError):  # not Linux
        found.append(Limit(os.cpu_count() or 1, "os.cpu_count() (no affinity mask here)"))
    group = cgroup_limit()
    if group is not None:
        found.append(group)
    for names, what in ((("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"), "SLURM"),
                        (("PBS_NCPUS", "NCPUS"), "PBS")):
        for name in names:
            value = _env_int(env, name)
            if value is not None:
                found.append(Limit(value, f"{what}: {name}={env[name]}"))
                break
    return found


def allowed_cpus(env: Optional[Mapping[str, str]] = None) -> Limit:
    """The CPUs this process may use: the smallest limit, with its reason."""
    return min(limits(env))


def default_workers(env: Optional[Mapping[str, str]] = None) -> Limit:
    """How many workers ``localExec()`` starts: the allowed CPUs, or fewer by DCPLOCAL_WORKERS."""
    env = os.environ if env is None else env
    allowed = allowed_cpus(env)
    explicit = _env_int(env, "DCPLOCAL_WORKERS")
    if explicit is not None and explicit < allowed.cpus:
        return Limit(explicit, f"DCPLOCAL_WORKERS={env['DCPLOCAL_WORKERS']}")
    return allowed


def max_workers(env: Optional[Mapping[str, str]] = None) -> Limit:
    """The most workers a runtime starts: DCPLOCAL_MAX_WORKERS, else 4x the allowed CPUs."""
    env = os.environ if env is None else env
    explicit = _env_int(env, "DCPLOCAL_MAX_WORKERS")
    if explicit is not None:
        return Limit(explicit, f"DCPLOCAL_MAX_WORKERS={env['DCPLOCAL_MAX_WORKERS']}")
    allowed = allowed_cpus(env)
    return Limit(CAP_FACTOR * allowed.cpus, f"{CAP_FACTOR} x {allowed.cpus} allowed CPUs")


def check_workers(requested: int, cap: int, allowed: int, warned: List[bool],
                  stacklevel: int = 3) -> None:
    """Refuse a worker count above ``cap``; warn once (per ``warned`` flag) above ``allowed``;
    ``stacklevel`` as `warnings.warn`'s, counted from the caller (so the user's line is named)."""
    if requested > cap:
        raise EINVAL(f"{requested} workers asked for, more than the cap of {cap} (this process "
                     f"may use {allowed} CPUs; raise the cap with DCPLOCAL_MAX_WORKERS or "
                     f"LocalRuntime(max_workers=...))")
    if requested > allowed and not warned[0]:
        warned[0] = True
        warnings.warn(f"{requested} workers asked for, but this process may use only {allowed} "
                      f"CPUs; they will share them (dcplocal.info() says why)",
                      OversubscriptionWarning, stacklevel=stacklevel + 1)


def thread_environment(env: Mapping[str, str], allowed: int, workers: int) -> Dict[str, str]:
    """The thread-pool variables a worker gets: what ``env`` sets is kept, the rest divide the
    allowed CPUs between the workers (N workers x N BLAS threads would oversubscribe)."""
    threads = str(max(1, allowed // max(1, workers)))
    return {name: env.get(name) or threads for name in THREAD_VARIABLES}
