"""Which kernel fast paths this process may use, and the one setting that turns them off.

The runtime is built for Linux and uses three of its features where they exist, each with a
fallback that is slower but works anywhere the runtime runs:

    memfd            shared-memory arenas for large results and inputs  | else: the socket
    vm_readv         workers read large inputs out of the client        | else: arena / socket
    pidfd            a worker's death wakes the broker's event loop     | else: a waiter thread

``DCPLOCAL_DISABLE=memfd,vm_readv,pidfd`` (any subset, comma-separated) forces the fallbacks, so
CI can run them on Linux. It is read here and nowhere else, once per process (workers inherit
the environment, so they agree with their client).

Must not know: arenas, sockets, workers. It answers "may I", never does the work.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Dict, FrozenSet

from .errors import EINVAL

FEATURES = ("memfd", "vm_readv", "pidfd")


def _disabled() -> FrozenSet[str]:
    names = {name.strip() for name in os.environ.get("DCPLOCAL_DISABLE", "").split(",")}
    names.discard("")
    unknown = names - set(FEATURES)
    if unknown:
        raise EINVAL(f"DCPLOCAL_DISABLE names {sorted(unknown)}: the features that can be "
                     f"disabled are {', '.join(FEATURES)}")
    return frozenset(names)


DISABLED = _disabled()


def enabled(feature: str) -> bool:
    """False when DCPLOCAL_DISABLE turns ``feature`` off (then its fallback is used)."""
    return feature not in DISABLED


def _memfd() -> str:
    if not hasattr(os, "memfd_create"):
        return "no (os.memfd_create missing)"
    try:
        os.close(os.memfd_create("dcplocal-info", os.MFD_CLOEXEC))
    except OSError as exc:
        return f"no ({exc})"
    return "yes"


def _vm_readv() -> str:
    if not sys.platform.startswith("linux"):
        return "no (not Linux)"
    try:
        ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):
        return "no (libc has no process_vm_readv)"
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
    except OSError:
        return "yes (no Yama)"
    return "yes" if scope == "0" else f"no (Yama ptrace_scope={scope}: workers map the arena)"


def _pidfd() -> str:
    try:
        os.close(os.pidfd_open(os.getpid()))  # type: ignore[attr-defined]
    except (AttributeError, OSError) as exc:
        return f"no ({exc})"
    return "yes"


def report() -> Dict[str, str]:
    """Each fast path: whether the kernel allows it here, or why not (or that it is disabled)."""
    probes = {"memfd": _memfd, "vm_readv": _vm_readv, "pidfd": _pidfd}
    return {name: probe() if enabled(name) else "disabled (DCPLOCAL_DISABLE)"
            for name, probe in probes.items()}
