"""Third-party peers: joblib (loky backend), Ray, Dask distributed — each used idiomatically.

* joblib: ``Parallel(n_jobs=2, backend="loky")`` entered as a context manager, so its loky
  workers are reused across calls; ``batch_size="auto"`` and auto-memmapping of large arrays
  (joblib's defaults) stay on.
* Ray: ``ray.util.multiprocessing.Pool(2).map`` on ``ray.init(num_cpus=2)``. It batches items
  into chunks (same heuristic as multiprocessing) and moves large arrays through Ray's shared-
  memory object store; in our measurements it beat one ``@ray.remote`` task per item on every
  workload (remote tasks cost ~0.5 ms each here), so it is Ray's fastest idiomatic API.
* Dask: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` + ``client.map`` /
  ``client.gather``, one task per item (Dask's own unit), ``pure=False`` so that a repetition
  never reuses results cached from the previous one. Large array inputs are ``client.scatter``-ed
  first, as Dask's warning about large graph arguments recommends (it measured faster, too).
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, List, Optional

import numpy as np

from .base import WORKERS, Peer
from .work import Inputs


class Joblib(Peer):
    key = "joblib"
    label = "joblib.Parallel(n_jobs=2, backend=loky)"
    requires = ("joblib",)

    def __init__(self) -> None:
        self.parallel: Optional[Any] = None

    def start(self) -> None:
        from joblib import Parallel

        self.parallel = Parallel(n_jobs=WORKERS, backend="loky")
        self.parallel.__enter__()

    def stop(self) -> None:
        if self.parallel is not None:
            self.parallel.__exit__(None, None, None)
            self.parallel = None
        # The loky executor outlives Parallel (it is reusable by design); kill it so the next
        # start() is really cold.
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True, kill_workers=True)

    def run(self, fn: Callable[[Any], Any], inputs: Inputs) -> List[Any]:
        from joblib import delayed

        assert self.parallel is not None
        call = delayed(fn)
        return self.parallel(call(x) for x in inputs)


class RayPool(Peer):
    key = "ray"
    label = "ray.util.multiprocessing.Pool(2).map"
    requires = ("ray",)

    def __init__(self) -> None:
        self.pool: Optional[Any] = None

    def start(self) -> None:
        import ray
        from ray.util.multiprocessing import Pool

        ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=False)
        self.pool = Pool(processes=WORKERS)

    def stop(self) -> None:
        import ray

        if self.pool is not None:
            self.pool.terminate()
            self.pool = None
        ray.shutdown()

    def run(self, fn: Callable[[Any], Any], inputs: Inputs) -> List[Any]:
        assert self.pool is not None
        return self.pool.map(fn, inputs)


class DaskFutures(Peer):
    key = "dask"
    label = "dask LocalCluster(2 procs) client.map/gather"
    requires = ("distributed",)
    # ~1.5 ms of scheduler work per task: a million would take ~25 minutes per repetition.
    w1_slices = 2_000

    def __init__(self) -> None:
        self.cluster: Optional[Any] = None
        self.client: Optional[Any] = None

    def start(self) -> None:
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR)
        self.client = Client(self.cluster)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.cluster.close()
            self.client = self.cluster = None

    def run(self, fn: Callable[[Any], Any], inputs: Inputs) -> List[Any]:
        assert self.client is not None
        items: Any = inputs
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], np.ndarray):
            items = self.client.scatter(inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the large-graph hint is for array inputs: handled
            futures = self.client.map(fn, items, pure=False)
            results = self.client.gather(futures)
        del futures, items  # release results and scattered data on the workers now
        return results
