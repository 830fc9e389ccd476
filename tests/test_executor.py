"""dcplocal.Executor against concurrent.futures.ProcessPoolExecutor on the same programs.

Most tests run one program on both executors (the ``executor`` fixture is parametrised) and
assert what the stdlib promises; where dcplocal deliberately differs (lambdas work, a dead worker
fails only its call, a loop of submits becomes few jobs) the test says so. Slow calls never rely
on timing: they wait for a flag file that the test creates.

ProcessPoolExecutor uses ``fork`` here: ``spawn`` and ``forkserver`` leave a resource tracker
process behind, which the session's leak check would report.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import dcplocal
from dcplocal import executor as executor_module
from dcplocal import executor_map
from dcplocal.errors import WorkerDiedError

WORKERS = 2


class Custom(Exception):
    def __init__(self, value, detail):
        super().__init__(value, detail)
        self.value, self.detail = value, detail


def square(x):
    return x * x


def fail_at(x, bad=3):
    if x == bad:
        raise Custom(x, "bad item")
    return x


def kw_call(a, b=0, *, c=0):
    return (a, b, c)


def type_name(x):
    return type(x).__name__


def identity(x):
    return x


def wait_for(path, limit=60.0):
    """Block until ``path`` exists (at most ``limit`` seconds, so a broken test cannot hang)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def blocker(started, release, value):
    """Say it started, then wait for the test's release."""
    Path(started).touch()
    wait_for(release)
    return value


def blocking_item(x, release):
    if x == 1:
        wait_for(release)
    return x


def die(x):
    if x == 1:
        os._exit(3)
    return x


def make_ppe():
    return cf.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork"))


@pytest.fixture(params=["ProcessPoolExecutor", "dcplocal"])
def executor(request, tmp_path):
    ex = make_ppe() if request.param == "ProcessPoolExecutor" else dcplocal.Executor(WORKERS)
    try:
        yield ex
    finally:
        (tmp_path / "release").touch()  # whatever still waits for it
        ex.shutdown(wait=True)


@pytest.fixture
def ours(tmp_path):
    ex = dcplocal.Executor(WORKERS)
    try:
        yield ex
    finally:
        (tmp_path / "release").touch()
        ex.shutdown(wait=True)


def occupy(ex, tmp_path, count=WORKERS):
    """Submit ``count`` blockers, one at a time, each started before the next: every worker
    (and, for dcplocal, every batch thread) is busy with one."""
    futures = []
    for i in range(count):
        started = tmp_path / f"started{i}"
        futures.append(ex.submit(blocker, str(started), str(tmp_path / "release"), f"b{i}"))
        wait_for(started)
    return futures


# ---- results ------------------------------------------------------------------------------

def test_map_and_submit_keep_order(executor):
    assert list(executor.map(square, range(200))) == [i * i for i in range(200)]
    futures = [executor.submit(square, i) for i in range(50)]
    assert [f.result() for f in futures] == [i * i for i in range(50)]
    assert executor.submit(kw_call, 1, c=3).result() == (1, 0, 3)


def test_map_over_several_iterables_stops_at_the_shortest(executor):
    assert list(executor.map(pow, [2, 3, 4], [5, 6])) == [32, 729]
    assert list(executor.map(kw_call, "ab", (1, 2, 3))) == [("a", 1, 0), ("b", 2, 0)]


def test_empty_maps(executor):
    assert list(executor.map(square, [])) == []
    assert list(executor.map(square, range(0))) == []
    assert list(executor.map(square)) == []
    assert list(executor.map(pow, [1, 2], [])) == []


def test_map_consumes_its_iterables_when_called(executor):
    pulled = []

    def source():
        for i in range(5):
            pulled.append(i)
            yield i

    results = executor.map(square, source())
    assert pulled == [0, 1, 2, 3, 4]  # before the first result is asked for
    assert list(results) == [0, 1, 4, 9, 16]


def test_map_items_arrive_as_the_stdlib_zip_makes_them(executor):
    assert list(executor.map(type_name, np.arange(3))) == ["int64"] * 3
    assert list(executor.map(type_name, range(2**70, 2**70 + 2))) == ["int", "int"]
    ranges = [{"start": 1, "end": 3}, {"start": 4, "end": 5}]  # data here, not a multi-range
    assert list(executor.map(identity, ranges)) == ranges


def test_map_yields_each_result_before_later_ones_are_done(executor, tmp_path):
    release = tmp_path / "release"
    results = executor.map(blocking_item, [0, 1], [str(release)] * 2)
    assert next(results) == 0  # item 1 is still waiting for the release
    release.touch()
    assert list(results) == [1]


# ---- exceptions -----------------------------------------------------------------------------

def test_a_calls_exception_keeps_its_type_and_args(executor):
    future = executor.submit(fail_at, 3)
    error = future.exception()
    assert type(error) is Custom and error.args == (3, "bad item") and error.detail == "bad item"
    with pytest.raises(Custom):
        future.result()
    assert error.__cause__ is not None  # the worker's traceback, in both


def test_map_raises_when_the_failing_item_is_reached_and_stops(executor):
    results = executor.map(fail_at, range(6))
    seen = []
    with pytest.raises(Custom) as caught:
        for value in results:
            seen.append(value)
    assert seen == [0, 1, 2] and caught.value.args == (3, "bad item")
    assert list(results) == []  # the iterator is finished


def test_unpicklable_argument_fails_its_future_only(executor):
    bad = executor.submit(identity, threading.Lock())
    good = executor.submit(square, 3)
    assert isinstance(bad.exception(), TypeError)
    assert good.result() == 9


def test_a_string_as_function_fails_each_item_as_the_stdlib(executor):
    with pytest.raises(TypeError):
        list(executor.map("not a function", [1]))
    assert isinstance(executor.submit("not a function", 1).exception(), TypeError)


def test_argument_checks(executor):
    for bad in (0, -1):
        with pytest.raises(ValueError):
            type(executor)(bad)
    with pytest.raises(ValueError):
        executor.map(square, [1], chunksize=0)


# ---- waiting --------------------------------------------------------------------------------

def test_as_completed_and_wait_work_on_its_futures(executor):
    futures = [executor.submit(square, i) for i in range(20)] + [executor.submit(fail_at, 3)]
    assert set(cf.as_completed(futures)) == set(futures)
    done, not_done = cf.wait(futures, return_when=cf.ALL_COMPLETED)
    assert done == set(futures) and not not_done
    done, _ = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
    assert futures[-1] in done
    called = threading.Event()
    futures[0].add_done_callback(lambda f: called.set())
    assert called.is_set()  # already done: the callback runs at once


def test_map_timeout_raises_timeout_error(executor, tmp_path):
    release = str(tmp_path / "release")
    results = executor.map(blocking_item, [0, 1, 2], [release] * 3, timeout=0.3)
    with pytest.raises(cf.TimeoutError) as caught:
        list(results)
    assert isinstance(caught.value, TimeoutError)


def test_map_timeout_counts_from_the_call(ours, tmp_path, monkeypatch):
    """A fake clock: map is called at t=0, the iterator first asked at t=10 with timeout=1."""
    now = [1000.0]

    class Clock:
        @staticmethod
        def monotonic():
            return now[0]

    monkeypatch.setattr(executor_module, "time", Clock)  # where map takes its deadline
    monkeypatch.setattr(executor_map, "time", Clock)  # where the iterator waits for it
    results = ours.map(blocking_item, [1], [str(tmp_path / "release")], timeout=1)
    now[0] += 10
    with pytest.raises(cf.TimeoutError):
        next(results)  # at once: the deadline passed before the first next()


# ---- cancelling and shutting down ------------------------------------------------------------

def test_cancel_before_running(executor, tmp_path):
    occupied = occupy(executor, tmp_path)
    waiting = [executor.submit(square, i) for i in range(8)]
    assert waiting[-1].cancel() and waiting[-1].cancelled()
    (tmp_path / "release").touch()
    assert [f.result() for f in occupied] == ["b0", "b1"]
    with pytest.raises(cf.CancelledError):
        waiting[-1].result()
    assert [f.result() for f in waiting[:-1]] == [i * i for i in range(7)]
    assert not occupied[0].cancel()  # done futures cannot be cancelled


def test_shutdown_cancel_futures(executor, tmp_path):
    occupied = occupy(executor, tmp_path)
    waiting = [executor.submit(square, i) for i in range(10)]
    executor.shutdown(wait=False, cancel_futures=True)
    (tmp_path / "release").touch()
    assert [f.result() for f in occupied] == ["b0", "b1"]
    cancelled = [f.cancelled() for f in waiting]
    # ProcessPoolExecutor has already moved a few (max_workers + 1) into its call queue;
    # dcplocal's waiting calls were all still pending: both cancel the rest
    assert all(cancelled[3:])
    for i, future in enumerate(waiting):
        if not future.cancelled():
            assert future.result() == i * i
    if isinstance(executor, dcplocal.Executor):
        assert all(cancelled)


def test_submit_and_map_after_shutdown_raise_runtime_error(executor):
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)
    with pytest.raises(RuntimeError):
        executor.map(square, [1])
    executor.shutdown()  # a second shutdown is harmless


def test_context_manager_waits_and_shuts_down(tmp_path):
    for ex in (make_ppe(), dcplocal.Executor(WORKERS)):
        with ex:
            futures = [ex.submit(square, i) for i in range(10)]
        assert all(f.done() for f in futures)
        with pytest.raises(RuntimeError):
            ex.submit(square, 1)


def test_shutdown_cancel_futures_stops_a_map(ours, tmp_path):
    results = ours.map(blocking_item, [0, 1, 2], [str(tmp_path / "release")] * 3)
    assert next(results) == 0
    ours.shutdown(wait=True, cancel_futures=True)  # returns: the job was cancelled
    with pytest.raises(cf.CancelledError):
        next(results)


def test_leaving_a_map_early_cancels_its_job(ours, tmp_path):
    results = ours.map(blocking_item, [0, 1, 2], [str(tmp_path / "release")] * 3)
    assert next(results) == 0
    results.close()
    ours.shutdown(wait=True)  # returns although item 1 waits for a release that never comes


# ---- what dcplocal does differently --------------------------------------------------------

def test_lambdas_and_closures_work_unlike_process_pool_executor():
    offset = 10
    with make_ppe() as ppe:
        error = ppe.submit(lambda x: x + offset, 1).exception()
        assert isinstance(error, (pickle.PicklingError, AttributeError, TypeError))
    with dcplocal.Executor(WORKERS) as ex:
        assert ex.submit(lambda x: x + offset, 1).result() == 11
        assert list(ex.map(lambda x, y: x * y + offset, [1, 2], [3, 4])) == [13, 18]


def test_a_dead_worker_fails_only_its_call():
    with dcplocal.Executor(WORKERS) as ex:
        results = [ex.submit(die, i) for i in range(4)]
        assert isinstance(results[1].exception(), WorkerDiedError)
        assert [results[i].result() for i in (0, 2, 3)] == [0, 2, 3]


def test_submits_that_wait_together_go_out_as_one_job(ours, tmp_path, monkeypatch):
    made = []
    real = executor_module._new_job

    def counting(*args, **kwargs):
        made.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(executor_module, "_new_job", counting)
    occupied = occupy(ours, tmp_path)
    waiting = [ours.submit(square, i) for i in range(300)]
    (tmp_path / "release").touch()
    assert [f.result() for f in waiting] == [i * i for i in range(300)]
    assert [f.result() for f in occupied] == ["b0", "b1"]
    assert made == [1, 1, 300]


def test_submits_from_many_threads_and_from_callbacks(ours):
    chained = cf.Future()

    def resubmit(future):
        inner = ours.submit(square, future.result())
        inner.add_done_callback(lambda f: chained.set_result(f.result()))

    ours.submit(square, 3).add_done_callback(resubmit)
    with cf.ThreadPoolExecutor(4) as threads:
        lists = list(threads.map(lambda k: [f.result() for f in
                                            [ours.submit(square, k * 100 + i) for i in range(25)]],
                                 range(4)))
    assert lists == [[(k * 100 + i) ** 2 for i in range(25)] for k in range(4)]
    assert chained.result(timeout=60) == 81


def test_a_million_item_map_is_one_job(ours, monkeypatch):
    made = []
    real = executor_module._new_job
    monkeypatch.setattr(executor_module, "_new_job",
                        lambda *a, **k: made.append(len(a[0])) or real(*a, **k))
    results = list(ours.map(square, range(1_000_000)))
    assert made == [1_000_000]
    assert results[:3] == [0, 1, 4] and results[-1] == 999_999 ** 2 and len(results) == 1_000_000


def test_on_a_runtime_of_your_own(runtime):
    with dcplocal.Executor(2, runtime=runtime) as ex:
        pids = set(ex.map(lambda _: os.getpid(), range(50)))
        assert pids <= set(runtime.worker_pids())
        assert ex.submit(square, 5).result() == 25


def test_a_finished_map_or_batch_frees_its_job_without_the_garbage_collector(ours, monkeypatch):
    import gc
    import weakref

    jobs = []
    real = executor_module._new_job

    def watched(*args, **kwargs):
        job = real(*args, **kwargs)
        jobs.append(weakref.ref(job))
        return job

    monkeypatch.setattr(executor_module, "_new_job", watched)
    gc.disable()
    try:
        assert list(ours.map(square, range(1000))) == [i * i for i in range(1000)]
        assert ours.submit(square, 4).result() == 16
        ours.shutdown(wait=True)
        assert len(jobs) == 2 and [ref() for ref in jobs] == [None, None]
    finally:
        gc.enable()


def test_work_submitted_without_shutdown_finishes_before_the_interpreter_exits(tmp_path):
    """As the stdlib's: pending calls still run at exit, even when the runtime was not started
    before the main thread returned."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "leave.py"
    script.write_text(textwrap.dedent(f"""
        import pathlib, time, dcplocal
        dcplocal.reset_default_runtime()
        ex = dcplocal.Executor(2)
        ex.submit(lambda: (time.sleep(0.2), pathlib.Path({str(tmp_path / "ran")!r}).touch()))
        ex.map(abs, range(-5, 5))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ran").exists()


def test_a_function_that_will_not_pickle_fails_only_its_calls(ours, tmp_path, monkeypatch):
    made = []
    real = executor_module._new_job
    monkeypatch.setattr(executor_module, "_new_job",
                        lambda *a, **k: made.append(len(a[0])) or real(*a, **k))
    lock = threading.Lock()
    occupied = occupy(ours, tmp_path)
    calls = [ours.submit(square, 2), ours.submit(lambda: lock.locked()), ours.submit(square, 3)]
    (tmp_path / "release").touch()
    assert isinstance(calls[1].exception(), TypeError)
    assert calls[0].result() == 4 and calls[2].result() == 9
    assert [f.result() for f in occupied] == ["b0", "b1"]
    assert made == [1, 1, 3, 2]  # refused whole before it started, then again without it


def test_workers_import_this_module_without_the_user_api():
    """A worker unpickles `_run_call` or `_Star` by reference, importing dcplocal.executor."""
    import subprocess
    import sys

    code = ("import sys, dcplocal.executor; "
            "print([m for m in ('dcplocal.compute', 'dcplocal.job', 'dcplocal.runtime', 'zmq') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
