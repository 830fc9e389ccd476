"""Vectorised loops for dcplocal's hot paths, installed as ``dcplocal.kernels``.

Plain functions over numpy arrays: slice index -> value(s) for ranges (`ranges`), counter-based
sampling of distributions by slice index (`rng`), and scattering batches of results into typed
arrays (`collate`). `reference` holds slow, obviously-correct Python versions that the tests hold
every kernel to. Every numba setting lives in `config`.

This package imports nothing from dcplocal: it knows arrays, not jobs.
"""
