"""The shared-memory result arena: its allocator, the client's mappings, and large results end to end.

Large results (numpy arrays of ARENA_MIN_BYTES and up) come back as views of the worker's arena.
What must hold: the values are exact and writable; a region is never reused while any view of it
is alive (a later job cannot overwrite an earlier job's results); dropped results are reused
rather than growing the arena; results outlive their worker and the runtime; idle segments are
given back after a while or beyond a size; a worker whose arena cannot be mapped falls back to the socket.
For inputs through the client's arena: a region is freed only when every holder let go
(`RegionHolds`); the end-to-end input tests are in test_large_inputs.py.
"""
from __future__ import annotations

import gc
import os
import signal
import time

import numpy as np
import pytest

import dcplocal
from dcplocal import compute
from dcplocal.arena import (ARENA_MIN_BYTES, Arena, ArenaMaps, RegionHolds, place_frames,
                            restore_frames)

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20


def _frame(value: int, nbytes: int) -> np.ndarray:
    return np.full(nbytes, value % 256, dtype=np.uint8)


# ---- the allocator, in this process ------------------------------------------------------------

def test_small_frames_are_not_placed_and_large_ones_are_page_aligned():
    arena = Arena(lambda seg, fd: True, min_bytes=4096, segment_bytes=16 * PAGE)
    assert arena.place(b"x" * 100) is None
    first = arena.place(_frame(1, 5000))
    second = arena.place(_frame(2, 4096))
    assert first[0] == second[0]                       # one segment
    assert first[2] == 0 and second[2] == 2 * PAGE     # 5000 bytes take two pages
    assert first[3] == 5000 and second[3] == 4096
    arena.close()


def test_placed_frames_are_left_out_of_the_message_and_restored_in_place():
    frames = [b"head", _frame(1, 8192), b"small", _frame(2, 100), _frame(3, 4096)]
    where = {}

    def place(data):
        where[len(where)] = bytes(data)
        return (len(where) - 1,)

    kept, placed = place_frames(frames, place, min_bytes=4096)
    assert [index for index, _ in placed] == [1, 4]
    assert [bytes(f) for f in kept] == [b"head", b"small", bytes(frames[3])]
    whole = restore_frames(kept, {index: where[key] for index, key in placed})
    assert [bytes(f) for f in whole] == [bytes(f) for f in frames]


def test_a_frame_placed_beyond_the_message_is_a_clear_error():
    # three kept frames and one placed one make four; index 9 would leave a hole and a frame over
    with pytest.raises(ValueError, match="frame 9"):
        restore_frames([b"K", b"s", b"x"], {9: None})


def test_released_neighbours_coalesce_so_a_large_region_fits_again():
    segments = []
    arena = Arena(lambda seg, fd: segments.append(seg) or True, min_bytes=1,
                  segment_bytes=8 * PAGE)
    small = [arena.place(_frame(i, PAGE)) for i in range(8)]   # fill the segment page by page
    assert len(segments) == 1
    arena.release([(seg, offset) for seg, _fd, offset, _n in small[2:6]])
    big = arena.place(_frame(9, 4 * PAGE))                       # fits only if 4 pages merged
    assert big[0] == segments[0] and big[2] == 2 * PAGE
    assert len(segments) == 1
    arena.close()


def test_a_full_arena_grows_and_announces_each_new_segment_once():
    announced = []
    arena = Arena(lambda seg, fd: announced.append((seg, fd)) or True, min_bytes=1,
                  segment_bytes=4 * PAGE)
    placed = [arena.place(_frame(i, 2 * PAGE)) for i in range(5)]
    assert [seg for seg, *_ in placed] == [1, 1, 2, 2, 3]
    assert [seg for seg, _fd in announced] == [1, 2, 3]
    huge = arena.place(_frame(0, 10 * PAGE))                     # larger than a segment
    assert huge[0] == 4 and arena.segments[4].size == 10 * PAGE
    arena.close()


def test_a_refused_segment_turns_the_arena_off():
    arena = Arena(lambda seg, fd: False, min_bytes=1)
    assert arena.place(_frame(1, PAGE)) is None
    assert not arena.enabled and not arena.segments
    assert arena.place(_frame(1, PAGE)) is None


def test_a_segment_that_cannot_be_made_leaves_the_frame_to_the_socket():
    import resource

    arena = Arena(lambda seg, fd: True, min_bytes=1, segment_bytes=1 << 40)   # 1 TiB
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (1 << 39, hard))               # 512 GiB of space
    try:
        assert arena.place(_frame(1, PAGE)) is None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert arena.enabled and not arena.segments        # the next frame may find room again


def test_only_wholly_free_segments_close_and_only_after_the_idle_time():
    arena = Arena(lambda seg, fd: True, min_bytes=1, segment_bytes=2 * PAGE, idle_seconds=5.0,
                  retain=1 << 30)
    a = arena.place(_frame(1, 2 * PAGE))
    b = arena.place(_frame(2, 2 * PAGE))
    arena.release([(a[0], a[2])])
    now = time.monotonic()
    assert arena.close_idle(now) == []                 # free, but not for long enough
    assert arena.close_idle(now + 6) == [a[0]]         # b is still in use
    assert set(arena.segments) == {b[0]}
    arena.close()


# ---- the client's mappings, over this process's own arena -------------------------------------

def test_a_region_is_released_only_when_its_last_view_dies():
    arena = Arena(lambda seg, fd: True, min_bytes=1)
    where = arena.place(np.arange(1000, dtype=np.float64))
    queued = []
    maps = ArenaMaps(lambda: queued.append(1))
    maps.map(b"w", os.getpid(), where[0], where[1])
    owner = maps.resolve(b"w", where)
    values = np.frombuffer(owner, dtype=np.float64)
    tail = values[500:]
    del owner, values
    gc.collect()
    assert maps.take_releases() == {} and not queued   # ``tail`` still sees the region
    assert tail[0] == 500.0
    tail[0] = -1.0                                     # writable, in the shared memory
    assert np.frombuffer(arena.segments[where[0]].map, dtype=np.float64, count=501)[500] == -1.0
    del tail
    assert maps.take_releases() == {b"w": [(where[0], where[2])]}
    assert queued == [1]
    arena.close()


# ---- end to end, with worker processes ----------------------------------------------------------

def big_array(x):
    """A result well above the arena threshold: 4 MiB of float64, every element ``x``."""
    import numpy as np
    return np.full(512 * 1024, float(x))


def _segments(rt: dcplocal.LocalRuntime):
    return rt.query(lambda broker: broker.arena_maps.segments())


def _run(rt, first, last, fn=big_array):
    job = compute.for_(first, last, fn)
    job.scheduler = rt
    return job.exec()


def test_large_results_are_exact_writable_views_of_the_arena():
    with dcplocal.LocalRuntime(workers=2) as rt:
        results = _run(rt, 0, 19)
        assert _segments(rt), "no large result came through the arena"
        for x, array in enumerate(results):
            assert array.shape == (512 * 1024,) and array.dtype == np.float64
            assert array[0] == x and array[-1] == x and np.all(array == x)
        results[3][:] = -1                             # each result is its own memory
        assert np.all(results[3] == -1) and np.all(results[4] == 4) and np.all(results[2] == 2)


def test_results_held_by_the_client_are_never_overwritten_by_later_jobs():
    with dcplocal.LocalRuntime(workers=1) as rt:
        kept = _run(rt, 0, 9)
        segments = _segments(rt)
        later = _run(rt, 100, 109)
        assert len(_segments(rt)) > len(segments)     # the arena grew instead of reusing
        assert [float(a[0]) for a in later] == list(range(100, 110))
        for x, array in enumerate(kept):
            assert np.all(array == x), f"result {x} was overwritten"


def test_dropped_results_are_reused_instead_of_growing_the_arena():
    with dcplocal.LocalRuntime(workers=1) as rt:
        results = _run(rt, 0, 9)                       # 40 MiB: one 64 MiB segment
        segments = _segments(rt)
        assert len(segments) == 1
        del results
        for job in range(3):                           # 120 MiB more, in the same segment
            results = _run(rt, job * 10, job * 10 + 9)
            assert all(np.all(a == job * 10 + x) for x, a in enumerate(results))
            del results
            assert _segments(rt) == segments


def test_results_outlive_their_worker_and_the_runtime():
    with dcplocal.LocalRuntime(workers=2) as rt:
        results = _run(rt, 0, 7)
        pids = rt.worker_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while set(rt.worker_pids()) & set(pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not set(rt.worker_pids()) & set(pids)
        assert all(np.all(a == x) for x, a in enumerate(results))
    assert all(np.all(a == x) for x, a in enumerate(results))   # runtime closed too


def test_recycled_workers_results_arrive_intact():
    with dcplocal.LocalRuntime(workers=1, recycle_slices=1) as rt:
        job = compute.for_(0, 5, lambda x: (os.getpid(), big_array(x)))
        job.scheduler = rt
        job.initialSliceProfile = {"cpuHours": 1.0}   # one slice per task: one worker each
        results = job.exec()
        assert len({pid for pid, _ in results}) == 6
        assert all(np.all(a == x) for x, (_, a) in enumerate(results))


def test_a_worker_whose_arena_cannot_be_mapped_uses_the_socket(monkeypatch, caplog):
    def refuse(self, worker, pid, seg_id, fd):
        raise PermissionError(13, "Permission denied", f"/proc/{pid}/fd/{fd}")

    monkeypatch.setattr(ArenaMaps, "map", refuse)
    with dcplocal.LocalRuntime(workers=2) as rt:
        results = _run(rt, 0, 9)
        assert all(np.all(a == x) for x, a in enumerate(results))
        assert _segments(rt) == []
    warnings = [r for r in caplog.records if r.name == "dcplocal"
                and "cannot map a worker's result arena" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


def test_results_below_the_threshold_travel_through_the_socket():
    with dcplocal.LocalRuntime(workers=1) as rt:
        small = ARENA_MIN_BYTES // 8 - 1               # float64 elements, just under
        results = _run(rt, 0, 3, lambda x: __import__("numpy").full(small, float(x)))
        assert [float(a[-1]) for a in results] == [0.0, 1.0, 2.0, 3.0]
        assert _segments(rt) == []


def test_segments_beyond_the_retained_size_close_at_once_oldest_first():
    arena = Arena(lambda seg, fd: True, min_bytes=1, segment_bytes=2 * PAGE, retain=4 * PAGE)
    placed = [arena.place(_frame(i, 2 * PAGE)) for i in range(4)]
    for index in (0, 2, 1):                            # freed in this order
        arena.release([(placed[index][0], placed[index][2])])
        time.sleep(0.002)
    # segments 2 and 1 were freed last: they are kept; segment 0 goes beyond 4 pages of free
    assert arena.close_idle() == [placed[0][0]]
    assert set(arena.segments) == {placed[1][0], placed[2][0], placed[3][0]}
    arena.close()


@pytest.mark.parametrize("value", [-1, float("inf"), "5", True])
def test_arena_idle_seconds_is_validated(value):
    with pytest.raises(dcplocal.errors.EINVAL, match="arena_idle_seconds"):
        dcplocal.LocalRuntime(arena_idle_seconds=value)


def _arena_fds(pid: int) -> list[str]:
    """The worker's open arena memfds; an fd closed between listing and reading is not open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:          # the worker closed it while we looked: the point here
            continue
        if "dcplocal-arena" in target:
            found.append(fd)
    return found


@pytest.mark.slow
def test_idle_segments_are_given_back_after_the_results_are_dropped():
    with dcplocal.LocalRuntime(workers=1, arena_idle_seconds=2) as rt:
        results = _run(rt, 0, 3)
        (pid,) = rt.worker_pids()
        assert _arena_fds(pid) and _segments(rt)
        del results
        deadline = time.monotonic() + 30               # 2 s idle, plus the worker's 1 s poll
        while (_arena_fds(pid) or _segments(rt)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _arena_fds(pid) == [] and _segments(rt) == []


# ---- large inputs through the client's arena ----------------------------------------------------

def test_region_holds_free_a_region_only_when_every_holder_let_go():
    arena = Arena(lambda seg, fd: True, min_bytes=1, segment_bytes=4 * PAGE)
    seg, _fd, offset, _n = arena.place(_frame(1, PAGE))
    region = (seg, offset)
    holds = RegionHolds(arena)
    holds.hold([region])                   # the chunk
    holds.hold([region], b"w1")            # sent to w1 twice, and to w2 once
    holds.hold([region], b"w1")
    holds.hold([region], b"w2")
    holds.drop([region], b"w1")
    holds.drop([region], b"w3")            # a stranger's release changes nothing
    holds.drop([region])                   # the chunk is done
    assert len(holds) == 1 and arena.segments[seg].used
    holds.drop_holder(b"w1")               # w1 died holding one copy
    assert len(holds) == 1
    holds.drop([region], b"w2")
    holds.drop([region], b"w2")            # a repeated release cannot go below zero
    assert len(holds) == 0 and not arena.segments[seg].used
    arena.close()


# ---- regressions found in review ----------------------------------------------------------------

def test_a_free_segment_too_big_to_keep_closes_alone():
    arena = Arena(lambda seg, fd: True, min_bytes=1, segment_bytes=2 * PAGE, retain=4 * PAGE)
    small = arena.place(_frame(1, 2 * PAGE))
    huge = arena.place(_frame(2, 8 * PAGE))                 # beyond ``retain`` on its own
    arena.release([(small[0], small[2])])
    time.sleep(0.002)
    arena.release([(huge[0], huge[2])])                     # freed last: looked at first
    assert arena.close_idle() == [huge[0]]                  # the small one still fits
    arena.close()


def test_a_late_result_naming_an_unmapped_segment_is_dropped_not_fatal(capfd, tmp_path):
    import threading

    import zmq

    from dcplocal import codec, protocol
    from dcplocal.peerauth import plain_client

    go = str(tmp_path / "go")

    def wait_for_go(x):
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        return x

    with dcplocal.LocalRuntime(workers=1) as rt:
        job = compute.for_(0, 3, wait_for_go)
        job.scheduler = rt
        outcome = {}
        runner = threading.Thread(target=lambda: outcome.setdefault("results", list(job.exec())))
        runner.start()
        peer = zmq.Context.instance().socket(zmq.DEALER)
        peer.setsockopt(zmq.IDENTITY, b"a-forgotten-worker")
        # a peer the runtime let in (peerauth): its messages reach the broker's handling
        plain_client(peer, "a-forgotten-worker",
                     rt.query(lambda b: b.tokens.issue("a-forgotten-worker")))
        peer.connect(rt.query(lambda b: b.address))
        late = protocol.TaskDone(12, "gone", 0, 1, 0.01, 0, False, ((2, 1, 9, 0, 4096),))
        peer.send_multipart([codec.encode(late), b"A", b"<f8|native"])   # frame 2 is placed
        deadline = time.monotonic() + 30          # the job runs until it is handled
        while not rt.stats()["dropped_messages"] and time.monotonic() < deadline:
            time.sleep(0.01)
        open(go, "w").close()
        runner.join(30)
        peer.close(0)
        assert outcome.get("results") == [0, 1, 2, 3] and rt.broken is None
        assert "a-forgotten-worker" in rt.stats()["last_dropped"]


def test_under_a_memory_limit_results_the_client_keeps_do_not_use_the_workers_address_space():
    def address_space(x):
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")

    with dcplocal.LocalRuntime(workers=1) as rt:
        job = compute.for_(0, 0, address_space)
        job.scheduler = rt
        baseline = job.exec()[0]
    with dcplocal.LocalRuntime(workers=1, memory_limit=baseline + (150 << 20)) as rt:
        kept = []
        for first in range(0, 16, 4):                        # 16 x 24 MiB kept: 384 MiB
            job = compute.for_(first, first + 3, lambda x: __import__("numpy").full(3 << 20, float(x)))
            job.scheduler = rt
            kept.append(job.exec())
        assert _segments(rt)                                 # through the arena all the same
    assert [float(r[0]) for results in kept for r in results] == [float(x) for x in range(16)]
