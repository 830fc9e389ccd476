"""Spec example 7: a typical ENOFUNDS handler.

Local execution costs nothing, so dcplocal never emits ENOFUNDS; the subscription below is
exactly how a job bound for a paid scheduler would be prepared, and it is harmless here.
"""
from dcplocal import compute

job = compute.for_(1, 3, lambda i: i)


@job.on("ENOFUNDS")
def add_funds(funds_required):
    print("would escrow", funds_required, "and resume the job")


print("ENOFUNDS listeners:", job.listenerCount("ENOFUNDS"))
print("results:", job.localExec(2))
