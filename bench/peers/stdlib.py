"""Standard-library implementations: a serial loop, multiprocessing.Pool, ProcessPoolExecutor.

Both pools use the platform's default start method (``fork`` on Linux with Python < 3.14), as a
user who writes ``Pool(2)`` gets, and their API's default chunksize: ``Pool.map`` batches
(ceil(n / 8) items per chunk with 2 workers), ``ProcessPoolExecutor.map`` does not (chunksize=1).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, List, Optional

from .base import WORKERS, Peer
from .work import Inputs


class Serial(Peer):
    key = "serial"
    label = "serial loop (in-process)"

    def run(self, fn: Callable[[Any], Any], inputs: Inputs) -> List[Any]:
        return [fn(x) for x in inputs]


class PoolMap(Peer):
    key = "pool"
    label = "multiprocessing.Pool.map (default chunksize)"

    def __init__(self) -> None:
        self.pool: Optional[Any] = None

    def start(self) -> None:
        self.pool = multiprocessing.Pool(WORKERS)

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def run(self, fn: Callable[[Any], Any], inputs: Inputs) -> List[Any]:
        assert self.pool is not None
        return self.pool.map(fn, inputs)


class Executor(Peer):
    key = "ppe"
    label = "ProcessPoolExecutor.map (chunksize=1, default)"
    # ~95 us per item at chunksize 1: the full million would take ~1.5 minutes per repetition.
    w1_slices = 20_000

    def __init__(self) -> None:
        self.executor: Optional[ProcessPoolExecutor] = None

    def start(self) -> None:
        self.executor = ProcessPoolExecutor(WORKERS)

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def run(self, fn: Callable[[Any], Any], inputs: Inputs) -> List[Any]:
        assert self.executor is not None
        return list(self.executor.map(fn, inputs))
