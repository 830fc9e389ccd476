"""One failure path for whatever goes wrong on the client's side of a job.

A raising input iterator, an input item that will not pickle, a result or a work.emit value that
will not unpickle here, Ctrl-C in a listener, a bug while dispatching an event: each ends the job
(cancelled in the runtime, with a clear runStatus), raises a typed error naming the slice or
input, keeps every result reported before, and leaves the runtime holding nothing for the job:
no broker entry, no scheduler state, no held input region, no worker arena region.
"""
from __future__ import annotations

import asyncio
import gc
import signal
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

import dcplocal
from dcplocal import compute
from dcplocal.errors import ETOOMANYERRORS, ETYPE, JobCancelledError, SliceError

import faultkit

BIG = 512 * 1024          # float64 elements: 4 MiB, well above the arena threshold


def big(x):
    import numpy as np
    return np.full(BIG, float(x))


class Boom(Exception):
    pass


def raising_inputs(n_before):
    for i in range(n_before):
        yield i
    raise Boom("the input iterator broke")


class KeyThatBreaks(Sequence):
    """An input set whose item 5 cannot be read back for a result event."""

    def __init__(self, n):
        self.n, self.armed = n, False

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        if self.armed and index == 5:
            raise Boom("cannot read input 5")
        return index


def _emit_bad_value(x):
    from dcplocal.sandbox import work
    if x == 3:
        work.emit("late", faultkit.LateBomb("raise"))
    return big(x)


def case_raising_generator():
    return compute.for_(raising_inputs(40), big), Boom, "input item 40"


def case_unpicklable_input():
    items = [0, 1, 2, threading.Lock(), 4]
    return compute.for_(items, big), ETYPE, "input item 3"


def case_result_that_will_not_unpickle():
    job = compute.for_(0, 19, lambda x: faultkit.LateBomb("raise") if x == 7 else big(x))
    return job, SliceError, "slice 8"


def case_emit_value_that_will_not_unpickle():
    job = compute.for_(0, 19, _emit_bad_value)
    job.work.on("late", lambda value: None)
    return job, SliceError, "work.emit('late')"


def case_keyboard_interrupt_in_a_listener():
    job = compute.for_(0, 199, lambda x: (__import__("time").sleep(0.005), big(x))[1])

    def interrupt(event):
        if event.sliceNumber == 3:
            raise KeyboardInterrupt
    job.on("result", interrupt)
    return job, KeyboardInterrupt, ""


def case_bug_while_dispatching_an_event():
    inputs = KeyThatBreaks(40)
    job = compute.for_(inputs, big)
    inputs.armed = True
    job.on("result", lambda event: None)
    return job, Boom, "cannot read input 5"


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def _holds(rt):
    return rt.query(lambda b: (len(b.jobs), len(b.scheduler.jobs), len(b.inputs.holds),
                               sum(len(h) for h in b.inputs.remote_holds.values())))


def _wait_until_nothing_held(rt, timeout=10.0):
    deadline = time.monotonic() + timeout
    while _holds(rt) != (0, 0, 0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _holds(rt)


def _regions_held(rt):
    return rt.query(lambda broker: broker.arena_maps.held())


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_client_side_failure_ends_the_job_and_frees_what_it_held(case):
    # one worker: which worker's arena a result lands in must not depend on scheduling
    with dcplocal.LocalRuntime(workers=1) as rt:
        job, error_type, names = CASES[case]()
        job.scheduler = rt
        with pytest.raises(error_type) as caught:
            job.exec()
        assert names in str(caught.value) + "".join(getattr(caught.value, "__notes__", []))
        assert job.status.runStatus == ("cancelled" if error_type is KeyboardInterrupt else "failed")
        kept = job.results
        assert kept is not None
        available = [i for i in range(len(kept)) if kept.isAvailable(i)]
        assert available, "no result was reported before the failure"
        for index in available:                    # what was reported is kept, and exact
            assert np.all(kept[index] == kept.key(index))
        assert _wait_until_nothing_held(rt) == (0, 0, 0, 0)
        assert _regions_held(rt) >= len(available)  # the results the client still has

        del job, kept, caught
        gc.collect()
        assert _regions_held(rt) == 0, "a region of the failed job is still held"
        again = compute.for_(0, 19, big)
        again.scheduler = rt
        assert [float(a[0]) for a in again.exec()] == [float(x) for x in range(20)]


def test_an_unpicklable_input_item_is_etype_naming_index_and_type_with_its_cause():
    with pytest.raises(ETYPE) as caught:
        compute.for_([1, 2, threading.Lock()], lambda x: x).localExec(2)
    assert "input item 2" in str(caught.value) and "lock" in str(caught.value)
    assert isinstance(caught.value.__cause__, TypeError)


@pytest.mark.parametrize("cores", [0, 2])
def test_error_limit_counts_results_that_fail_to_unpickle_in_the_client(cores):
    def work(x):
        return faultkit.LateBomb("raise") if x in (3, 6) else x
    complete = []
    job = compute.for_(0, 9, work)
    job.on("complete", complete.append)
    with pytest.raises(SliceError):
        job.localExec(cores)
    assert job.status.runStatus == "failed" and not complete

    job = compute.for_(0, 9, work)
    job.errorLimit = 1
    with pytest.raises(ETOOMANYERRORS):
        job.localExec(cores)

    job = compute.for_(0, 9, work)
    job.errorLimit = 2
    results = job.localExec(cores)
    assert [results[i] for i in range(10) if i not in (3, 6)] == [0, 1, 2, 4, 5, 7, 8, 9]
    assert job.status.runStatus == "finished"


@pytest.mark.parametrize("cores", [0, 2])
def test_the_debug_mode_fails_where_the_workers_fail(cores):
    """A result that cannot cross a process boundary fails on localExec(0) too, with the same
    error, so the debug mode reproduces what the workers do."""
    with pytest.raises(TypeError, match="lock"):
        compute.for_(0, 1, lambda x: threading.Lock()).localExec(cores)


def _sleepy(x):
    import time
    time.sleep(0.02)
    return x


@pytest.mark.parametrize("cores", [0, 2])
def test_cancelling_the_awaiting_task_cancels_the_job(cores):
    job = compute.for_(0, 999, _sleepy)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(job.aio.localExec(cores), 0.3)
        return job.status.runStatus, job.status.computed

    status, computed = asyncio.run(main())
    assert status == "cancelled"                  # it had stopped by the time wait_for returned
    assert computed < 1000
    time.sleep(0.3)
    assert job.status.computed == computed        # and computes nothing afterwards


def test_task_cancel_cancels_the_job_too():
    job = compute.for_(0, 999, _sleepy)

    async def main():
        task = asyncio.ensure_future(job.aio.exec())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert job.status.runStatus == "cancelled"


def test_async_results_stream_as_slices_complete_and_raise_a_failure_last():
    async def collect(job):
        return [(event.sort, event.result) async for event in job.aio.results(2)]

    assert sorted(asyncio.run(collect(compute.for_(0, 19, lambda x: x * x)))) == \
        [(i, i * i) for i in range(20)]

    failing = compute.for_(0, 9, lambda x: 1 / (x - 5))
    seen = []

    async def until_error():
        async for event in failing.aio.results(2):
            seen.append(event.sort)

    with pytest.raises(ZeroDivisionError):
        asyncio.run(until_error())
    assert 5 not in seen


def test_leaving_an_async_results_loop_early_cancels_the_job():
    job = compute.for_(0, 999, _sleepy)

    async def first_only():
        async for event in job.aio.results(2):
            return event.sort

    asyncio.run(first_only())
    deadline = time.monotonic() + 5
    while job.status.runStatus == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.status.runStatus == "cancelled"


def test_a_cancelled_async_job_raises_cancelled_not_job_cancelled_error():
    job = compute.for_(0, 999, _sleepy)

    async def main():
        task = asyncio.ensure_future(job.aio.localExec(2))
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except JobCancelledError:
            return "job cancelled"

    assert asyncio.run(main()) == "cancelled"


DEBUG_SCRIPT = """
import time
from dcplocal import compute

def slow(x):
    print("slice", x, "starts")
    time.sleep(0.2)
    return x

try:
    compute.for_(range(100), slow).localExec(0)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise
"""


def test_the_debug_mode_prints_as_it_goes_and_stops_on_ctrl_c():
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-u", "-c", DEBUG_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "slice 0 starts" in first and proc.poll() is None   # printed while it runs
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "interrupted" in out and out.count("starts") < 99        # it stopped, not finished
