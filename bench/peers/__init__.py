"""Adapters that run one workload on dcplocal and on its peers, for ``bench/bench_peers.py``.

``registry.PEERS`` lists the implementations; ``work`` holds the work functions and input sets,
and is the only module workers import (so this file imports nothing).
"""
