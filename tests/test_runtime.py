"""The warm runtime: reuse across jobs, concurrent jobs, lifecycle, and the broker thread's hygiene."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import dcplocal
from dcplocal import compute
from dcplocal.results import ResultStore


def test_a_second_job_reuses_the_same_worker_processes(runtime):
    def pid(x):
        return os.getpid()
    job = compute.for_(0, 199, pid)
    job.scheduler = runtime
    first = set(job.exec())
    job2 = compute.for_(0, 199, pid)
    job2.scheduler = runtime
    assert set(job2.exec()) <= set(runtime.worker_pids())
    assert first <= set(runtime.worker_pids())


def test_the_work_function_is_shipped_once_per_worker(runtime):
    job = compute.for_(0, 9999, lambda x: x)
    job.scheduler = runtime
    job.exec()
    sends = runtime.query(lambda b: b.scheduler._next_task_id)
    assert sends > 2  # many tasks ...
    # ... but the job definition went to each worker once: the scheduler tracks who knows it
    job2 = compute.for_(0, 9999, lambda x: -x)
    job2.scheduler = runtime
    assert job2.exec()[5] == -5


def test_two_jobs_from_two_threads_run_concurrently_on_one_runtime(runtime):
    results = {}
    barrier = threading.Barrier(2)

    def run(name, offset):
        job = compute.for_(0, 4999, lambda x, k: x + k, [offset])
        job.scheduler = runtime
        thread_ids = set()
        job.on("resultsUpdated", lambda ev: thread_ids.add(threading.get_ident()))
        barrier.wait()
        results[name] = (list(job.exec()), thread_ids)

    threads = [threading.Thread(target=run, args=("a", 0)), threading.Thread(target=run, args=("b", 10**6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results["a"][0] == list(range(5000))
    assert results["b"][0] == [x + 10**6 for x in range(5000)]
    # each job's listeners ran on that job's own calling thread
    assert len(results["a"][1]) == 1 and len(results["b"][1]) == 1
    assert results["a"][1] != results["b"][1]


def test_listeners_never_run_on_the_broker_thread(runtime):
    job = compute.for_(0, 99, lambda x: x)
    job.scheduler = runtime
    names = set()
    for event in ("result", "status", "resultsUpdated", "complete"):
        job.on(event, lambda *a: names.add(threading.current_thread().name))
    job.exec()
    assert names == {threading.current_thread().name}


def test_close_stops_every_worker_and_the_runtime_can_start_again():
    rt = dcplocal.LocalRuntime(workers=2)
    job = compute.for_(0, 9, lambda x: x * 3)
    job.scheduler = rt
    assert job.exec() == [x * 3 for x in range(10)]
    pids = rt.worker_pids()
    rt.close()
    import psutil
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert job.exec() == [x * 3 for x in range(10)]
    rt.close()


def test_workers_keep_their_malloc_settings_when_a_library_changed_the_clients(monkeypatch):
    # Starting a dask LocalCluster leaves MALLOC_TRIM_THRESHOLD_=65536 in os.environ; inherited,
    # it made every worker hand its heap back after each large array (W3 and W4 ~2x slower).
    from dcplocal.supervisor import WORKER_MALLOC

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with dcplocal.LocalRuntime(workers=1) as rt:
        job = compute.for_(0, 0, lambda x: {n: os.environ.get(n) for n in WORKER_MALLOC})
        job.scheduler = rt
        assert job.exec() == [WORKER_MALLOC]


def test_a_killed_clients_socket_directory_is_removed_by_the_next_runtime():
    import subprocess
    import sys
    import tempfile

    from dcplocal.rundir import host_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                    # a process id that no longer runs
    stale = tempfile.mkdtemp(prefix=f"dcplocal-{host_tag()}-{dead.pid}-")
    open(os.path.join(stale, "broker"), "w").close()
    alive = tempfile.mkdtemp(prefix=f"dcplocal-{host_tag()}-{os.getppid()}-")  # live: kept
    try:
        with dcplocal.LocalRuntime(workers=1) as rt:
            job = compute.for_(0, 2, lambda x: x)
            job.scheduler = rt
            assert job.exec() == [0, 1, 2]
        assert not os.path.exists(stale) and os.path.isdir(alive)
    finally:
        os.rmdir(alive)


def test_numeric_results_arrive_as_one_typed_array(runtime):
    job = compute.for_(0, 99_999, lambda x: x * 0.5)
    job.scheduler = runtime
    results = job.exec()
    array = np.asarray(results)
    assert array.dtype == np.float64 and array.shape == (100_000,)
    assert np.shares_memory(array, np.asarray(results))
    assert array[12345] == 12345 * 0.5
    assert type(results[3]) is float


def test_large_array_results_travel_out_of_band_intact(runtime):
    job = compute.for_(0, 5, lambda x: np.full(1_000_000, x, dtype=np.float64))
    job.scheduler = runtime
    results = job.exec()
    assert all(results[i].shape == (1_000_000,) and results[i][-1] == i for i in range(6))


def test_streamed_generator_with_backpressure(runtime):
    pulled = []

    def gen():
        for i in range(20_001):  # a length no growth pattern of the result store lands on
            pulled.append(i)
            yield i
    job = compute.for_(gen(), lambda x: x + 1)
    job.scheduler = runtime
    high_water = []
    job.on("resultsUpdated", lambda ev: high_water.append(len(pulled) - job.status.computed))
    results = job.exec()
    assert len(results) == 20_001
    assert list(results) == [i + 1 for i in range(20_001)]
    assert results.keys()[:3] == [0, 1, 2]
    assert max(high_water) < 20_000  # never the whole input pulled ahead of the results


def test_an_exhausted_stream_keeps_its_keys_typed():
    # the last chunk request of a generator finds nothing; storing that empty batch once demoted
    # 10M typed keys to Python objects (+650 MB in bench/memjob.py)
    store = ResultStore(None)
    store.put_values(0, [1, 2, 3])
    assert store.put_values(3, []) == 0
    assert store.array is not None and store.array.dtype == np.int64 and store.computed == 3


def test_in_process_execution_runs_in_this_process():
    job = compute.for_(0, 3, lambda x: os.getpid())
    assert set(job.localExec(0)) == {os.getpid()}
    assert set(compute.for_([1, 2], lambda x: os.getpid()).localExec(False)) == {os.getpid()}


def test_estimate_characterises_one_slice_in_process():
    def work(x):
        total = 0
        for i in range(200_000):
            total += i
        return bytes(1000)
    profile = compute.for_(0, 9, work).estimate()
    assert profile["cpuHours"] > 0 and profile["gpuHours"] == 0
    assert 0.001 <= profile["outputMBytes"] < 0.002
    assert compute.for_([b"x" * 5000], lambda b: 0).estimate()["inputMBytes"] >= 0.005
    with pytest.raises(ZeroDivisionError):
        compute.for_(0, 3, lambda x: 1 / x).estimate(0)


def test_a_python_range_input_travels_as_a_range():
    job = compute.for_(range(5, 50, 7), lambda x: x * 2)
    assert job._spec is not None and job._data is None
    assert job.localExec(2) == [x * 2 for x in range(5, 50, 7)]
    assert job.results.keys() == list(range(5, 50, 7))


def test_a_dcplocal_folder_in_the_clients_working_directory_does_not_shadow_the_workers(tmp_path):
    import subprocess
    import sys
    work = tmp_path / "work"
    (work / "dcplocal").mkdir(parents=True)
    (work / "dcplocal" / "__init__.py").write_text("raise ImportError('a shadow, not dcplocal')\n")
    script = tmp_path / "scripts" / "job.py"
    script.parent.mkdir()
    script.write_text("from dcplocal import compute\n"
                      "print(list(compute.for_(1, 4, lambda i: i * i).localExec(2)))\n")
    done = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 4, 9, 16]"
