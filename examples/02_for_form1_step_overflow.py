"""Spec example 2: compute.for() form 1; the step overflows the end, so 13 is never reached."""
from dcplocal import compute

job = compute.for_({"start": 10, "end": 13, "step": 2}, lambda i: progress(1) and i)
results = job.exec()
print(results)
