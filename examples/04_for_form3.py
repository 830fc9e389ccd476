"""Spec example 4: compute.for() form 3, a multi-range: results nest per range."""
from dcplocal import compute

job = compute.for_([{"start": 1, "end": 2}, {"start": 3, "end": 5}],
                   lambda i, j: (progress(1), i * j)[1])
results = job.exec()
print(results)
