"""What every implementation under benchmark provides: a warm pool, a map, a cold start.

A `Peer` wraps one way of running ``fn`` over an input set with two workers. The runner calls
``start()`` once (untimed) to build the warm pool, ``run()`` many times (timed), and ``stop()``
once at the end. The cold-start measurement (W5) times ``start()`` + ``run()`` together.

``run`` must return fully materialised results (a list, or a numpy array): a lazy handle would
let an implementation stop the clock before the results exist in the client.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Optional, Sequence

from .work import Inputs

WORKERS = 2


class Peer:
    """Base class of the implementations; subclasses override start/stop/run."""

    #: short name used on the command line (``--peers``) and in the JSON
    key = ""
    #: what the table shows, including the API used and its batching parameters
    label = ""
    #: modules whose presence makes this peer runnable (and whose versions are reported)
    requires: Sequence[str] = ()
    #: W1 slice count when the full million would take minutes (the result is extrapolated)
    w1_slices: Optional[int] = None

    def missing(self) -> Optional[str]:
        """Why this peer cannot run here (a module is not installed), or None."""
        for name in self.requires:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                return f"{name} not installed ({exc})"
        return None

    def versions(self) -> Dict[str, str]:
        """``{module: __version__}`` of the modules this peer runs on."""
        return {name: str(getattr(importlib.import_module(name), "__version__", "?"))
                for name in self.requires}

    def start(self) -> None:
        """Create the warm pool/cluster (untimed except in the cold-start workload)."""

    def stop(self) -> None:
        """Tear the pool/cluster down; start() may be called again afterwards."""

    def run(self, fn: Callable[[Any], Any], inputs: Inputs) -> Sequence[Any]:
        """Map ``fn`` over ``inputs`` on the warm pool; return materialised results in order."""
        raise NotImplementedError


def pool_chunksize(n: int, workers: int = WORKERS) -> int:
    """multiprocessing.Pool.map's default chunksize (ceil(n / (4 * workers))), for the labels."""
    chunks, extra = divmod(n, workers * 4)
    return chunks + bool(extra)
