"""Hostile conditions: a client killed with kill -9 leaves nothing behind, a stranger cannot get
in, secrets stay off command lines, a worker with no broker gives up, and the fallbacks for a
kernel without memfd, process_vm_readv or pidfd work."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import zmq

import dcplocal
from dcplocal import codec, compute, protocol
from dcplocal.peerauth import plain_client


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


# ---- workers never outlive their client --------------------------------------------------------
_CLIENT = """
import json, os, re, signal, subprocess, sys, time
import dcplocal
from dcplocal import compute
where, kind = sys.argv[1:]

def work(i):
    child = subprocess.Popen(["sleep", "600"])               # left running by the work function
    with open(os.path.join(where, f"{os.getpid()}.json"), "w") as f:
        json.dump({"worker": os.getpid(), "child": child.pid}, f)
    if kind == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
    elif kind == "c-call":                                  # the GIL held in C for minutes
        re.match(r"(a+)+$", "a" * 40 + "b")
    else:
        time.sleep(600)                                      # stopped by the test
    return i

rt = dcplocal.default_runtime()
print(json.dumps({"helpers": rt.helper_pids()}), flush=True)
compute.for_(0, 1, work).localExec(2)
"""


@pytest.mark.parametrize("kind", ["ignore-term", "c-call", "stopped"])
def test_a_killed_clients_workers_and_their_children_are_gone_within_2_s(tmp_path, kind):
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(tmp_path), kind],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        helpers = json.loads(client.stdout.readline())["helpers"]
        assert _wait_for(lambda: len(list(tmp_path.glob("*.json"))) == 2, 60)
        time.sleep(0.1)                           # the work function is in its long call now
        started = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
        pids = [s["worker"] for s in started] + [s["child"] for s in started] + helpers
        if kind == "stopped":
            for s in started:
                os.kill(s["worker"], signal.SIGSTOP)
        assert not any(map(_gone, pids))
        client.kill()
        killed = time.monotonic()
        client.wait()
        gone_after = {}
        while len(gone_after) < len(pids) and time.monotonic() - killed < 10:
            for pid in pids:
                if pid not in gone_after and _gone(pid):
                    gone_after[pid] = time.monotonic() - killed
            time.sleep(0.002)
        print(f"\n{kind}: longest orphan lifetime {max(gone_after.values(), default=0) * 1000:.1f} ms")
        assert set(gone_after) == set(pids)
        assert max(gone_after.values()) < 2.0
    finally:
        os.killpg(client.pid, signal.SIGKILL) if client.poll() is None else None
        client.wait()


def test_children_a_task_leaves_running_are_killed_and_reaped_when_it_ends():
    def spawn(x):
        import subprocess

        return subprocess.Popen(["sleep", "600"]).pid

    with dcplocal.LocalRuntime(workers=1) as rt:
        job = compute.for_(0, 2, spawn)
        job.scheduler = rt
        children = list(job.exec())
        # killed and reaped (not left as zombies) just after the task's results went out
        assert all(_wait_for(lambda: not psutil.pid_exists(pid), 5) for pid in children)


# ---- only our workers get in -------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))        # unpickling this would create the marker


def _rogue(address: str, user: str = "", token: str = "") -> zmq.Socket:
    peer = zmq.Context.instance().socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.setsockopt(zmq.IDENTITY, f"rogue-{user or 'null'}".encode())
    if user:
        plain_client(peer, user, token)
    peer.connect(address)
    return peer


def test_a_peer_without_the_runtimes_credentials_gets_no_task_and_runs_nothing(tmp_path, caplog):
    marker = str(tmp_path / "pwned")
    evil = pickle.dumps([_Payload(marker)])
    with dcplocal.LocalRuntime(workers=1) as rt:
        warm = compute.for_(0, 0, lambda x: x)
        warm.scheduler = rt
        warm.exec()                               # a worker, and so a live token, exists
        address = rt.query(lambda b: b.address)
        worker = rt.query(lambda b: next(iter(b.tokens.tokens)))
        rogues = [_rogue(address), _rogue(address, "mallory", "guess"),
                  _rogue(address, worker, "not-its-token")]          # a worker's name, no token
        for peer in rogues:
            peer.send_multipart([codec.encode(protocol.Ready(os.getpid(), False, False))])
            for task_id in range(1, 6):
                peer.send_multipart([codec.encode(protocol.TaskDone(
                    task_id, "job", 0, 1, 0.01, 0, False, ())), evil])
        job = compute.for_(0, 199, lambda x: x * x)
        job.scheduler = rt
        assert list(job.exec()) == [x * x for x in range(200)]
        for peer in rogues:
            assert not peer.poll(200)                 # never a JobDef nor a Task
            peer.close(0)
        refused = rt.query(lambda b: b.zap.refused)
    assert refused >= 2                               # the PLAIN ones reached the ZAP handler
    assert not os.path.exists(marker)
    assert "refused a peer" in caplog.text and "mallory" in caplog.text


def test_no_address_or_secret_on_a_workers_command_line_or_environment():
    with dcplocal.LocalRuntime(workers=1) as rt:
        job = compute.for_(0, 0, lambda x: x)
        job.scheduler = rt
        job.exec()
        address = rt.query(lambda b: b.address)
        tokens = rt.query(lambda b: list(b.tokens.tokens.values()))
        (pid,) = rt.worker_pids()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    assert tokens
    for secret in [address.encode(), rt.socket_dir.encode(), *(t.encode() for t in tokens)]:
        assert secret not in cmdline and secret not in environ


def _start_worker(bootstrap: dict) -> subprocess.CompletedProcess:
    read, write = os.pipe()
    os.write(write, json.dumps(bootstrap).encode())
    os.close(write)
    try:
        return subprocess.run([sys.executable, "-m", "dcplocal.worker", "--bootstrap-fd",
                               str(read), "--identity", "lost"], pass_fds=(read,),
                              capture_output=True, text=True, timeout=60)
    finally:
        os.close(read)


def test_a_worker_with_no_broker_gives_up_with_a_clear_error(tmp_path):
    done = _start_worker({"address": f"ipc://{tmp_path}/nobody", "user": "lost",
                          "token": "x", "connect_timeout": 0.5})
    assert done.returncode == 3
    assert "no broker answered" in done.stderr and "nobody" in done.stderr


def test_a_worker_the_broker_refuses_gives_up_at_once():
    with dcplocal.LocalRuntime(workers=1) as rt:
        address = rt.query(lambda b: b.address)
        done = _start_worker({"address": address, "user": "lost", "token": "wrong",
                              "connect_timeout": 30})
    assert done.returncode == 3 and "refused" in done.stderr


# ---- fallbacks, forced on Linux ---------------------------------------------------------------
_FALLBACKS = """
import os, signal
import numpy as np
import dcplocal
from dcplocal import compute

rt = dcplocal.default_runtime()
big = compute.for_(0, 9, lambda i: np.full(1 << 20, i, dtype=np.float64)).localExec(2)
assert [float(r[-1]) for r in big] == list(range(10))
arrays = [np.full(1 << 17, i, dtype=np.float64) for i in range(40)]
sums = compute.for_(arrays, lambda a: float(a.sum())).localExec(2)
assert list(sums) == [float(i << 17) for i in range(40)]
marker = os.path.join(os.environ["MARKER_DIR"], "killed")
def die_once(x):
    if x == 5 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x + 1
assert list(compute.for_(0, 19, die_once).localExec(2)) == list(range(1, 21))
assert os.path.exists(marker)
broker = rt._broker
assert not broker.inputs.arena.enabled and not broker.inputs.reads and not broker.inputs.maps
assert all(child.pidfd is None for child in broker.supervisor.children.values())
print(dcplocal.info()["fast_paths"])
dcplocal.reset_default_runtime()
print("OK")
"""


def test_jobs_run_with_memfd_vm_readv_and_pidfd_all_disabled(tmp_path):
    env = {**os.environ, "DCPLOCAL_DISABLE": "memfd,vm_readv,pidfd", "MARKER_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_FALLBACKS)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "OK" and "disabled" in done.stdout


def test_an_unknown_feature_to_disable_is_a_typed_error():
    done = subprocess.run([sys.executable, "-c", "import dcplocal.features"],
                          env={**os.environ, "DCPLOCAL_DISABLE": "memfd,shm"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "EINVAL" in done.stderr and "shm" in done.stderr


def test_windows_gets_a_clear_error_at_import_of_the_runtime():
    code = ("import sys; sys.platform = 'win32'\n"
            "try:\n    import dcplocal.runtime\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc.code, exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "EUNMET" in done.stdout and "win32" in done.stdout and "Linux" in done.stdout


_WATCHED = r"""
import os, sys, threading, time
from dcplocal import workerproc
os.setpgid(0, 0)
workerproc._WATCH_SECONDS = 0.05
threading.Thread(target=workerproc._watch_parent, args=(os.getppid(),), daemon=True).start()
print(os.getpid(), flush=True)
time.sleep(600)
"""


def test_without_pdeathsig_the_parent_watch_takes_the_worker_down():
    # the fallback for kernels without PR_SET_PDEATHSIG (macOS): a middle process plays the client
    middle = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"subprocess.Popen([sys.executable, '-c', {_WATCHED!r}], stdout=sys.stdout)\n"
         "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        watched = int(middle.stdout.readline())
    finally:
        middle.kill()
        middle.wait()
    assert _wait_for(lambda: _gone(watched), 10)
