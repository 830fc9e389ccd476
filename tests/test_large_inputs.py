"""Large inputs of data jobs: read by the workers from the client's memory, or through its arena.

A worker that may read the client's memory (process_vm_readv; allowed on this machine) copies a
task's large input buffers itself; one that may not gets them as copy-on-write regions of the
client's shared-memory arena; one that may do neither, through the socket. Every test runs on
the first two paths (``path`` fixture), and checks which one the job took. What must hold on
each: exact inputs, a work function's writes to its input stay its own (a retry after a death
sees the input as it was sent), nothing stays held after the job, cancelled or not.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import dcplocal
from dcplocal import codec, compute, remote, transfers
from dcplocal.errors import JobCancelledError

ELEMENTS = 256 * 1024          # 2 MiB of float64: above the arena/remote threshold


# ---- the parts, in this process ------------------------------------------------------------------

def test_a_process_reads_exact_bytes_from_an_address_and_a_bad_address_is_an_oserror():
    source = np.arange(100_000, dtype=np.float64)
    address, nbytes = remote.locate(memoryview(source))
    copy = remote.read(os.getpid(), address, nbytes)
    assert copy.flags.writeable and np.array_equal(copy.view(np.float64), source)
    with pytest.raises(OSError):
        remote.read(os.getpid(), 8, 16)          # the first page is never mapped


def test_the_probe_tells_a_reader_from_a_wrong_guess():
    probe = remote.Probe()
    assert remote.can_read(os.getpid(), probe.address, probe.expected.hex())
    assert not remote.can_read(os.getpid(), probe.address, bytes(16).hex())
    assert not remote.can_read(os.getpid(), 0, probe.expected.hex())


def test_a_chunk_unpacks_any_span_of_its_items_fetching_each_items_frames_only_as_it_is_reached():
    items = [np.full(ELEMENTS, float(i)) if i % 2 else ("small", i) for i in range(7)]
    frames = codec.pack_inputs(items)
    fetched = []

    def fetch(index):
        fetched.append(index)
        return frames[index]

    got = codec.unpack_inputs(frames, 3, 6, fetch)       # items 3, 4, 5: two arrays
    assert fetched == [0, 1, 2]                          # the index and stream, no buffer yet
    first = next(got)
    assert np.all(first == 3.0) and len(fetched) == 4    # item 3's buffer, not item 5's
    assert next(got) == ("small", 4) and len(fetched) == 4
    assert np.all(next(got) == 5.0) and len(fetched) == 5
    assert list(got) == []
    assert len(set(fetched)) == len(fetched)             # no frame asked for twice


class Unpicklable:
    """Pickles anywhere, fails to unpickle anywhere (by a function every process has)."""

    def __reduce__(self):
        return (int, ("refuses to load",))


def test_an_input_that_cannot_be_unpickled_fails_alone_and_the_next_ones_still_come():
    frames = codec.pack_inputs([Unpicklable(), 7, np.full(ELEMENTS, 2.0)])
    got = codec.unpack_inputs(frames, 0, 3)
    with pytest.raises(ValueError, match="refuses to load"):
        next(got)
    assert next(got) == 7 and np.all(next(got) == 2.0)


class StopsWhenLoaded:
    """Pickles anywhere; unpickling raises StopIteration (as a __setstate__ calling next() might)."""

    def __reduce__(self):
        return (next, (iter(()),))


def test_an_input_whose_loading_raises_stopiteration_does_not_end_the_items():
    got = codec.unpack_inputs(codec.pack_inputs(["a", StopsWhenLoaded(), "c"]), 0, 3)
    assert next(got) == "a"
    with pytest.raises(RuntimeError, match="StopIteration") as caught:
        next(got)                       # a StopIteration here would end the worker's slice loop
    assert isinstance(caught.value.__cause__, StopIteration)
    assert next(got) == "c"


def test_numeric_chunks_travel_typed_and_come_back_as_python_numbers():
    frames = codec.pack_inputs([1, 2, 3, 2 ** 40])
    assert bytes(frames[0]) == codec.KIND_ARRAY
    assert list(codec.unpack_inputs(frames, 1, 4)) == [2, 3, 2 ** 40]
    assert all(type(x) is int for x in codec.unpack_inputs(frames, 0, 4))
    huge = codec.pack_inputs([1, 2 ** 70])                 # beyond int64: pickled, exact
    assert list(codec.unpack_inputs(huge, 0, 2)) == [1, 2 ** 70]


# ---- end to end, on each path --------------------------------------------------------------------

@pytest.fixture(params=["remote", "arena"])
def path(request, monkeypatch):
    """Which way large inputs go; the runtime is warmed so its workers have said what they can."""
    if request.param == "arena":  # workers are told of no probe: they cannot read our memory
        monkeypatch.setattr(remote.Probe, "args", lambda self: [])
    return request.param


def _runtime(workers: int = 2) -> dcplocal.LocalRuntime:
    rt = dcplocal.LocalRuntime(workers=workers)
    job = compute.for_(0, 1, lambda x: x)
    job.scheduler = rt
    job.exec()                                              # every worker is Ready now
    return rt


def _state(rt):
    """(workers reading our memory, workers mapping our arena, arena segments, regions held,
    regions in use), once no region is held or 10 s pass: a worker says it let go of a task's
    inputs just after sending the task's results."""
    def read(b):
        return (len(b.inputs.reads), len(b.inputs.maps), len(b.inputs.arena.segments),
                len(b.inputs.holds), sum(len(s.used) for s in b.inputs.arena.segments.values()))
    deadline = time.monotonic() + 10
    state = rt.query(read)
    while (state[3] or state[4]) and time.monotonic() < deadline:
        time.sleep(0.01)
        state = rt.query(read)
    return state


def _check_path(rt, path, workers=2):
    reads, maps, segments, held, used = _state(rt)
    assert held == 0 and used == 0
    if path == "remote":
        assert reads == workers and segments == 0          # nothing was copied here
    else:
        assert reads == 0 and maps == workers and segments >= 1


def array_head(a):
    return float(a[0]), float(a[-1])


def _inputs(base, count=12):
    return [np.full(ELEMENTS, float(base + i)) for i in range(count)]


def test_large_inputs_arrive_exactly_and_nothing_stays_held(path):
    with _runtime() as rt:
        for base in (0, 100, 200):
            job = compute.for_(_inputs(base), array_head)
            job.scheduler = rt
            assert list(job.exec()) == [(base + i, base + i) for i in range(12)]
            _check_path(rt, path)
        if path == "arena":
            assert _state(rt)[2] == 1                       # 24 MiB a job: reused, never grown


def mutate_then_report(a):
    a[:] = -1.0                                             # legal: a slice's input is its own copy
    return float(a.sum())


def test_a_work_function_writing_its_input_changes_nothing_outside_its_slice(path):
    inputs = _inputs(0)
    with _runtime() as rt:
        job = compute.for_(inputs, mutate_then_report)
        job.scheduler = rt
        assert list(job.exec()) == [-float(ELEMENTS)] * 12
        job = compute.for_(_inputs(50), array_head)         # the same memory, written afresh
        job.scheduler = rt
        assert list(job.exec()) == [(50 + i, 50 + i) for i in range(12)]
        _check_path(rt, path)
    assert all(np.all(a == i) for i, a in enumerate(inputs))   # the caller's arrays, untouched


def test_a_retry_reads_the_input_as_it_was_sent_even_after_the_dead_attempt_wrote_it(path, tmp_path):
    marker = str(tmp_path / "died")

    def write_then_die_once(a):
        a[:] = -1.0
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return float(a[0])

    with _runtime(workers=1) as rt:
        job = compute.for_([np.full(ELEMENTS, 7.0)], lambda a: (float(a[0]), write_then_die_once(a)))
        job.scheduler = rt
        assert list(job.exec()) == [(7.0, -1.0)]          # the second attempt saw 7.0, not -1.0
        assert os.path.exists(marker)
        held, used = _state(rt)[3:]
        assert held == 0 and used == 0                      # the dead worker's hold was dropped


def test_a_cancelled_streaming_job_leaves_nothing_held(path):
    def stream():
        for i in range(400):                                # 800 MiB if it all went out
            yield np.full(ELEMENTS, float(i))

    with _runtime() as rt:
        job = compute.for_(stream(), array_head)
        job.scheduler = rt
        job.on("result", lambda ev: ev.sliceNumber == 20 and job.cancel())
        with pytest.raises(JobCancelledError):
            job.exec()
        held, used = _state(rt)[3:]
        assert held == 0 and used == 0


def test_workers_that_can_neither_read_nor_map_our_memory_get_inputs_by_socket(monkeypatch):
    monkeypatch.setattr(remote.Probe, "args", lambda self: [])
    monkeypatch.setattr(transfers.InputTransport, "_make_probe", lambda self: -1)
    with _runtime() as rt:
        job = compute.for_(_inputs(0), array_head)
        job.scheduler = rt
        assert list(job.exec()) == [(i, i) for i in range(12)]
        reads, maps, _segments, held, used = _state(rt)
        assert reads == 0 and maps == 0 and held == 0 and used == 0


def test_a_job_that_will_not_load_in_the_worker_holds_no_input(path):
    class Unloadable:
        def __reduce__(self):
            return (_refuse, ())

    with _runtime() as rt:
        for _ in range(2):
            job = compute.for_(_inputs(0, 4), lambda a, arg: a[0], [Unloadable()])
            job.scheduler = rt
            with pytest.raises(RuntimeError):
                job.exec()
            held, used = _state(rt)[3:]
            assert held == 0 and used == 0


def _refuse():
    raise RuntimeError("this argument does not unpickle in a worker")


def test_failing_slices_let_go_of_their_inputs_at_once(path):
    def fail(a):
        raise ValueError(f"no: {a[0]}")

    with _runtime() as rt:
        job = compute.for_(_inputs(0, 6), fail)
        job.scheduler = rt
        job.errorLimit = 6                                   # every failure tolerated
        results = job.exec()
        with pytest.raises(ValueError, match="no: 5.0"):
            results[5]
        held, used = _state(rt)[3:]
        assert held == 0 and used == 0


def _exec_in_few_tasks(rt, inputs, fn):
    """Run a data job whose every slice may fail, with no 1-slice measuring task: the first task
    takes at least a guided tail's share of the items, so a bad item shares it with good ones."""
    job = compute.for_(inputs, fn)
    job.scheduler = rt
    job.errorLimit = len(inputs)
    job.initialSliceProfile = {"cpuHours": 1e-11}
    return job.exec()


@pytest.mark.parametrize("bad", [
    {0: (Unpicklable, ValueError, "refuses to load")},
    {4: (StopsWhenLoaded, RuntimeError, "StopIteration"),
     7: (Unpicklable, ValueError, "refuses to load")},
], ids=["first", "mid-chunk"])
def test_inputs_that_will_not_unpickle_in_the_worker_fail_only_their_own_slices(path, bad):
    inputs = _inputs(0)
    for index, (kind, _error, _message) in bad.items():
        inputs[index] = kind()
    with _runtime() as rt:
        results = _exec_in_few_tasks(rt, inputs, array_head)
        for index, (_kind, error, message) in bad.items():
            with pytest.raises(error, match=message):
                results[index]
        good = [i for i in range(12) if i not in bad]
        assert [results[i] for i in good] == [(i, i) for i in good]
        held, used = _state(rt)[3:]
        assert held == 0 and used == 0


def fails_with_a_cause_on_the_last(a):
    if a[0] == 5.0:
        try:
            {}["missing"]
        except KeyError as exc:
            raise ValueError("with a cause") from exc
    return float(a[0])


def test_an_exception_with_a_cause_does_not_keep_its_input_held(path):
    # the cause's traceback holds the work function's frame, and that frame holds the input
    with _runtime() as rt:
        results = _exec_in_few_tasks(rt, _inputs(0, 6), fails_with_a_cause_on_the_last)
        with pytest.raises(ValueError, match="with a cause"):
            results[5]
        assert [results[i] for i in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
        held, used = _state(rt)[3:]
        assert held == 0 and used == 0


def test_a_chunk_of_many_items_still_finds_its_large_buffers(path):
    count = 20_000                                  # its index frame alone is over 256 KiB

    def stream():
        for i in range(count):
            yield np.full(ELEMENTS, 7.0) if i in (0, count - 1) else i

    with _runtime() as rt:
        job = compute.for_(stream(), lambda x: float(np.asarray(x).sum()))
        job.scheduler = rt
        job.initialSliceProfile = {"cpuHours": 1e-11}   # huge batches: chunks of ~16k+ items
        results = job.exec()
        assert results[0] == results[count - 1] == 7.0 * ELEMENTS
        assert results[1] == 1.0 and results[count - 2] == count - 2
        held, used = _state(rt)[3:]
        assert held == 0 and used == 0


def _wait_for(path_, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path_) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_task_left_over_from_an_ended_job_reads_its_inputs_intact(path, tmp_path):
    """A cancelled job's task can sit queued behind another job's running task past its job's end;
    when it runs, the inputs it reads must still be there, though the caller dropped them."""
    import gc
    import threading

    go, seen = str(tmp_path / "go"), str(tmp_path / "seen")

    def hold_until_go(i):
        open(str(tmp_path / f"started{i}"), "w").close()
        _wait_for(go)
        return i

    def record(a):
        with open(seen, "a") as out:
            out.write(f"{float(a[0])} {float(a[-1])}\n")
        return 0

    with _runtime() as rt:
        busy = compute.for_(range(2), hold_until_go)
        busy.scheduler = rt
        done = {}
        runner = threading.Thread(target=lambda: done.setdefault("busy", busy.exec()))
        runner.start()
        for i in range(2):
            _wait_for(str(tmp_path / f"started{i}"))      # both workers are held by ``busy``
        data = [np.full(ELEMENTS, 7.0) for _ in range(4)]
        left = compute.for_(data, record)
        left.scheduler = rt
        left.initialSliceProfile = {"cpuHours": 1e-9}     # short: queued behind running tasks
        stopped = threading.Thread(target=lambda: pytest.raises(JobCancelledError, left.exec))
        stopped.start()
        deadline = time.monotonic() + 10
        while not rt.query(_tasks_holding_inputs) and time.monotonic() < deadline:
            time.sleep(0.01)                               # until its tasks are queued
        left.cancel()
        stopped.join(10)
        del data, left                                     # the caller lets go of its inputs
        gc.collect()
        junk = [np.full(ELEMENTS, -1.0) for _ in range(8)]  # and reuses the memory
        open(go, "w").close()
        runner.join(30)
        assert list(done["busy"]) == [0, 1]
        deadline = time.monotonic() + 10                     # until the left-over tasks report
        while rt.query(_tasks_holding_inputs) and time.monotonic() < deadline:
            time.sleep(0.01)
        _state(rt)
        lines = open(seen).read().split("\n") if os.path.exists(seen) else []
        assert [line for line in lines if line] and all(line == "7.0 7.0" for line in lines if line)
        assert rt.query(_tasks_holding_inputs) == 0
        del junk


def _tasks_holding_inputs(broker) -> int:
    """Task messages whose inputs a worker may still read (either path)."""
    remote = sum(map(len, broker.inputs.remote_holds.values()))
    arena = sum(sum(counter.values()) for holder, counter in broker.inputs.holds._by_holder.items()
                if holder is not None)
    return remote + arena


def test_an_input_region_that_cannot_be_mapped_is_a_slice_error_and_is_let_go(monkeypatch):
    monkeypatch.setattr(remote.Probe, "args", lambda self: [])   # the arena path

    def address_space(x):
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")

    with _runtime(workers=1) as rt:
        job = compute.for_(0, 0, address_space)
        job.scheduler = rt
        baseline = job.exec()[0]
    with dcplocal.LocalRuntime(workers=1, memory_limit=baseline + (120 << 20)) as rt:
        job = compute.for_([np.full(40 << 20, 3.0)], array_head)  # 320 MiB: cannot be mapped
        job.scheduler = rt
        with pytest.raises(OSError):
            job.exec()
        held, used = _state(rt)[3:]
        assert held == 0 and used == 0
