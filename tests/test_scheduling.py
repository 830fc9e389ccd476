"""The scheduler state machine, driven by scripted events and timings: no sockets, no processes."""
from __future__ import annotations

import math

import pytest

from dcplocal import scheduling as s
from dcplocal.errors import ENOPROGRESS, ESLICETOOSLOW, WorkerDiedError


class Checked(s.Scheduler):
    """A Scheduler that checks its invariants (`validate`) after every step it takes."""


def _checked(step):
    def run(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        self.validate()
        return out
    return run


for _step in ("add_worker", "retire", "remove_worker", "worker_lost", "submit", "input_arrived",
              "input_ended", "cancel", "task_done", "heartbeat", "tick"):
    setattr(Checked, _step, _checked(getattr(s.Scheduler, _step)))


def of(kind, instructions):
    return [i for i in instructions if isinstance(i, kind)]


def dispatches(instructions):
    return {d.worker: d.task for d in of(s.Dispatch, instructions)}


class Sim:
    """Drives a Scheduler as workers would: each worker runs the tasks it holds in order, one at a
    time; a task takes count*slice_s from its dispatch or its predecessor's end, whichever is later
    (workers overlap; results and dispatches travel instantly)."""

    def __init__(self, workers=2, **info):
        self.sched = Checked()
        self.now = 0.0
        self.out = []
        self.queues = {}   # worker -> the tasks it holds, running first
        self.free_at = {}  # worker -> when its last task ended
        self.queued_behind = []  # (task, how many tasks its worker already held)
        for w in range(workers):
            self.take(self.sched.add_worker(f"w{w}", self.now))
        self.info = info

    @property
    def running(self):
        return {w: q[0] for w, q in self.queues.items() if q}

    def take(self, instructions):
        self.out += instructions
        for d in of(s.Dispatch, instructions):
            self.queued_behind.append((d.task, len(self.queues.setdefault(d.worker, []))))
            self.queues[d.worker].append(d.task)
        return instructions

    def lose(self, worker):
        """The worker's process is gone, with every task it held."""
        return self.queues.pop(worker)

    def submit(self, total, **kw):
        return self.take(self.sched.submit(s.JobInfo("j", total, **kw), self.now))

    def _ends_at(self, worker, slice_s):
        task = self.queues[worker][0]
        return max(task.dispatched_at, self.free_at.get(worker, 0.0)) + task.count * slice_s

    def complete(self, worker, slice_s=1e-6, errors=0):
        """The worker's running task finishes; its result reaches the scheduler at once."""
        end = self._ends_at(worker, slice_s)
        task = self.queues[worker].pop(0)
        self.free_at[worker] = end
        self.now = max(self.now, end)
        accepted, ins = self.sched.task_done(worker, task.task_id, task.count * slice_s, errors, self.now)
        assert accepted
        self.take(ins)
        return task

    def run_all(self, slice_s=1e-6):
        """Complete tasks in the order they would finish."""
        tasks = []
        while self.running:
            worker = min(self.running, key=lambda w: (self._ends_at(w, slice_s), self.running[w].task_id))
            tasks.append(self.complete(worker, slice_s))
        return tasks


def test_batches_start_small_grow_to_target_and_shrink_at_the_tail():
    sim = Sim(workers=2)
    sim.submit(1_000_000)
    tasks = sim.run_all(slice_s=1e-6)
    sizes = [t.count for t in tasks]
    assert sizes[0] == 1
    for a, b in zip(sizes, sizes[1:]):
        assert b <= a * s.GROWTH or b <= max(sizes[:sizes.index(b)] or [1]) * s.GROWTH
    target = s.TARGET_TASK_SECONDS / 1e-6
    assert max(sizes) <= target and max(sizes) >= target / 2
    # every slice dispatched exactly once, in order, and the job completed
    covered = sorted((t.first, t.count) for t in tasks)
    position = 0
    for first, count in covered:
        assert first == position
        position += count
    assert position == 1_000_000
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "complete")]
    # the tail: batches shrink after the peak, but never below ~TAIL_FLOOR_SECONDS of work
    # (in slice order: a queued task may finish after a later, smaller one)
    floor = round(s.TAIL_FLOOR_SECONDS / 1e-6) - 1  # -1: float rounding of elapsed/count
    sizes = [count for _, count in covered]
    peak = sizes.index(max(sizes))
    assert sizes[-1] < max(sizes)
    assert all(size >= floor for size in sizes[peak:-1])
    assert len(sizes) <= 1_000_000 * 1e-6 / s.TARGET_TASK_SECONDS + 20  # ramp and tail add few


def test_an_initial_slice_profile_seeds_the_first_batch():
    sim = Sim(workers=1)
    sim.submit(1_000_000, initial_slice_seconds=1e-5)
    assert sim.running["w0"].count == round(s.TARGET_TASK_SECONDS / 1e-5)


def test_slow_slices_get_single_slice_tasks():
    sim = Sim(workers=2)
    sim.submit(64)
    tasks = sim.run_all(slice_s=0.06)
    assert all(t.count == 1 for t in tasks)
    assert len(tasks) == 64


def test_job_definition_is_sent_once_per_worker_and_forgotten_at_the_end():
    sim = Sim(workers=2)
    sim.submit(1000)
    sim.run_all()
    sends = of(s.SendJob, sim.out)
    assert sorted(x.worker for x in sends) == ["w0", "w1"]
    assert sorted(x.worker for x in of(s.ForgetJob, sim.out)) == ["w0", "w1"]


def test_a_dead_workers_batch_is_split_and_retried_without_penalty():
    sim = Sim(workers=2)
    sim.submit(1_000_000)
    for _ in range(6):  # grow batches
        sim.complete("w0")
    victim, queued = sim.lose("w0")  # running one task, the next queued behind it
    assert victim.count > 1
    sim.take(sim.sched.remove_worker("w0", -9, sim.now))
    sim.take(sim.sched.add_worker("w2", sim.now))
    assert [(t.first, t.count) for t in sim.queues["w2"]] == [(victim.first, victim.count // 2)]
    half = victim.count // 2
    retried = [(t.first, t.count) for t in sorted(sim.run_all(), key=lambda t: t.task_id)]
    # the other half next; the queued task never ran, so it goes back whole, after the halves
    assert retried.index((victim.first + half, victim.count - half)) < retried.index((queued.first, queued.count))
    sim.run_all()
    assert of(s.SliceFailed, sim.out) == []
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "complete")]


def kill_lone_slice_until_failure(sim, attempts):
    """Kill whichever worker runs slice 0 as a lone slice, ``attempts`` times."""
    serial = 10
    for _ in range(attempts):
        worker = next(w for w, t in sim.running.items() if t.first == 0)
        assert sim.running[worker].count == 1
        sim.lose(worker)
        sim.take(sim.sched.remove_worker(worker, -11, sim.now))
        serial += 1
        sim.take(sim.sched.add_worker(f"w{serial}", sim.now))


def test_a_slice_that_kills_every_worker_fails_alone_after_max_attempts():
    sim = Sim(workers=2)
    sim.submit(3, error_limit=1)
    kill_lone_slice_until_failure(sim, 4)
    failed = of(s.SliceFailed, sim.out)
    assert len(failed) == 1 and failed[0].slice_index == 0
    error = failed[0].error
    assert isinstance(error, WorkerDiedError)
    assert (error.slice_index, error.exitcode, error.attempts) == (0, -11, 4)
    assert "signal 11" in str(error)
    sim.run_all()
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "complete")]


def test_worker_death_beyond_attempts_fails_the_job_with_error_limit_zero():
    sim = Sim(workers=1)
    sim.submit(3)
    kill_lone_slice_until_failure(sim, 4)
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "failed")]


def test_a_late_result_from_a_dead_worker_is_ignored_and_counted():
    sim = Sim(workers=2)
    sim.submit(10)
    task = sim.lose("w0")[0]
    sim.take(sim.sched.remove_worker("w0", -9, sim.now))
    accepted, ins = sim.sched.task_done("w0", task.task_id, 0.001, 0, sim.now)
    assert not accepted and ins == []
    assert sim.sched.stale_results == 1


def test_cancel_stops_dispatch_and_kills_tasks_that_outlive_the_grace():
    sim = Sim(workers=2)
    sim.submit(100)
    assert sim.sched.cancel("j", sim.now) == []
    dispatched = len(of(s.Dispatch, sim.out))
    while "w0" in sim.running:  # its tasks return within the grace: accepted
        sim.complete("w0")
    assert "w0" in sim.sched.idle and len(of(s.Dispatch, sim.out)) == dispatched  # nothing new
    assert sim.sched.tick(sim.now + s.CANCEL_GRACE / 2) == []
    out = sim.sched.tick(sim.now + s.CANCEL_GRACE + 0.01)
    assert of(s.KillWorker, out) == [s.KillWorker("w1", "cancelled job's task outlived its grace")]
    assert of(s.JobEnded, out) == [s.JobEnded("j", "cancelled")]
    assert of(s.Dispatch, out) == []


def test_no_progress_fails_the_culprit_slice_and_requeues_its_batch_mates():
    sim = Sim(workers=1)
    sim.submit(100, progress_timeout=1.0, error_limit=5)
    for _ in range(2):
        sim.complete("w0", slice_s=1e-3)
    task = sim.running["w0"]
    assert task.count > 2
    culprit = task.first + 1
    sim.sched.heartbeat("w0", task.task_id, culprit, 0.5, 0.9, 0.3, 2, sim.now)
    assert of(s.SliceFailed, sim.sched.tick(sim.now + 0.05)) == []
    out = sim.sched.tick(sim.now + 0.2)  # progress age now 1.1 s
    failed = of(s.SliceFailed, out)
    assert len(failed) == 1 and failed[0].slice_index == culprit
    assert isinstance(failed[0].error, ENOPROGRESS)
    reports = failed[0].details["progressReports"]
    assert reports["last"]["progress"] == 0.3
    assert [k.worker for k in of(s.KillWorker, out)] == ["w0"]
    sim.lose("w0")
    sim.take(sim.sched.add_worker("w1", sim.now))
    sim.run_all(slice_s=1e-3)
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "complete")]


def test_missing_heartbeats_count_as_no_progress():
    sim = Sim(workers=1)
    sim.submit(1, progress_timeout=1.0)
    out = sim.sched.tick(sim.now + 1.5)
    assert isinstance(of(s.SliceFailed, out)[0].error, ENOPROGRESS)


def test_slice_timeout_is_wall_time_even_with_progress():
    sim = Sim(workers=1)
    sim.submit(1, slice_timeout=2.0)
    task = sim.running["w0"]
    sim.sched.heartbeat("w0", task.task_id, 0, 2.5, 0.01, 0.9, 50, sim.now)
    out = sim.sched.tick(sim.now)
    assert isinstance(of(s.SliceFailed, out)[0].error, ESLICETOOSLOW)


def test_streamed_input_is_requested_dispatched_with_its_chunk_and_released():
    sim = Sim(workers=2)
    out = sim.submit(None, streaming=True)
    assert of(s.RequestInput, out) == [s.RequestInput("j", 1)]
    sim.take(sim.sched.input_arrived("j", 0, 1, sim.now))
    assert sim.running["w0"].chunk_first == 0
    assert of(s.RequestInput, sim.out)[-1] == s.RequestInput("j", 1)  # still unmeasured
    task = sim.complete("w0")
    assert s.ReleaseChunk("j", 0) in sim.out
    assert task.count == 1
    sim.take(sim.sched.input_arrived("j", 1, 1, sim.now))  # answers the outstanding request
    assert of(s.RequestInput, sim.out)[-1].count == s.GROWTH  # sized by the measured batch
    sim.take(sim.sched.input_arrived("j", 2, 3, sim.now))
    sim.take(sim.sched.input_ended("j", 5, sim.now))
    sim.run_all()
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "complete")]


def _feed_while_asked(sim, out):
    """Answer each RequestInput with a 1-item chunk until the scheduler stops asking."""
    fed = 0
    while of(s.RequestInput, out):
        out = sim.take(sim.sched.input_arrived("j", fed, 1, sim.now))
        fed += 1


@pytest.mark.parametrize("workers,max_workers,usable", [(2, None, 2), (3, 2, 2), (3, None, 3)])
def test_an_unmeasured_streamed_job_holds_one_waiting_chunk_per_usable_worker(
        workers, max_workers, usable):
    # chunks asked for before the first measurement hold 1 item each, and every one still waiting
    # when the measurement arrives is a 1-slice task more: one per worker that may run the job
    sim = Sim(workers=workers)
    _feed_while_asked(sim, sim.submit(None, streaming=True, max_workers=max_workers))
    assert len(sim.sched.jobs["j"].chunks) == usable
    assert len(sim.running) == usable
    assert all(t.count == 1 for q in sim.queues.values() for t in q)


def test_max_workers_limits_a_jobs_concurrency():
    sim = Sim(workers=3)
    sim.submit(100, max_workers=1)
    assert len(sim.running) == 1


def test_two_jobs_share_workers_round_robin():
    sched = Checked()
    sched.submit(s.JobInfo("a", 100), 0)
    sched.submit(s.JobInfo("b", 100), 0)
    out = sched.add_worker("w0", 0) + sched.add_worker("w1", 0)
    jobs = [d.task.job_id for d in of(s.Dispatch, out)]
    assert jobs.count("a") == jobs.count("b") >= 1


def test_errors_beyond_the_limit_stop_the_job():
    sim = Sim(workers=1)
    sim.submit(100, error_limit=2)
    for _ in range(3):  # one failed slice in each of three tasks: the third is one too many
        sim.complete("w0", errors=1)
    dispatched = len(of(s.Dispatch, sim.out))
    sim.run_all()  # what was in flight still comes back; nothing new goes out
    assert len(of(s.Dispatch, sim.out)) == dispatched
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "failed")]


def test_an_empty_job_ends_at_once():
    sched = Checked()
    assert of(s.JobEnded, sched.submit(s.JobInfo("j", 0), 0)) == [s.JobEnded("j", "complete")]


@pytest.mark.parametrize("remaining,workers", [(10, 2), (1, 1), (1000, 4)])
def test_guided_tail_cap(remaining, workers):
    sim = Sim(workers=workers)
    sim.sched.jobs.clear()
    sim.running.clear()
    sched = Checked()
    for w in range(workers):
        sched.add_worker(f"w{w}", 0)
    job_out = sched.submit(s.JobInfo("j", remaining), 0)
    for d in of(s.Dispatch, job_out):
        assert d.task.count <= max(1, math.ceil(remaining / (s.TAIL_FACTOR * workers)))


def test_a_streamed_job_of_known_length_gets_the_guided_tail_too():
    sim = Sim(workers=2)
    out = sim.submit(1000, streaming=True, initial_slice_seconds=1e-5)  # measured batch: 2000
    assert of(s.RequestInput, out) == [s.RequestInput("j", 250)]  # ceil(1000 / (2 * 2))
    sim.take(sim.sched.input_arrived("j", 0, 250, sim.now))
    # ceil(750 / 4) = 188 would be under 2 ms of 10 µs slices: the tail's floor, as for ranges
    assert of(s.RequestInput, sim.out)[-1] == s.RequestInput("j", 200)


def test_batches_are_sized_by_the_wall_time_the_broker_sees():
    sched = Checked()
    sched.add_worker("w0", 0.0)
    task = of(s.Dispatch, sched.submit(s.JobInfo("j", 10_000), 0.0))[0].task
    # compute took 1 µs, but the task (say, 5 MB of input in transit) came back after 10 ms
    accepted, out = sched.task_done("w0", task.task_id, 1e-6, 0, 0.01)
    assert accepted and of(s.Dispatch, out)[0].task.count == 2  # not 8: the slice costs ~10 ms


def test_away_from_the_tail_every_worker_holds_a_queued_task():
    sim = Sim(workers=2)
    sim.submit(1_000_000)
    for _ in range(4):
        sim.complete("w0")
        sim.complete("w1")
    assert [len(q) for q in sim.queues.values()] == [2, 2]


def test_near_the_tail_long_slices_are_never_queued_behind_a_running_one():
    sim = Sim(workers=2)
    sim.submit(64)
    sim.run_all(slice_s=0.06)
    queued = [task.first for task, held in sim.queued_behind if held]
    assert queued and all(64 - first >= s.TAIL_FACTOR * 2 for first in queued)
    assert sim.now == pytest.approx(32 * 0.06)  # no worker idled while the other had work


def test_a_queued_task_is_timed_from_when_its_predecessor_ended():
    sched = Checked()
    sched.add_worker("w0", 0.0)
    first, queued = [d.task for d in of(s.Dispatch, sched.submit(s.JobInfo("j", 10_000), 0.0))]
    accepted, out = sched.task_done("w0", first.task_id, 0.01, 0, 0.01)  # 10 ms: batch becomes 2
    assert accepted and of(s.Dispatch, out)[0].task.count == 2
    # the queued slice took 1 µs once it started; its 10 ms in the queue is not its cost
    accepted, out = sched.task_done("w0", queued.task_id, 1e-6, 0, 0.01 + 1e-6)
    # slice-weighted, halving the past: (10 ms / 2 + 1 µs) over (1 / 2 + 1) slices; charging
    # the wait would have made it (10 ms / 2 + 10 ms) / 1.5 = 10 ms
    assert accepted and sched.jobs["j"].slice_seconds == pytest.approx((0.01 / 2 + 1e-6) / 1.5)


def test_the_users_slice_estimate_weighs_as_one_measured_slice():
    sched = Checked()
    sched.add_worker("w0", 0.0)
    info = s.JobInfo("j", 1000, initial_slice_seconds=3600.0)
    first = of(s.Dispatch, sched.submit(info, 0.0))[0].task
    assert first.count == 1
    sched.task_done("w0", first.task_id, 1e-4, 0, 1e-4)
    # (3600 / 2 + 0.0001) s over 1.5 slices: still far too slow for a second slice per task
    assert sched.jobs["j"].slice_seconds == pytest.approx((3600 / 2 + 1e-4) / 1.5)
    assert sched.jobs["j"].batch == 1


def test_a_long_tasks_measurement_outweighs_the_round_trips_of_the_first_tiny_ones():
    sched = Checked()
    sched.add_worker("w0", 0.0)
    job = sched.jobs
    first, queued = [d.task for d in of(s.Dispatch, sched.submit(s.JobInfo("j", 10 ** 7), 0.0))]
    now = 0.0
    for task in (first, queued):                        # 0.3 ms each: all round trip
        now += 3e-4
        accepted, out = sched.task_done("w0", task.task_id, 1e-6, 0, now)
        assert accepted
    done = 0
    while done < 512:                  # then tasks of 1 µs a slice plus the 0.3 ms round trip
        head = sched.queues["w0"][0]
        now += 3e-4 + head.count * 1e-6
        accepted, _ = sched.task_done("w0", head.task_id, head.count * 1e-6, 0, now)
        assert accepted
        done = head.count
    # averaging per-task rates instead, the round trips of the first tasks would keep it ~40 µs
    assert job["j"].slice_seconds < 5e-6
    assert job["j"].batch >= 512 * s.GROWTH          # growth was never held back by the estimate


def test_the_watchdog_does_not_charge_a_queued_task_for_its_wait():
    sched = Checked()
    sched.add_worker("w0", 0.0)
    first, queued = [d.task for d in of(s.Dispatch, sched.submit(
        s.JobInfo("j", 1000, progress_timeout=1.0), 0.0))]
    sched.task_done("w0", first.task_id, 0.9, 0, 0.9)
    assert of(s.SliceFailed, sched.tick(1.5)) == []  # the queued task has run for 0.6 s
    assert isinstance(of(s.SliceFailed, sched.tick(2.0))[0].error, ENOPROGRESS)


def test_killing_a_cancelled_jobs_worker_requeues_another_jobs_task_queued_there():
    sched = Checked()
    sched.submit(s.JobInfo("a", 1000), 0.0)
    sched.submit(s.JobInfo("b", 1000), 0.0)
    out = sched.add_worker("w0", 0.0)
    held = [(d.task.job_id, d.task.first) for d in of(s.Dispatch, out)]
    assert held == [("a", 0), ("b", 0)]  # a runs, b waits behind it
    sched.cancel("a", 0.0)
    out = sched.tick(s.CANCEL_GRACE + 0.01)
    assert of(s.KillWorker, out) and of(s.JobEnded, out) == [s.JobEnded("a", "cancelled")]
    out = sched.add_worker("w1", 1.0)
    assert [(d.task.job_id, d.task.first) for d in of(s.Dispatch, out)][0] == ("b", 0)


def test_a_recycling_worker_leaves_without_costing_its_queued_task_an_attempt():
    sched = Checked()
    sched.add_worker("w0", 0.0)
    first, queued = [d.task for d in of(s.Dispatch, sched.submit(
        s.JobInfo("j", 3, max_attempts=1, initial_slice_seconds=1.0), 0.0))]
    accepted, out = sched.task_done("w0", first.task_id, 1.0, 0, 1.0, leaving=True)
    assert accepted and of(s.Dispatch, out) == []  # a leaving worker gets nothing more
    out = sched.remove_worker("w0", 0, 1.1)  # its clean exit, after the result
    assert of(s.SliceFailed, out) == []  # with max_attempts=1, a death would have failed it
    out = sched.add_worker("w1", 1.2)
    assert (of(s.Dispatch, out)[0].task.first, of(s.Dispatch, out)[0].task.count) == (queued.first, 1)


def test_a_job_whose_tasks_cannot_be_queued_is_not_starved_by_one_whose_can():
    sched = Checked()
    held = {}

    def take(out):
        for d in of(s.Dispatch, out):
            held.setdefault(d.worker, []).append(d.task)
        return out
    take(sched.add_worker("w0", 0.0) + sched.add_worker("w1", 0.0))
    take(sched.submit(s.JobInfo("big", 1_000_000, initial_slice_seconds=1e-6), 0.0))
    take(sched.submit(s.JobInfo("small", 2), 0.0))  # unmeasured, all tail: never queued
    assert not [t for tasks in held.values() for t in tasks if t.job_id == "small"]
    now = 0.0
    for _ in range(3):  # w0 runs what it holds (2, plus 1 queued before small's turn), then
        now += 0.02     # it is free and small goes there
        task = held["w0"].pop(0)
        take(sched.task_done("w0", task.task_id, 0.02, 0, now)[1])
    assert [t.job_id for t in held["w0"]][:1] == ["small"]


def test_a_stream_of_known_length_queues_nothing_in_its_tail():
    sched = Checked()
    sched.add_worker("w0", 0.0)
    sched.add_worker("w1", 0.0)
    out = sched.submit(s.JobInfo("j", 3, streaming=True), 0.0)  # a list of 3: length known
    fed, queued = 0, []
    while of(s.RequestInput, out) and fed < 3:
        count = min(of(s.RequestInput, out)[0].count, 3 - fed)
        out = sched.input_arrived("j", fed, count, 0.0)
        fed += count
        queued += [d for d in of(s.Dispatch, out) if len(sched.queues[d.worker]) > 1]
    assert queued == []  # the last slice waits for a free worker, as in a range job


def test_a_worker_known_to_have_exited_gets_nothing_while_its_last_result_is_read():
    sched = Checked()
    sched.add_worker("w0", 0.0)
    sched.add_worker("w1", 0.0)
    out = sched.submit(s.JobInfo("j", 3, max_attempts=1, error_limit=5, initial_slice_seconds=1.0), 0.0)
    first = next(d.task for d in of(s.Dispatch, out) if d.worker == "w0")
    sched.retire("w0")  # the broker saw its exit; its result was already on the wire
    accepted, out = sched.task_done("w0", first.task_id, 1.0, 0, 1.0)
    assert accepted and [d.worker for d in of(s.Dispatch, out)] != ["w0"]
    assert of(s.SliceFailed, sched.remove_worker("w0", -9, 1.0)) == []  # nothing it never ran


def test_a_cancelled_jobs_queued_task_does_not_kill_a_live_jobs_running_one():
    sched = Checked()
    sched.submit(s.JobInfo("live", 1000, initial_slice_seconds=2.0), 0.0)
    sched.submit(s.JobInfo("doomed", 1000), 0.0)
    out = sched.add_worker("w0", 0.0)
    running, queued = [d.task for d in of(s.Dispatch, out)]
    assert (running.job_id, queued.job_id) == ("live", "doomed")
    sched.cancel("doomed", 0.1)
    out = sched.tick(0.1 + s.CANCEL_GRACE + 0.05)
    assert of(s.KillWorker, out) == []  # live keeps running...
    assert of(s.JobEnded, out) == [s.JobEnded("doomed", "cancelled")]  # ...and doomed ends now
    sched.task_done("w0", running.task_id, 2.0, 0, 2.0)  # now the doomed task runs, overdue
    out = sched.tick(2.05)
    assert [k.worker for k in of(s.KillWorker, out)] == ["w0"]
    assert of(s.JobEnded, out) == [] and of(s.Dispatch, out) == []  # w0 is gone: live waits


def test_the_result_of_a_task_its_stopped_job_gave_up_is_refused_quietly():
    sched = Checked()
    sched.submit(s.JobInfo("live", 1000, initial_slice_seconds=2.0), 0.0)
    sched.submit(s.JobInfo("doomed", 1000), 0.0)
    running, queued = [d.task for d in of(s.Dispatch, sched.add_worker("w0", 0.0))]
    sched.cancel("doomed", 0.1)
    sched.tick(0.1 + s.CANCEL_GRACE + 0.05)  # doomed ended without its queued task
    sched.task_done("w0", running.task_id, 2.0, 0, 2.0)
    accepted, out = sched.task_done("w0", queued.task_id, 0.01, 0, 2.01)  # it was quick
    assert not accepted and [d.task.job_id for d in of(s.Dispatch, out)] == ["live"]


def test_a_lost_worker_is_killed_and_its_tasks_go_back_whole_without_an_attempt():
    sim = Sim(workers=2)
    sim.submit(1, max_attempts=1)  # one charged attempt would fail the slice
    worker, task = next(iter(sim.running.items()))
    sim.lose(worker)
    out = sim.take(sim.sched.worker_lost(worker, "stopped", sim.now))
    assert of(s.KillWorker, out) == [s.KillWorker(worker, "stopped")]
    assert of(s.SliceFailed, out) == []
    again = dispatches(out)
    assert [(t.first, t.count) for t in again.values()] == [(task.first, task.count)]
    assert worker not in again
    assert sim.take(sim.sched.remove_worker(worker, -9, sim.now)) == []  # its exit changes nothing
    sim.run_all()
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "complete")]
    assert sim.sched.worker_lost(worker, "again", sim.now) == []


def test_a_late_result_of_a_lost_worker_is_stale():
    sim = Sim(workers=2)
    sim.submit(4)
    worker, task = next(iter(sim.running.items()))
    sim.lose(worker)
    sim.take(sim.sched.worker_lost(worker, "silent", sim.now))
    accepted, out = sim.sched.task_done(worker, task.task_id, 0.001, 0, sim.now)
    assert not accepted and out == [] and sim.sched.stale_results == 1


@pytest.mark.parametrize("field,value", [
    ("max_attempts", "3"), ("max_attempts", 0), ("max_attempts", True), ("error_limit", -1),
    ("progress_timeout", math.nan), ("slice_timeout", math.inf), ("progress_timeout", 0),
    ("max_workers", 0), ("initial_slice_seconds", math.nan), ("total", -5),
])
def test_an_invalid_job_info_fails_that_job_alone(field, value):
    sim = Sim(workers=2)
    fields = {"job_id": "bad", "total": 10, field: value}
    out = sim.take(sim.sched.submit(s.JobInfo(**fields), sim.now))
    [ended] = of(s.JobEnded, out)
    assert (ended.job_id, ended.outcome) == ("bad", "failed")
    assert field in str(ended.error) and ended.error.code == "EINVAL"
    sim.submit(6)  # the scheduler goes on with the next job
    sim.run_all()
    assert of(s.JobEnded, sim.out)[-1] == s.JobEnded("j", "complete")


def test_a_worker_cannot_fail_more_slices_than_its_task_had():
    sim = Sim(workers=1)
    sim.submit(100, error_limit=5)
    sim.complete("w0", errors=99)  # a 1-slice task: counts as one failure
    sim.run_all()
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "complete")]


@pytest.mark.parametrize("seed", range(20))
def test_random_deaths_losses_and_results_keep_the_invariants_and_resolve_every_slice(seed):
    """Chaos in the simulator: workers die (killed, or lost while alive) at random between
    results; every step is validated (Checked), and the job still resolves every slice once."""
    import random
    rng = random.Random(seed)
    sim = Sim(workers=3)
    sim.submit(5000, max_attempts=1000)
    resolved = []
    serial = 3
    for _ in range(10_000):
        if not sim.running:
            break
        worker = rng.choice(sorted(sim.running))
        roll = rng.random()
        if roll < 0.8:
            task = sim.complete(worker, slice_s=1e-4)
            resolved += range(task.first, task.first + task.count)
            continue
        sim.lose(worker)
        if roll < 0.9:  # killed: its exit is what the scheduler hears
            sim.take(sim.sched.remove_worker(worker, -9, sim.now))
        else:           # lost while alive (stopped, silent), then its exit
            sim.take(sim.sched.worker_lost(worker, "stopped", sim.now))
            sim.take(sim.sched.remove_worker(worker, -9, sim.now))
        sim.take(sim.sched.add_worker(f"w{serial}", sim.now))
        serial += 1
    assert of(s.JobEnded, sim.out) == [s.JobEnded("j", "complete")]
    assert sorted(resolved) == list(range(5000))
    assert of(s.SliceFailed, sim.out) == []
