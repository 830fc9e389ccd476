"""Shared fixtures: every test ends with no child process it did not account for.

The default runtime's worker processes (and its reaper) are meant to outlive a job (the warm
runtime), so they are the only children a test may leave behind; anything else alive after a test — an orphaned worker
of a closed runtime, a work function's stray child — fails that test and is killed. At the end of
the session the default runtime is closed and no child at all may remain.
"""
from __future__ import annotations

import os
import time

import psutil
import pytest

import dcplocal
from dcplocal import runtime as runtime_module


def _children() -> set:
    return {p.pid for p in psutil.Process().children(recursive=True) if _alive(p)}


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _runtime_workers() -> set:
    rt = runtime_module._default
    if rt is None or rt._thread is None or not rt._thread.is_alive():
        return set()
    return set(rt.worker_pids()) | set(rt.helper_pids())  # helpers: its reaper process


def _wait_for_exit(pids: set, allowed_fn, timeout: float = 5.0) -> set:
    deadline = time.monotonic() + timeout
    leaked = pids
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _children() - allowed_fn()
    return leaked


def _kill(pids: set) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(autouse=True)
def no_leaked_processes():
    before = _children()
    yield
    allowed = lambda: before | _runtime_workers()  # noqa: E731
    leaked = _wait_for_exit(_children() - allowed(), allowed)
    if leaked:
        _kill(leaked)
        pytest.fail(f"test left child processes behind: {sorted(leaked)}")


@pytest.fixture(scope="session", autouse=True)
def no_children_at_end():
    yield
    dcplocal.reset_default_runtime()
    leaked = _wait_for_exit(_children(), set)
    if leaked:
        _kill(leaked)
        pytest.fail(f"session left child processes behind: {sorted(leaked)}")


@pytest.fixture
def runtime():
    """A private runtime (2 workers), closed after the test."""
    with dcplocal.LocalRuntime(workers=2) as rt:
        yield rt


def pids_of(rt) -> set:
    return set(rt.worker_pids())


os.environ.setdefault("PYTHONFAULTHANDLER", "1")
