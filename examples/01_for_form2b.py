"""Spec example 1: compute.for() form 2b, and every result-handle helper.

key(2) prints 3: it is the third input (0-based n), as the spec's text says; the spec's printed
output (20) is a documentation error noted in DESIGN.md.
"""
from dcplocal import compute


def work(i):
    progress("100%")
    return i * 10


job = compute.for_(1, 3, work)
results = job.exec()
print("results:    ", results)
print("entries:    ", results.entries())
print("fromEntries:", results.fromEntries())
print("keys:       ", results.keys())
print("values:     ", results.values())
print("key(2):     ", results.key(2))
