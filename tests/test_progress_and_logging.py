"""The progress bar on a real terminal (a pty), silence off one, and work functions' logging
records arriving in the client's own ``logging``."""
from __future__ import annotations

import fcntl
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap

import pytest

from dcplocal import compute
from dcplocal.errors import EINVAL

SCRIPT = textwrap.dedent("""
    import sys, time
    from dcplocal import compute

    def work(i):
        import time
        time.sleep(0.02)
        if i % 25 == 0:
            print("tick", i)
        if i == 33:
            raise ValueError("bad slice")
        return i

    job = compute.for_(0, 149, work)
    job.errorLimit = 5
    job.public["name"] = "demo"
    results = job.localExec({cores}{progress})
    print("finished", len(results), file=sys.stderr)
""")


def run_on_a_terminal(source: str, env: dict) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", source], stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:                 # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "DCPLOCAL_PROGRESS"}
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("cores", [0, 2])
def test_a_long_job_on_a_terminal_shows_done_total_rate_and_failures(cores):
    out = run_on_a_terminal(SCRIPT.format(cores=cores, progress=""), _env())
    assert "demo:" in out and "150/150" in out and "slice/s" in out and "failed=1" in out
    # console output is written above the bar, each on its own line, never inside it
    for tick in (0, 25, 50, 75, 100, 125):
        assert f"[slice {tick + 1}] tick {tick}\r\n" in out
    assert "finished 150" in out


@pytest.mark.slow
def test_progress_false_and_the_environment_turn_it_off_on_a_terminal():
    out = run_on_a_terminal(SCRIPT.format(cores=2, progress=", progress=False"), _env())
    assert "slice/s" not in out and "finished 150" in out
    out = run_on_a_terminal(SCRIPT.format(cores=2, progress=""), _env(DCPLOCAL_PROGRESS="0"))
    assert "slice/s" not in out


@pytest.mark.slow
def test_off_a_terminal_nothing_but_the_output_is_printed():
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(cores=2, progress="")],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr and "\x1b" not in done.stdout + done.stderr
    assert "slice/s" not in done.stderr and "finished 150" in done.stderr


def test_a_bad_progress_setting_is_a_typed_error(monkeypatch):
    with pytest.raises(EINVAL):
        compute.for_(0, 1, abs).localExec(2, progress="yes")
    monkeypatch.setenv("DCPLOCAL_PROGRESS", "sometimes")
    with pytest.raises(EINVAL, match="DCPLOCAL_PROGRESS"):
        compute.for_(0, 1, abs).localExec(2)


def _logs(i):
    import logging
    logging.getLogger("model.train").info("step %d of %s", i, "run")
    logging.getLogger("model.train").debug("detail %d", i)
    if i == 1:
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("model.train").exception("diverged at %d", i)
    return i


@pytest.mark.parametrize("cores", [0, 2])
def test_work_function_logging_arrives_in_the_clients_logging_with_its_slice(cores, caplog):
    caplog.set_level(logging.INFO, logger="model.train")
    assert compute.for_(0, 2, _logs).localExec(cores) == [0, 1, 2]
    records = [r for r in caplog.records if r.name == "model.train"]
    infos = sorted((r.slice, r.getMessage()) for r in records if r.levelno == logging.INFO)
    assert infos == [(1, "step 0 of run"), (2, "step 1 of run"), (3, "step 2 of run")]
    assert not [r for r in records if r.levelno == logging.DEBUG]      # below the client's level
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].slice == 2 and "ZeroDivisionError" in caplog.text
    assert all(r.funcName == "_logs" for r in records)


def test_debug_records_arrive_when_the_client_asks_for_them(caplog):
    caplog.set_level(logging.DEBUG, logger="model.train")
    compute.for_(0, 1, _logs).localExec(2)
    assert sorted(r.getMessage() for r in caplog.records
                  if r.levelno == logging.DEBUG and r.name == "model.train") == ["detail 0", "detail 1"]


def test_console_listeners_also_see_logging_records_and_print_stays_a_console_event(caplog):
    caplog.set_level(logging.INFO, logger="model.train")
    job = compute.for_(0, 0, lambda i: (print("hello"), _logs(i))[1])
    seen = []
    job.on("console", seen.append)
    job.localExec(2)
    assert [(e.level, e.message) for e in seen if "logger" not in e] == [("log", "hello")]
    assert [(e.level, e.message, e.logger) for e in seen if "logger" in e] == \
        [("info", "step 0 of run", "model.train")]


def test_a_short_job_that_prints_on_a_terminal_draws_no_bar():
    source = textwrap.dedent("""
        from dcplocal import compute
        def f(x):
            print("hi", x)
            return x
        compute.for_(range(2), abs).localExec(2)    # workers up: the jobs below take ms
        for k in range(3):
            results = compute.for_(range(3), f).localExec(2)
        print("sum", sum(results))
    """)
    out = run_on_a_terminal(source, _env())
    assert "slice/s" not in out and "%|" not in out
    assert out.count("[slice 1] hi 0\r\n") == 3 and "\r\nsum 3\r\n" in out
