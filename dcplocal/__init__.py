"""dcplocal — the DCP Compute API in Python, with ``job.localExec(cores)`` as its primary path.

    from dcplocal import compute
    job = compute.for_(1, 3, lambda i: (progress(1), i * 10)[1])
    results = job.localExec(2)          # [10, 20, 30], computed by 2 worker processes

The public surface is ``__all__``. Names are resolved lazily (PEP 562) so that a worker process,
which runs ``python -m dcplocal.worker``, imports only the worker side and never the user API.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> (module, attribute or None for the module itself)
_EXPORTS = {
    "compute": ("dcplocal.compute", None),
    "compute_for": ("dcplocal.compute", "for_"),
    "compute_do": ("dcplocal.compute", "do"),
    "stats": ("dcplocal.distributions", "stats"),
    "errors": ("dcplocal.errors", None),
    "DCPError": ("dcplocal.errors", "DCPError"),
    "EventEmitter": ("dcplocal.events", "EventEmitter"),
    "Payload": ("dcplocal.events", "Payload"),
    "Job": ("dcplocal.job", "Job"),
    "ResultHandle": ("dcplocal.results", "ResultHandle"),
    "RangeObject": ("dcplocal.ranges", "RangeObject"),
    "MultiRangeObject": ("dcplocal.ranges", "MultiRangeObject"),
    "SparseRangeObject": ("dcplocal.ranges", "SparseRangeObject"),
    "LocalRuntime": ("dcplocal.runtime", "LocalRuntime"),
    "default_runtime": ("dcplocal.runtime", "default_runtime"),
    "reset_default_runtime": ("dcplocal.runtime", "reset_default_runtime"),
    "info": ("dcplocal.hostinfo", "info"),
    "Executor": ("dcplocal.executor", "Executor"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'dcplocal' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))
