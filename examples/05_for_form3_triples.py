"""Spec example 5: compute.for() form 3 returning lists: [[[1, 3, 3], …], …]."""
from dcplocal import compute


def work(i, j):
    return [i, j, i * j]


job = compute.for_([{"start": 1, "end": 2}, {"start": 3, "end": 5}], work)
results = job.exec()
print(results)
