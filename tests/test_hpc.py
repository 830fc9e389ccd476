"""A shared HPC node: the CPUs this process may use, the worker cap, thread pools, a pool that
shrinks back, runtime directories that cannot collide, and options refused up front."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import pytest

import dcplocal
from dcplocal import compute, hostcpus, rundir
from dcplocal.errors import EINVAL, ETYPE


def _run(code: str, env: dict = None, prefix=(), timeout: float = 120) -> str:
    out = subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(code)],
                         env={**os.environ, **(env or {})}, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ---- CPUs -------------------------------------------------------------------------------------
def _cgroup_tree(tmp_path, v2_max=None, v1=None):
    tmp_path.mkdir(exist_ok=True)
    proc = tmp_path / "cgroup"
    sysfs = tmp_path / "sys"
    if v2_max is not None:
        proc.write_text("0::/job/step\n")
        (sysfs / "job" / "step").mkdir(parents=True)
        (sysfs / "job" / "cpu.max").write_text(v2_max)
        (sysfs / "job" / "step" / "cpu.max").write_text("max 100000\n")
    else:
        proc.write_text("4:cpu,cpuacct:/slurm/job1\n0::/\n")
        (sysfs / "cpu,cpuacct" / "slurm" / "job1").mkdir(parents=True)
        quota, period = v1
        (sysfs / "cpu,cpuacct" / "slurm" / "job1" / "cpu.cfs_quota_us").write_text(quota)
        (sysfs / "cpu,cpuacct" / "slurm" / "job1" / "cpu.cfs_period_us").write_text(period)
    return str(sysfs), str(proc)


def test_a_cgroup_v2_quota_on_a_parent_binds_and_is_rounded_up(tmp_path):
    limit = hostcpus.cgroup_limit(*_cgroup_tree(tmp_path, v2_max="150000 100000\n"))
    assert limit.cpus == 2 and "cpu.max" in limit.why and "job" in limit.why


def test_a_cgroup_v1_quota_and_no_quota(tmp_path):
    assert hostcpus.cgroup_limit(*_cgroup_tree(tmp_path, v1=("50000", "100000"))).cpus == 1
    assert hostcpus.cgroup_limit(*_cgroup_tree(tmp_path / "b", v1=("-1", "100000"))) is None


def test_batch_system_variables_and_dcplocal_workers_lower_the_count():
    machine = len(os.sched_getaffinity(0))
    assert hostcpus.allowed_cpus({}).cpus == machine
    slurm = hostcpus.allowed_cpus({"SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "64"})
    assert slurm == (1, "SLURM: SLURM_CPUS_PER_TASK=1")
    assert hostcpus.allowed_cpus({"PBS_NCPUS": "1"}).why == "PBS: PBS_NCPUS=1"
    assert hostcpus.allowed_cpus({"NCPUS": "999"}).cpus == machine       # never above affinity
    explicit = hostcpus.default_workers({"DCPLOCAL_WORKERS": "1"})
    assert explicit == (1, "DCPLOCAL_WORKERS=1")
    assert hostcpus.max_workers({}).cpus == 4 * machine
    assert hostcpus.max_workers({"DCPLOCAL_MAX_WORKERS": "3"}).cpus == 3


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_a_bad_cpu_variable_is_a_typed_error_naming_it(value):
    with pytest.raises(EINVAL, match="SLURM_CPUS_PER_TASK"):
        hostcpus.allowed_cpus({"SLURM_CPUS_PER_TASK": value})


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset")
def test_one_allowed_cpu_gives_one_worker():
    out = _run("""
        import dcplocal
        from dcplocal import compute
        import os
        results = compute.for_(0, 99, lambda x: os.getpid()).localExec()
        print(len(set(results)), len(dcplocal.default_runtime().worker_pids()))
        dcplocal.reset_default_runtime()
    """, prefix=["taskset", "-c", "0"])
    assert out.split() == ["1", "1"]


def test_info_says_what_was_found_and_why():
    info = dcplocal.info()
    assert info["cpus"] >= 1 and info["workers"] <= info["cpus"] <= info["max_workers"]
    assert any("affinity" in limit.why for limit in info["limits"])
    assert set(info["fast_paths"]) == {"memfd", "vm_readv", "pidfd"}
    text = str(info)
    assert "allowed CPUs" in text and "worker cap" in text and "fast path pidfd" in text


# ---- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("workers, error", [(-3, EINVAL), (0, EINVAL), ("2", ETYPE),
                                            (True, ETYPE), (2.0, ETYPE), (None.__class__, ETYPE)])
def test_bad_worker_counts_are_refused_at_construction(workers, error):
    with pytest.raises(error, match="workers"):
        dcplocal.LocalRuntime(workers=workers)


def test_above_the_cap_is_refused_before_any_process_starts():
    rt = dcplocal.LocalRuntime(workers=1, max_workers=2)
    job = compute.for_(0, 3, lambda x: x)
    job.scheduler = rt
    with pytest.raises(EINVAL, match="cap of 2"):
        job.localExec(3)
    assert rt._thread is None                   # no broker, no worker: nothing was started
    with pytest.raises(EINVAL, match="max_workers"):
        dcplocal.LocalRuntime(max_workers=0)


def test_more_workers_than_cpus_warns_once_and_the_surplus_retires():
    allowed = hostcpus.allowed_cpus().cpus
    with dcplocal.LocalRuntime(workers=1, worker_idle_seconds=0.2) as rt:
        job = compute.for_(0, 20, lambda x: x)
        job.scheduler = rt
        with pytest.warns(hostcpus.OversubscriptionWarning, match="CPUs"):
            assert job.localExec(allowed + 1) == list(range(21))
        with warnings.catch_warnings():
            warnings.simplefilter("error")      # once per runtime
            job = compute.for_(0, 20, lambda x: x)
            job.scheduler = rt
            assert job.localExec(allowed + 1) == list(range(21))
        deadline, sizes = time.monotonic() + 20, []
        while len(rt.worker_pids()) > 1 and time.monotonic() < deadline:
            sizes.append(rt.query(lambda b: len(b.supervisor) - len(
                b.scheduler.retiring.intersection(b.supervisor.children))))
            time.sleep(0.01)
        assert len(rt.worker_pids()) == 1       # back to the runtime's own size
        assert min(sizes, default=1) >= 1       # never below it on the way (no over-retiring)
        job = compute.for_(0, 5, lambda x: -x)
        job.scheduler = rt
        assert job.exec() == [0, -1, -2, -3, -4, -5]


# ---- threads ----------------------------------------------------------------------------------
def _thread_vars(x):
    import os

    return {n: os.environ.get(n) for n in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def test_workers_divide_the_cpus_between_thread_pools_unless_the_user_said(monkeypatch):
    allowed = hostcpus.allowed_cpus().cpus
    for name in hostcpus.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with dcplocal.LocalRuntime(workers=1) as rt:
        job = compute.for_(0, 0, _thread_vars)
        job.scheduler = rt
        (seen,) = job.exec()
    assert set(seen.values()) == {str(allowed)}
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    with dcplocal.LocalRuntime(workers=2) as rt:
        job = compute.for_(0, 0, _thread_vars)
        job.scheduler = rt
        (seen,) = job.exec()
    assert seen["MKL_NUM_THREADS"] == "7" and seen["OMP_NUM_THREADS"] == str(max(1, allowed // 2))


# ---- runtime directories ----------------------------------------------------------------------
def test_only_this_hosts_own_dead_runtimes_directories_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tag = rundir.host_tag()
    ours = tmp_path / f"dcplocal-{tag}-{dead.pid}-abcdefgh"
    other_host = tmp_path / f"dcplocal-0123456789ab-{dead.pid}-abcdefgh"
    old_style = tmp_path / f"dcplocal-{dead.pid}-abcdefgh"
    alive = tmp_path / f"dcplocal-{tag}-{os.getppid()}-abcdefgh"
    for path in (ours, other_host, old_style, alive):
        path.mkdir()
    assert rundir.remove_stale(str(tmp_path)) == [str(ours)]
    assert other_host.is_dir() and old_style.is_dir() and alive.is_dir()


def test_a_long_tmpdir_falls_back_to_a_short_private_socket_path(tmp_path, monkeypatch):
    long = tmp_path / ("a-very-long-scratch-directory-name-" * 3)
    long.mkdir()
    assert len(str(long)) > 76
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    with dcplocal.LocalRuntime(workers=1) as rt:
        job = compute.for_(0, 3, lambda x: x + 1)
        job.scheduler = rt
        assert job.exec() == [1, 2, 3, 4]
        directory = rt.socket_dir
        assert not directory.startswith(str(long))
        assert len(rundir.socket_address(directory)) - len("ipc://") <= 107
        assert os.stat(directory).st_mode & 0o777 == 0o700
    assert not os.path.exists(directory)


_NS_CLIENT = """
import os, sys, time
import dcplocal
from dcplocal import compute
me, other, out = sys.argv[1:]
def wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
rt = dcplocal.LocalRuntime(workers=1)
job = compute.for_(0, 9, lambda x: x * 2); job.scheduler = rt
first = list(job.exec())
open(me, "w").close()            # our runtime directory exists now
wait_for(other)                  # and the other namespace's runtime has started (and swept)
job = compute.for_(0, 9, lambda x: x * 3); job.scheduler = rt
second = list(job.localExec(2))  # a new worker must connect through our socket
rt.close()
with open(out, "w") as f:
    f.write(repr((first, second, os.getpid())))
"""


def test_two_runtimes_in_separate_pid_namespaces_sharing_a_tmpdir_both_keep_working(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"],
                                         capture_output=True).returncode != 0:
        pytest.skip("cannot make PID namespaces here")
    shared = tmp_path / "scratch"
    shared.mkdir()
    script = tmp_path / "client.py"
    script.write_text(_NS_CLIENT)
    env = {**os.environ, "TMPDIR": str(shared)}
    clients = []
    for me, other, shell in (("a", "b", "/bin/true; /bin/true; "), ("b", "a", "")):
        # different pids inside each namespace: each sees a dead pid in the other's name
        command = f"{shell}{sys.executable} {script} {tmp_path / me} {tmp_path / other} " \
                  f"{tmp_path / (me + '.out')}; /bin/true"
        clients.append(subprocess.Popen([unshare, "--pid", "--fork", "--mount-proc", "sh", "-c",
                                         command], env=env, stderr=subprocess.PIPE, text=True))
    try:
        for client in clients:
            assert client.wait(timeout=120) == 0, client.stderr.read()
    finally:
        for client in clients:
            client.kill()
            client.wait()
    for me in "ab":
        first, second, pid = eval((tmp_path / f"{me}.out").read_text())
        assert first == [x * 2 for x in range(10)] and second == [x * 3 for x in range(10)]
    assert not [name for name in os.listdir(shared) if name.startswith("dcplocal-")]


# ---- pool size (pure) -------------------------------------------------------------------------
def test_the_pool_grows_at_once_and_shrinks_back_after_the_grace_period():
    from dcplocal.poolsize import PoolSize

    pool = PoolSize(keep=2, idle_seconds=10)
    assert pool.want(1, "a") == 1 and pool.kept == 1
    assert pool.want(6, "b") == 6 and pool.kept == 2      # warm up to the runtime's own count
    assert pool.surplus({"a", "b"}, 6, now=0) == 0         # b still wants them
    assert pool.surplus({"a"}, 6, now=1) == 0              # grace period starts
    assert pool.surplus({"a"}, 6, now=10.9) == 0
    assert pool.surplus({"a"}, 6, now=11) == 4 and pool.target == 2
    assert pool.surplus(set(), 2, now=12) == 0             # back to the warm size: nothing more
    assert pool.want(3, "c") == 3
    assert pool.surplus({"c"}, 3, now=13) == 0
    assert pool.surplus(set(), 3, now=14) == 0             # a new grace period, not the old one
    assert pool.surplus(set(), 3, now=24) == 1
