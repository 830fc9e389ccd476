"""Spec example 3: compute.for() form 1 with group: each slice receives an array of 2 values."""
from dcplocal import compute

job = compute.for_({"start": 10, "end": 13, "group": 2}, lambda i: progress(1) and int(i[1] - i[0]))
results = job.exec()
print(results)
