"""The one place that owns every numba setting, and the lazy JIT used by the kernels.

* nopython always: a kernel that falls back to object mode would be slower than numpy.
* cache off: numba's on-disk cache has not been proven safe with many worker processes
  compiling into one package directory at once, so each process compiles its own copy.
* JIT is lazy and optional: numba is imported on the first call of a numba kernel, never at
  import time, so a worker starts in ~100 ms; without numba the numpy versions run instead.
* one numba thread per process: parallelism comes from worker processes, not threads.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

NOPYTHON = True
CACHE = False
THREADS = 1
#: Below this many elements numpy wins: a numba call has ~µs of dispatch, and the first call of
#: a process pays the compilation (~0.3 s).
NUMBA_MIN_ELEMENTS = 50_000

_compiled: dict = {}
_numba_ok: Optional[bool] = None


def numba_available() -> bool:
    """Whether numba can be imported here (checked once; DCPLOCAL_NO_NUMBA=1 turns it off)."""
    global _numba_ok
    if _numba_ok is None:
        if os.environ.get("DCPLOCAL_NO_NUMBA") == "1":
            _numba_ok = False
        else:
            try:
                import numba  # noqa: F401
                os.environ.setdefault("NUMBA_NUM_THREADS", str(THREADS))
                _numba_ok = True
            except ImportError:
                _numba_ok = False
    return _numba_ok


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The numba-compiled version of ``fn`` (compiled on first request, once per process)."""
    compiled = _compiled.get(fn)
    if compiled is None:
        import numba

        compiled = numba.jit(nopython=NOPYTHON, cache=CACHE, nogil=True)(fn)
        _compiled[fn] = compiled
    return compiled
