"""The ``dcplocal`` command as a user types it: through a subprocess, via ``python -m``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest


def dcplocal(*args: str, cwd=None, env=None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcplocal", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def test_help_lists_the_subcommands():
    done = dcplocal("--help")
    assert done.returncode == 0
    assert all(name in done.stdout for name in ("info", "run", "bench"))
    assert dcplocal().returncode == 2                  # a subcommand is required


def test_info_says_what_was_detected_and_why():
    done = dcplocal("info")
    assert done.returncode == 0, done.stderr
    for text in ("allowed CPUs", "affinity", "workers by default", "worker cap", "temp dir",
                 "fast path memfd", "fast path vm_readv", "fast path pidfd", "memory"):
        assert text in done.stdout, text
    found = json.loads(dcplocal("info", "--json").stdout)
    assert found["cpus"] == len(os.sched_getaffinity(0)) and found["workers"] >= 1
    assert {"memfd", "vm_readv", "pidfd"} <= set(found["fast_paths"])


def test_info_follows_the_environment():
    env = dict(os.environ, DCPLOCAL_WORKERS="1")
    assert json.loads(dcplocal("info", "--json", env=env).stdout)["workers"] == 1
    bad = dcplocal("info", env=dict(os.environ, DCPLOCAL_WORKERS="many"))
    assert bad.returncode == 1 and "DCPLOCAL_WORKERS" in bad.stderr


def test_run_runs_a_script_as_main_with_its_arguments_and_exit_code(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import dataclasses, os, sys
        from dcplocal import compute

        @dataclasses.dataclass
        class Point:
            x: int

        if __name__ == "__main__":
            n = int(sys.argv[1])
            points = compute.for_(1, n, lambda i: Point(i)).localExec(2)
            print(sys.argv[2], [p.x for p in points], all(type(p) is Point for p in points),
                  __file__ == os.path.abspath(__file__))
            sys.exit(3)
    """))
    done = dcplocal("run", "job.py", "4", "--flag", cwd=tmp_path)   # relative, as typed
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == "--flag [1, 2, 3, 4] True True"
    assert "\r" not in done.stderr                      # no bar off a terminal
    assert dcplocal("run", str(tmp_path / "missing.py")).returncode == 2


@pytest.mark.slow
def test_bench_compares_with_pool_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    done = dcplocal("bench", "--quick", "--json", str(out), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Pool.map" in done.stdout and "W1" in done.stdout and "W2" in done.stdout
    rows = json.loads(out.read_text())
    assert [row["workload"] for row in rows] == ["W1", "W2"]
    assert all(row["dcplocal_s"] > 0 and row["pool_s"] > 0 for row in rows)
