"""The public API on real worker processes: forms, events and payloads, result handles, errors."""
from __future__ import annotations

import asyncio
import os
import sys
import threading

import numpy as np
import pytest

import dcplocal
from dcplocal import compute
from dcplocal.errors import (EINVAL, ENOTAVAIL, EPERM, ERANGE, ETOOMANYERRORS, ETYPE, DCPError,
                             RemoteTraceback, SliceError)


class Custom(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code, self.detail = code, detail


def raise_custom(x):
    if x == 2:
        raise Custom(42, "detail")  # the line the remote traceback must show
    return x


# ---- forms ---------------------------------------------------------------------------------
def test_every_compute_for_form_and_the_sdk_spellings():
    square = lambda x: x * x  # noqa: E731
    assert compute.for_({"start": 1, "end": 3}, square).localExec(2) == [1, 4, 9]
    assert compute.for_(compute.RangeObject(1, 3), square).localExec(2) == [1, 4, 9]
    assert compute.for_(1, 5, 2, square).localExec(2) == [1, 9, 25]
    assert compute.for_(1, 3, lambda x, a, b: x * a + b, [10, 1]).localExec(2) == [11, 21, 31]
    assert compute.for_([{"start": 1, "end": 2}, {"start": 0, "end": 1}], lambda i, j: i - j).localExec(2) == [[1, 0], [2, 1]]
    assert compute.for_({"sparse": [{"start": 1, "end": 2}, {"start": 5, "end": 5}]}, square).localExec(2) == [1, 4, 25]
    assert compute.for_((c for c in "abc"), str.upper).localExec(2) == ["A", "B", "C"]
    assert getattr(compute, "for")(1, 2, square).localExec(2) == [1, 4]
    assert dcplocal.compute_for(1, 2, square).localExec(2) == [1, 4]
    assert sorted(compute.do(4, lambda i: i * 2).localExec(2)) == [0, 2, 4, 6]
    assert compute.do(lambda a: a + 1, [41]).localExec(2) == [42]
    assert dcplocal.compute_do(2, lambda i: -i).localExec(2) == [0, -1]


def test_work_as_source_string_and_closures():
    assert compute.for_(1, 3, "lambda x: x * 3").localExec(2) == [3, 6, 9]
    assert compute.for_(1, 2, "def twice(x):\n    return 2 * x\n").localExec(2) == [2, 4]
    offset = 100
    assert compute.for_(1, 2, lambda x: x + offset).localExec(2) == [101, 102]
    with pytest.raises(ValueError):
        compute.for_(1, 2, "def a(x): return x\ndef b(x): return x\n").localExec(2)


def test_two_worker_processes_really_share_the_work():
    import time
    pids = compute.for_(0, 39, lambda x: (time.sleep(0.01), os.getpid())[1]).localExec(2)
    assert len(set(pids)) == 2 and os.getpid() not in set(pids)


def test_exec_wait_and_asyncio_forms():
    job = compute.for_(1, 3, lambda x: x)
    with pytest.raises(EPERM):
        job.wait()
    assert job.exec() == [1, 2, 3]
    assert job.wait() is job.results
    assert asyncio.run(compute.for_(1, 2, lambda x: -x).aio.exec()) == [-1, -2]
    assert asyncio.run(compute.for_(1, 2, lambda x: x * 5).aio.localExec(2)) == [5, 10]


def test_job_properties():
    job = compute.for_(1, 4, lambda x: x)
    assert job.id is None and job.status.runStatus == "new"
    assert set(job.public) == {"name", "description", "link"}
    assert job.requirements == {} and job.collateResults is True and job.meanSliceProfile is None
    job.public["name"] = "props"
    job.localExec(2)
    assert isinstance(job.id, str) and job.status == {"runStatus": "finished", "total": 4, "distributed": 4, "computed": 4}
    assert job.meanSliceProfile["cpuHours"] >= 0
    assert compute.status(job.id)["computed"] == 4 and compute.getJobInfo(job.id)["public"]["name"] == "props"
    assert [s["status"] for s in compute.getSliceInfo(job.id)] == ["computed"] * 4


# ---- events --------------------------------------------------------------------------------
def test_every_event_fires_with_its_payload_fields_on_the_callers_thread():
    job = compute.for_(1, 3, lambda x: (print("line", x), console.warn("careful"), work.emit("mine", {"x": x}), x * 10)[-1])  # noqa: F821
    seen, threads = {}, set()

    def record(name):
        def listener(*args):
            threads.add(threading.get_ident())
            seen.setdefault(name, []).append(args[0] if args else None)
        return listener

    for name in ("accepted", "readystatechange", "status", "result", "resultsUpdated", "complete", "console"):
        job.on(name, record(name))
    job.work.on("mine", record("mine"))
    results = job.localExec(2)
    assert threads == {threading.get_ident()}
    assert seen["accepted"][0].job is job
    assert seen["readystatechange"] == ["running", "finished"]
    status = seen["status"][-1]
    assert (status.total, status.distributed, status.computed, status.runStatus) == (3, 3, 3, "running")
    assert status.address == job.id
    results_ev = sorted(seen["result"], key=lambda ev: ev.sort)
    assert [(ev.sliceNumber, ev.sort, ev.input, ev.result) for ev in results_ev] == [(1, 0, 1, 10), (2, 1, 2, 20), (3, 2, 3, 30)]
    assert all(ev.job == job.id == ev.address for ev in results_ev)
    assert seen["complete"] == [results]
    logs = [ev for ev in seen["console"] if ev.get("level") == "log"]
    assert sorted((ev.sliceNumber, ev.message) for ev in logs) == [(1, "line 1"), (2, "line 2"), (3, "line 3")]
    assert {ev.level for ev in seen["console"] if "level" in ev} == {"log", "warn"}
    assert all(ev.sliceIndex == ev.sliceNumber - 1 for ev in logs)
    assert sorted(v["x"] for v in seen["mine"]) == [1, 2, 3]
    assert seen["resultsUpdated"]


def test_console_same_counter_dedupes_repeats():
    def chatty(x):
        for _ in range(5):
            console.log("same thing")  # noqa: F821
        console.log("different")  # noqa: F821
        return x
    job = compute.for_(0, 0, chatty)
    events = []
    job.on("console", events.append)
    job.localExec(2)
    assert [(ev.get("message"), ev.get("same")) for ev in events] == [("same thing", None), (None, 4), ("different", None)]


def test_error_event_and_exception_keep_type_traceback_and_slice():
    job = compute.for_(0, 4, raise_custom)
    errors = []
    job.on("error", errors.append)
    with pytest.raises(Custom) as info:
        job.localExec(2)
    exc = info.value
    assert (exc.code, exc.detail) == (42, "detail")
    assert isinstance(exc.__cause__, RemoteTraceback) and "raise Custom(42" in str(exc.__cause__)
    assert any("slice 3 (sliceIndex 2)" in note and "input 2" in note for note in exc.__notes__)
    ev = errors[0]
    assert (ev.sliceIndex, ev.sliceNumber, ev.name) == (2, 3, "Custom") and "raise Custom" in ev.stack and ev.message
    assert all(job.results[i] == i for i in range(5) if job.results.isAvailable(i))


def test_error_limit_tolerates_failures_and_failed_entries_raise():
    job = compute.for_(0, 5, lambda x: 1 // (x % 3))
    job.errorLimit = 2
    results = job.localExec(2)
    assert [results.isAvailable(i) for i in range(6)] == [False, True, True, False, True, True]
    with pytest.raises(ZeroDivisionError):
        results[3]
    job2 = compute.for_(0, 5, lambda x: 1 // (x % 3))
    job2.errorLimit = 1
    with pytest.raises(ETOOMANYERRORS):
        job2.localExec(2)


def test_exception_whose_args_cannot_be_pickled_arrives_as_slice_error_naming_its_type():
    def bad(x):
        class Local(Exception):
            pass
        raise Local("nope", threading.Lock())
    with pytest.raises(SliceError, match=r"Local.*nope.*could not be pickled|Local.*nope.*cannot pickle"):
        compute.for_(0, 0, bad).localExec(2)


def test_exception_with_an_unpicklable_attribute_keeps_its_type_and_the_other_attributes():
    def bad(x):
        class Local(Exception):
            pass
        err = Local("nope")
        err.handle, err.status = threading.Lock(), 503
        raise err
    with pytest.raises(Exception) as caught:
        compute.for_(0, 0, bad).localExec(2)
    assert type(caught.value).__name__ == "Local" and caught.value.args == ("nope",)
    assert caught.value.status == 503 and not hasattr(caught.value, "handle")
    if sys.version_info >= (3, 11):
        assert any("handle" in note for note in caught.value.__notes__)


def test_listener_errors_are_reported_and_do_not_break_the_job(caplog):
    job = compute.for_(1, 3, lambda x: x)
    job.on("result", lambda ev: 1 / 0)
    assert job.localExec(2) == [1, 2, 3]
    reports = [r for r in caplog.records if r.name == "dcplocal" and r.levelname == "ERROR"]
    assert len(reports) == 3 and "ZeroDivisionError" in caplog.text and "'result' listener" in caplog.text


def test_emitter_synonyms_once_off_decorator_and_unknown_names():
    job = compute.for_(1, 2, lambda x: x)
    calls = []
    a = lambda ev: calls.append("a")  # noqa: E731
    job.addListener("result", a)
    job.addEventListener("result", a)
    job.removeEventListener("result", a)
    job.once("result", lambda ev: calls.append("once"))

    @job.on("result")
    def deco(ev):
        calls.append("deco")
    assert job.listenerCount("result") == 3
    job.localExec(2)
    assert calls.count("a") == 2 and calls.count("once") == 1 and calls.count("deco") == 2
    job.removeListener("result", a).off("result", deco)
    assert job.listenerCount("result") == 0
    with pytest.raises(EINVAL):
        job.on("resutl", print)


def test_cancel_from_a_listener_keeps_results_so_far():
    import time
    job = compute.for_(0, 200, lambda x: (time.sleep(0.005), x)[1])
    job.on("result", lambda ev: ev.sliceNumber == 5 and job.cancel())
    cancelled = []
    job.on("cancel", cancelled.append)
    with pytest.raises(dcplocal.errors.JobCancelledError):
        job.localExec(2)
    assert cancelled and job.status.runStatus == "cancelled"
    kept = [i for i in range(201) if job.results.isAvailable(i)]
    assert len(kept) >= 5 and all(job.results[i] == i for i in kept)


# ---- result handles ------------------------------------------------------------------------
def test_result_handle_sequence_behaviour():
    results = compute.for_(1, 5, lambda x: x * 2).localExec(2)
    assert results == [2, 4, 6, 8, 10] and repr(results) == "[2, 4, 6, 8, 10]"
    assert results[-1] == 10 and results[1:3] == [4, 6] and len(results) == 5
    assert list(reversed(results)) == [10, 8, 6, 4, 2] and 6 in results and results.index(8) == 3
    with pytest.raises(TypeError):
        results[0] = 1
    with pytest.raises(ERANGE):
        results[5]


def test_result_handle_methods():
    results = compute.for_([3, 1, 3, 2], lambda x: x * 10).localExec(2)
    assert results.keys() == [3, 1, 3, 2] and results.values() == [30, 10, 30, 20]
    assert results.entries() == [(3, 30), (1, 10), (3, 30), (2, 20)]
    assert results.fromEntries() == {3: 30, 1: 10, 2: 20}
    assert results.key(3) == 2 and results.lookupValue(1) == 10
    with pytest.raises(ERANGE):
        results.lookupValue(99)
    with pytest.raises(ERANGE):
        results.key(4)
    assert results.isAvailable(0) and not results.isAvailable(4)
    assert results.list().to_dict() == {"sparse": [{"start": 1, "end": 4, "step": 1}]}
    assert [s["sliceNumber"] for s in results.stat({"start": 2, "end": 3})] == [2, 3]
    assert results.stat()[0]["computedTime"] >= results.stat()[0]["distributedTime"] > 0
    assert results.delete({"start": 2, "end": 2}).to_dict() == {"sparse": [{"start": 2, "end": 2, "step": 1}]}
    assert not results.isAvailable(1)
    with pytest.raises(ENOTAVAIL):
        results[1]
    assert "<not available>" in repr(results)


def test_fetch_all_emits_result_events():
    job = compute.for_(1, 3, lambda x: x)
    results = job.localExec(2)
    seen = []
    job.on("result", lambda ev: seen.append(ev.sliceNumber))
    assert results.fetch(None, "all") is results and sorted(seen) == [1, 2, 3]


def test_numeric_results_are_typed_and_mixed_results_fall_back():
    ints = compute.for_(0, 999, lambda x: x).localExec(2)
    array = np.asarray(ints)
    assert array.dtype == np.int64 and array.tolist() == list(range(1000)) and type(ints[5]) is int
    mixed = compute.for_(0, 3, lambda x: x if x % 2 else str(x)).localExec(2)
    assert mixed == ["0", 1, "2", 3]
    huge = compute.for_(0, 2, lambda x: 2**63 + x).localExec(2)  # beyond int64: stays exact
    assert huge == [2**63, 2**63 + 1, 2**63 + 2] and all(type(v) is int for v in huge)
    numpy_scalars = compute.for_(0, 2, lambda x: np.float32(x) / 2).localExec(2)
    assert np.asarray(numpy_scalars).dtype == np.float32 and isinstance(numpy_scalars[1], np.float32)


# ---- errors --------------------------------------------------------------------------------
def test_error_classes_are_typed_coded_and_picklable():
    import pickle
    assert issubclass(EINVAL, ValueError) and issubclass(ERANGE, IndexError) and issubclass(ETYPE, TypeError)
    for cls in (EINVAL, ERANGE, ETYPE, EPERM, ENOTAVAIL, SliceError, ETOOMANYERRORS):
        err = pickle.loads(pickle.dumps(cls("message")))
        assert type(err) is cls and isinstance(err, DCPError) and err.code in str(err) and "message" in str(err)
    died = pickle.loads(pickle.dumps(dcplocal.errors.WorkerDiedError("m", 3, -9, 4)))
    assert (died.slice_index, died.exitcode, died.attempts) == (3, -9, 4)


def test_sandbox_progress_forms_and_bad_progress():
    assert compute.for_(1, 3, lambda x: progress() and progress(0.5) and progress("75%") and x).localExec(2) == [1, 2, 3]  # noqa: F821
    job = compute.for_(1, 1, lambda x: progress(1.5))  # noqa: F821
    with pytest.raises(ValueError, match="between 0 and 1"):
        job.localExec(2)


def test_sandbox_names_are_importable_and_logging_becomes_console():
    def work_fn(x):
        import logging
        from dcplocal.sandbox import progress, work
        progress(1)
        logging.getLogger("w").warning("warned %d", x)
        return work.job.public["name"]
    job = compute.for_(1, 1, work_fn)
    job.public["name"] = "visible"
    events = []
    job.on("console", events.append)
    assert job.localExec(2) == ["visible"]
    assert [(ev.level, ev.message) for ev in events] == [("warn", "warned 1")]


@pytest.mark.parametrize("cores", [0, 2])
def test_np_array_of_results_is_a_writable_copy_and_asarray_a_view(cores):
    results = compute.for_(1, 3, lambda i: i * 1.5).localExec(cores)
    copied = np.array(results)
    copied[0] = -1
    assert copied.flags.writeable and results[0] == 1.5
    view = np.asarray(results)
    assert not view.flags.writeable and np.shares_memory(view, np.asarray(results))
    assert np.asarray(results, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError):
        np.array(compute.for_(1, 2, lambda i: str(i)).localExec(cores), copy=False)


@pytest.mark.parametrize("cores", [0, 2])
@pytest.mark.parametrize("work", [lambda i: (i, -i), lambda i: np.arange(3) + i, lambda i: [i, i, i]])
def test_asarray_of_results_has_the_shape_of_asarray_of_their_list(cores, work):
    results = compute.for_(0, 4, work).localExec(cores)
    as_array, as_list = np.asarray(results), np.asarray(list(results))
    assert as_array.shape == as_list.shape and as_array.dtype == as_list.dtype
    assert np.array_equal(as_array, as_list)


@pytest.mark.parametrize("name,value,error", [
    ("maxAttempts", "3", ETYPE), ("maxAttempts", 0, EINVAL), ("maxAttempts", True, ETYPE),
    ("errorLimit", -1, EINVAL), ("errorLimit", 1.5, ETYPE),
    ("progressTimeout", float("nan"), EINVAL), ("progressTimeout", float("inf"), EINVAL),
    ("sliceTimeout", -2, EINVAL), ("sliceTimeout", "5", ETYPE), ("sliceTimeout", True, ETYPE),
    ("maxResultBytes", 0, EINVAL), ("maxResultBytes", 1e6, ETYPE),
])
def test_job_options_are_validated_before_any_process_starts(name, value, error):
    job = compute.for_(0, 3, lambda i: i)
    setattr(job, name, value)
    for cores in (0, 2):
        with pytest.raises(error, match=name):
            job.localExec(cores)
    assert job.status.runStatus == "new"


def test_an_input_set_too_large_to_hold_its_results_is_a_typed_error():
    with pytest.raises(ERANGE, match="slices"):
        compute.for_(0, 10 ** 18, lambda i: i).localExec(2)


def test_a_work_source_with_a_syntax_error_fails_before_any_process_starts():
    with pytest.raises(EINVAL, match="does not compile"):
        compute.for_(0, 3, "def f(x):\n    return x +\n")
    assert compute.for_(0, 2, "lambda x: x * 2").localExec(2) == [0, 2, 4]


@pytest.mark.parametrize("documented", ["compute.for_", "compute.do", "dcplocal.Job.localExec",
                                        "dcplocal.Job.exec", "dcplocal.ResultHandle",
                                        "dcplocal.LocalRuntime"])
def test_help_shows_the_call_forms_with_an_example(documented):
    import pydoc
    target = pydoc.locate(documented.replace("compute.", "dcplocal.compute."))
    assert target is not None and "Example" in (target.__doc__ or ""), documented


@pytest.mark.parametrize("cores", [0, 2])
def test_a_cancel_just_before_a_run_counts_and_only_for_that_run(cores):
    compute.for_(0, 1, abs).localExec(cores)       # warm workers would finish it at once
    job = compute.for_(0, 9, lambda x: x)
    job.cancel()                                   # another thread, a moment before the run
    with pytest.raises(dcplocal.errors.JobCancelledError):
        job.localExec(cores)
    assert job.status.runStatus == "cancelled"
    assert list(job.localExec(cores)) == list(range(10))   # the next run is not cancelled
    job.cancel()                                   # on an ended job: nothing
    assert list(job.localExec(cores)) == list(range(10))


def test_results_pickle_as_the_list_they_equal():
    import pickle
    results = compute.for_(0, 4, lambda x: x * 2).localExec(2)
    assert pickle.loads(pickle.dumps(results)) == [0, 2, 4, 6, 8]
    nested = compute.for_([{"start": 1, "end": 2}, {"start": 1, "end": 2}], lambda i, j: i * j).localExec(2)
    assert pickle.loads(pickle.dumps(nested)) == [[1, 2], [2, 4]]
