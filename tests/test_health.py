"""The broker's health policies, driven with a scripted clock (and one real stopped process)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dcplocal import health


def test_crashes_before_ready_back_off_doubling_to_a_cap_and_ready_resets():
    r = health.Respawns()
    delays = [r.died(True, 0, 1, t) for t in range(10)]
    assert delays[:4] == [0.01, 0.02, 0.04, 0.08] and max(delays) == health.RESPAWN_MAX_DELAY
    r.ready()
    assert r.died(True, 1, 1, 11.0) == 0.01


def test_a_death_after_ready_or_a_kill_from_outside_is_replaced_at_once():
    r = health.Respawns()
    assert r.died(False, 1, -9, 0.0) == 0.0
    assert [r.died(True, 1, -signal.SIGKILL, t) for t in range(5)] == [0.0] * 5
    assert r.died(True, 1, -signal.SIGSEGV, 6.0) == 0.01  # a crash backs off


def test_broken_only_after_the_window_with_no_ready_worker_while_deaths_go_on():
    r = health.Respawns()
    window = health.NO_WORKER_SECONDS
    assert r.broken(0, 1000.0) is None                      # nothing died yet
    r.died(False, 1, -9, 0.0)                               # one healthy worker remains
    r.died(True, 1, 2, 1.0)
    assert r.broken(1, 1000.0) is None                      # a Ready worker keeps it going
    r.died(False, 0, -9, 2.0)                               # the last Ready one dies
    r.died(True, 0, 2, 3.0)
    assert r.broken(0, 2.0 + window - 0.1) is None
    assert "exit code 2" in r.broken(0, 2.0 + window)
    r.ready()
    assert r.broken(0, 1e9) is None


def test_process_state_sees_a_stop():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert health.process_state(child.pid) in ("R", "S", "D")
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while health.process_state(child.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert health.process_state(child.pid) == "T"
    finally:
        child.kill()
        child.wait()
    assert health.process_state(child.pid) is None


def test_liveness_takes_stopped_workers_at_once_and_silent_peers_after_the_window():
    states = {1: "T", 2: "R", 3: "S"}
    live = health.Liveness(read_state=states.get)
    pids = {"stopped": 1, "busy": 2, "sleeping": 3}
    holding = {"stopped": 0.0, "busy": 0.0, "sleeping": 0.0, "peer": 0.0}
    found = live.lost(holding, pids.get, 1.0)
    assert [w for w, _ in found] == ["stopped"]
    live.heard_from("peer", 5.0)
    assert live.lost(holding, pids.get, 1.0 + health.STATE_CHECK_SECONDS / 2) == []  # not yet due
    silent_at = 5.0 + health.SILENT_PEER_SECONDS
    assert [w for w, _ in live.lost({"peer": 0.0}, pids.get, silent_at)] == []
    assert [w for w, _ in live.lost({"peer": 0.0}, pids.get, silent_at + 1)] == ["peer"]
    # a task given just now is not silence, however long the peer was idle before
    assert live.lost({"peer": silent_at + 1.5}, pids.get, silent_at + 2) == []


@pytest.mark.parametrize("text,state", [(b"1 (a) S 0", "S"), (b"1 (a b) c) T 0", "T"),
                                        (b"1 (x", None), (b"1 (x)", None)])
def test_process_state_parses_odd_command_names(tmp_path, text, state):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_bytes(text)
    assert health.process_state(42, proc=str(tmp_path)) == state
