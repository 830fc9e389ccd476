"""The one place that owns every numba setting, and the lazy JIT used by the kernels.

* nopython always: a kernel that falls back to object mode would be slower than numpy.
* cache off: numba's on-disk cache has not been proven safe with many worker processes
  compiling into one package directory at once, so each process compiles its own copy.
* JIT is lazy and opt-in: numba is imported on the first call of a numba kernel, never at
  import time, so a worker starts in ~100 ms; without numba the numpy versions run instead.
* numba runs only where it earns its place. Distribution sampling is the one numba kernel, and
  it is off unless ``DCPLOCAL_NUMBA=1``. Measured on this project's 2-core machine: uniform
  numbers cost 1.5 ms per million warm in numba against 7 ms in numpy, but the first call in
  each worker pays ~0.95 s of numba import and compilation, and a fresh runtime's first 2M-slice
  distribution job took 0.93 s against 0.21 s later (numpy: 0.25 s, then 0.24 s). A stall of
  most of a second on every new runtime costs more than 13 % on a trivial work function saves.
* one numba thread per process: parallelism comes from worker processes, not threads; set in
  the environment before numba is imported, where numba reads it.
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
            os.environ.setdefault("NUMBA_NUM_THREADS", str(THREADS))  # read at numba's import
            try:
                import numba  # noqa: F401
                _numba_ok = True
            except ImportError:
                _numba_ok = False
    return _numba_ok


def numba_wanted() -> bool:
    """Whether the hot paths use their numba kernels (``DCPLOCAL_NUMBA=1``; see above)."""
    return os.environ.get("DCPLOCAL_NUMBA") == "1" and numba_available()


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The numba-compiled version of ``fn`` (compiled on first request, once per process)."""
    compiled = _compiled.get(fn)
    if compiled is None:
        import numba

        compiled = numba.jit(nopython=NOPYTHON, cache=CACHE, nogil=True)(fn)
        _compiled[fn] = compiled
    return compiled
