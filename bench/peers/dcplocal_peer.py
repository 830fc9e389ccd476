"""dcplocal under benchmark: ``compute.for_(...).localExec(2)`` on the warm default runtime.

A ``range`` input becomes a range job (``compute.for_(start, end, fn)``, end inclusive), whose
slices travel as index ranges; a list becomes an iterable job, streamed to the workers in chunks.
Results are materialised as a user takes them: numeric results as ``np.asarray(results,
copy=False)``, a zero-copy view of the typed array; any other results as ``list(results)``, the
list ``Pool.map`` returns (``np.asarray`` of per-slice arrays would stack them into one new array,
as numpy does for a list of arrays: a copy no peer makes).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

import numpy as np

from .base import WORKERS, Peer
from .work import Inputs


class DcpLocal(Peer):
    key = "dcplocal"
    label = "dcplocal compute.for_(...).localExec(2)"
    requires = ("dcplocal", "zmq", "cloudpickle")

    def missing(self) -> Optional[str]:
        try:
            importlib.import_module("dcplocal.compute")  # the user API, not just the package
        except ImportError as exc:
            return f"dcplocal's user API does not import: {exc}"
        return super().missing()

    def start(self) -> None:
        """Nothing to build: the default runtime starts its broker and workers on first use."""

    def stop(self) -> None:
        from dcplocal import reset_default_runtime

        reset_default_runtime()

    def run(self, fn: Callable[[Any], Any], inputs: Inputs) -> Any:
        from dcplocal import compute

        if isinstance(inputs, range) and inputs.step == 1 and len(inputs):
            job = compute.for_(inputs.start, inputs.stop - 1, fn)
        else:
            job = compute.for_(inputs, fn)
        results = job.localExec(WORKERS)
        try:
            return np.asarray(results, copy=False)
        except ValueError:  # not numbers of one type: a view would need a copy
            return list(results)
