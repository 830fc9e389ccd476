"""Spec example 6: compute.for() form 4, an iterable input set."""
from dcplocal import compute


def work(i):
    progress(1)
    return i


job = compute.for_([123, 456], work)
results = job.exec()
print(results)
