"""Surviving hostile conditions (issue 13): bursts of worker deaths, a worker interpreter
that cannot start, stopped workers, rogue and silent peers, malformed messages, a work function
that reuses fds 0-2.

Real processes, real signals, real sockets. Every job's results are checked against serial
ground truth, exactly; conftest fails a test that leaves a process behind, and a faulthandler
dump turns a hang into a readable failure.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest

import dcplocal
from dcplocal import compute, health
from dcplocal.errors import RuntimeBrokenError, WorkerDiedError

import faultkit


@pytest.fixture(autouse=True)
def hang_guard():
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---- a burst of deaths is not a broken runtime (item 4) -----------------------------------
def test_killing_a_worker_and_its_next_three_replacements_loses_nothing():
    with dcplocal.LocalRuntime(workers=2) as rt:
        job = compute.for_(0, 1999, faultkit.brief)
        job.scheduler = rt
        victims: list = []
        started = threading.Event()
        job.on("result", lambda ev: started.set())

        def killer():
            started.wait(60)
            known = set(rt.worker_pids())
            pid = known.pop()
            os.kill(pid, signal.SIGKILL)
            victims.append(pid)
            known = set(rt.worker_pids()) | set(rt.helper_pids()) | set(victims)  # not the reaper
            deadline = time.monotonic() + 30
            while len(victims) < 4 and time.monotonic() < deadline:
                for pid in faultkit.new_children(known):  # a replacement, still starting
                    known.add(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        victims.append(pid)
                    except ProcessLookupError:
                        pass
                time.sleep(0.001)
        thread = threading.Thread(target=killer)
        thread.start()
        try:
            results = job.exec()
        finally:
            thread.join()
        assert len(victims) == 4
        assert list(results) == [x * 2 for x in range(2000)]
        assert all(faultkit.wait_for(lambda: gone(pid), 5) for pid in victims)


@pytest.mark.slow
def test_a_2m_slice_job_with_a_worker_sigkilled_every_200_ms_is_exact():
    with dcplocal.LocalRuntime(workers=2) as rt:
        job = compute.for_(0, 1_999_999, faultkit.chaos_square)
        job.scheduler = rt
        with faultkit.killing_workers(rt, 0.2, seed=2026) as kills:
            results = job.exec()
        x = np.arange(2_000_000, dtype=np.int64)
        assert np.array_equal(np.asarray(results), (496 * x) % 1_000_003)
        assert kills  # several: the job is seconds of work, a kill comes every 0.2 s


def test_a_runtime_whose_workers_cannot_start_fails_clearly_within_the_window(monkeypatch):
    monkeypatch.setattr(health, "NO_WORKER_SECONDS", 2.0)
    rt = dcplocal.LocalRuntime(workers=2)
    rt.worker_args.append("--no-such-option")  # every worker exits at once (argparse: 2)
    with rt:
        job = compute.for_(0, 9, lambda x: x)
        job.scheduler = rt
        started = time.monotonic()
        with pytest.raises(RuntimeBrokenError, match="no worker process stayed alive") as info:
            job.exec()
        assert "exit code 2" in str(info.value)
        assert time.monotonic() - started >= 2.0  # not before the window


def test_results_reported_before_the_runtime_breaks_are_all_kept(monkeypatch):
    monkeypatch.setattr(health, "NO_WORKER_SECONDS", 1.0)
    with dcplocal.LocalRuntime(workers=2) as rt:
        job = compute.for_(0, 999, faultkit.steady)
        job.scheduler = rt
        seen = []

        def break_workers(ev):
            seen.append(ev.sliceNumber - 1)
            if len(seen) == 30:  # from now on no worker can start, and the running ones die
                rt.call(lambda b: b.supervisor.worker_args.append("--no-such-option"))
                rt.query(lambda b: None)  # (after that change)
                for pid in rt.worker_pids():
                    os.kill(pid, signal.SIGKILL)
        job.on("result", break_workers)
        with pytest.raises(RuntimeBrokenError):
            job.exec()
        kept = [i for i in range(1000) if job.results.isAvailable(i)]
        assert set(seen) <= set(kept) and len(kept) >= 30
        assert [job.results[i] for i in kept] == [i * 2 for i in kept]


# ---- stopped is not slow (item 7) ----------------------------------------------------------
def test_a_stopped_worker_is_killed_and_its_slices_rerun_without_an_attempt():
    with dcplocal.LocalRuntime(workers=2) as rt:
        job = compute.for_(0, 199, faultkit.steady)
        job.scheduler = rt
        job.progressTimeout = 0.5   # the stopped worker's slice must not be blamed for it
        job.maxAttempts = 1         # one charged attempt would fail the slice
        errors, stopped = [], []
        job.on("error", errors.append)

        def stop_one(ev):
            if ev.sliceNumber >= 20 and not stopped:
                pid = next(iter(set(rt.worker_pids()) - {None}))
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        job.on("result", stop_one)
        try:
            results = job.exec()
        finally:
            for pid in stopped:  # never leave a stopped process, even if the test fails
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
        assert list(results) == [x * 2 for x in range(200)]
        assert errors == []
        assert stopped and faultkit.wait_for(lambda: gone(stopped[0]), 5)
        assert rt.stats()["stopped_workers_lost"] >= 1


def test_a_slice_in_a_long_gil_holding_call_is_not_taken_for_stopped():
    import re
    # re on a catastrophic pattern holds the GIL for ~1.5 s: heartbeats stop, the process runs
    text = "a" * 25 + "b"
    work = lambda x: (x, re.match(r"(a+)+$", text) is None)[0] if x == 1 else x  # noqa: E731
    with dcplocal.LocalRuntime(workers=2) as rt:
        job = compute.for_(0, 3, work)
        job.scheduler = rt
        job.maxAttempts = 1
        assert list(job.exec()) == [0, 1, 2, 3]
        assert rt.stats()["stopped_workers_lost"] == 0


# ---- rogue and silent peers, malformed messages (item 8) ----------------------------------
def test_malformed_and_unexpected_messages_are_dropped_and_counted(caplog):
    with dcplocal.LocalRuntime(workers=2) as rt:
        with faultkit.rogue_peer(rt) as peer:
            bad = [b"\x00garbage", b"[]", b'{"a": 1}', b"[1, \"R\", 1]",  # version 1
                   faultkit.header("?", 1),                                  # unknown op
                   faultkit.header("D", "x", "j", 0, 1, 0.1, 0),             # wrong types
                   faultkit.header("D", 1, "j", 0, 1, float("nan"), 0),      # NaN elapsed
                   faultkit.header("T", 1, "j", 0, 1),                       # broker's own op
                   faultkit.header("E", "job", 0, "x"),                      # event, no task
                   faultkit.header("H", 1, 0, "x", 0, None, 0)]              # wrong types
            for frame in bad:
                peer.send(frame)
            peer.send_multipart([b"", b"trailing"])                         # empty header
            peer.send(faultkit.header("D", 424242, "j", 0, 1, 0.1, 0))       # a task never given
            for fd in (99999, 0, -1):                                        # bogus fds
                peer.send(faultkit.header("O", 7, fd))
            assert faultkit.wait_for(lambda: rt.stats()["dropped_messages"] >= len(bad) + 1)
            for _ in range(3):                                               # each answered
                assert peer.poll(10_000)
                reply = peer.recv_multipart()
                assert b'"M"' in reply[0] and b"false" in reply[0]
            job = compute.for_(0, 99, lambda x: x * x)
            job.scheduler = rt
            assert list(job.exec()) == [x * x for x in range(100)]
            stats = rt.stats()
        assert stats["dropped_messages"] == len(bad) + 1
        assert stats["stale_results"] >= 1
        assert rt.broken is None
    logged = [r for r in caplog.records if r.name == "dcplocal" and "dropped" in r.getMessage()]
    assert len(logged) == 1  # logged once, counted always


def test_a_real_workers_segment_with_a_bogus_fd_is_refused_not_fatal():
    from dcplocal import protocol
    with dcplocal.LocalRuntime(workers=1) as rt:
        warm = compute.for_(0, 3, lambda x: x)
        warm.scheduler = rt
        assert list(warm.exec()) == [0, 1, 2, 3]  # a worker is Ready
        identity = rt.query(lambda b: next(iter(b.ready)))
        for fd in (99999, -1, 0, 1, 2, 3):  # absent, negative, /dev/null, pipes or ttys, ...
            answer = rt.query(lambda b: b._map_segment(identity, protocol.SegmentOpened(900 + fd, fd)))
            assert answer is False
        job = compute.for_(0, 9, lambda x: x * 3)
        job.scheduler = rt
        assert list(job.exec()) == [x * 3 for x in range(10)]
        assert rt.broken is None


def test_a_peer_that_takes_tasks_and_goes_silent_is_taken_for_lost(monkeypatch):
    monkeypatch.setattr(health, "SILENT_PEER_SECONDS", 1.0)
    with dcplocal.LocalRuntime(workers=1) as rt:
        with faultkit.rogue_peer(rt) as peer:
            peer.send(faultkit.header("R", os.getpid(), False, False))
            peer.send(faultkit.header("R", os.getpid(), False, False))     # Ready again: dropped
            job = compute.for_(0, 199, faultkit.steady)
            job.scheduler = rt
            job.maxAttempts = 1
            results = job.exec()
            assert list(results) == [x * 2 for x in range(200)]
            stats = rt.stats()
            assert peer.poll(0)  # it was given work, and never answered
        assert stats["silent_workers_lost"] >= 1
        assert stats["dropped_messages"] == 1


def test_a_peer_whose_result_does_not_match_its_task_is_lost_at_once(monkeypatch):
    from dcplocal import codec, protocol
    monkeypatch.setattr(health, "SILENT_PEER_SECONDS", 3600.0)  # only the mismatch can free it
    with dcplocal.LocalRuntime(workers=1) as rt:
        with faultkit.rogue_peer(rt) as peer:
            peer.send(faultkit.header("R", os.getpid(), False, False))
            job = compute.for_(0, 99, faultkit.brief)
            job.scheduler = rt
            job.maxAttempts = 1
            answered = threading.Event()

            def answer_wrongly():
                while peer.poll(30_000):
                    msg = codec.decode(peer.recv_multipart()[0])
                    if isinstance(msg, protocol.Task):
                        peer.send(faultkit.header("D", msg.task_id, msg.job_id, msg.first + 1,
                                                  msg.count, 0.001, 0))
                        answered.set()
                        return
            thread = threading.Thread(target=answer_wrongly)
            thread.start()
            results = job.exec()
            thread.join()
            assert answered.is_set()
            assert list(results) == [x * 2 for x in range(100)]
            assert rt.stats()["dropped_messages"] == 1


# ---- descriptors the work function cannot reach (item 5) ----------------------------------
def test_a_work_function_that_reuses_fds_0_to_2_cannot_write_into_held_results(tmp_path):
    with dcplocal.LocalRuntime(workers=1) as rt:  # one worker: the slices run in order on it
        job = compute.for_(0, 7, faultkit.fd_vandal, [str(tmp_path)])
        job.scheduler = rt
        job.initialSliceProfile = {"cpuHours": 1.0}  # one slice per task, run one after another
        results = job.exec()
        held = [np.array(r) for r in results]  # copies, compared again after the scribbling
        for x in range(8):
            assert np.array_equal(results[x], faultkit.big_result(x)), f"slice {x} corrupted"
        assert all(np.array_equal(h, faultkit.big_result(x)) for x, h in enumerate(held))
        assert (tmp_path / "one").stat().st_size > 0  # the writes went to the work function's files


# ---- a bad JobInfo fails its job, not the runtime (item 9, scheduler side) ----------------
def test_intake_knows_every_field_type_of_every_message():
    from dcplocal import intake, protocol
    for cls in protocol._REGISTRY.values():
        assert intake._field_checks(cls) or cls is protocol.Stop


@pytest.mark.parametrize("option,value,error", [("maxAttempts", "3", "ETYPE"),
                                                ("progressTimeout", float("nan"), "EINVAL")])
def test_an_invalid_job_option_fails_that_job_and_not_the_runtime(option, value, error):
    from dcplocal import errors
    with dcplocal.LocalRuntime(workers=2) as rt:
        job = compute.for_(0, 9, lambda x: x)
        job.scheduler = rt
        setattr(job, option, value)
        with pytest.raises(getattr(errors, error)):
            job.exec()
        assert rt.broken is None
        job2 = compute.for_(0, 9, lambda x: x + 1)
        job2.scheduler = rt
        assert list(job2.exec()) == list(range(1, 11))


def test_a_job_the_scheduler_refuses_ends_failed_and_can_run_again(monkeypatch):
    """The client checks options first; should a bad one still reach the scheduler, the job ends
    (failed, not left "running") and the same handle runs again once fixed."""
    from dcplocal import errors
    from dcplocal.job import Job
    monkeypatch.setattr(Job, "_check_options", lambda self: None)
    with dcplocal.LocalRuntime(workers=2) as rt:
        job = compute.for_(0, 9, lambda x: x)
        job.scheduler = rt
        job.maxAttempts = "3"
        with pytest.raises(errors.EINVAL):
            job.exec()
        assert job.status.runStatus == "failed" and rt.broken is None
        job.maxAttempts = 3
        assert list(job.exec()) == list(range(10))


def test_a_work_function_exiting_with_the_admission_code_is_not_called_an_admission_failure(caplog):
    """Exit code 3 is what a worker that could not get in exits with; a work function that
    exits with it too died like any other: no word of brokers."""
    with pytest.raises(WorkerDiedError):
        compute.for_(0, 1, lambda x: os._exit(3)).localExec(2)
    assert not [r for r in caplog.records if "could not reach the broker" in r.getMessage()]
