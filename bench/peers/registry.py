"""Every implementation under benchmark, in the order their warm pools are started.

The forking stdlib pools come first, while the benchmark process has no threads yet (Ray and
Dask start several), and the heaviest clusters last. This lives apart from the package's
``__init__`` so that a worker unpickling a work function from ``peers.work`` imports only that
module, not every adapter (that import would be charged to the worker's first task).
"""
from __future__ import annotations

from typing import List, Type

from .base import Peer
from .dcplocal_peer import DcpLocal
from .stdlib import Executor, PoolMap, Serial
from .thirdparty import DaskFutures, Joblib, RayPool

PEERS: List[Type[Peer]] = [Serial, PoolMap, Executor, Joblib, DcpLocal, DaskFutures, RayPool]
