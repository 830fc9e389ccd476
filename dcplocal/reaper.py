"""The reaper: a tiny process that kills every worker's process group when the client dies.

Workers already die with the client on their own: each asks the kernel for PR_SET_PDEATHSIG =
SIGKILL, which needs no Python code to run in the worker, so it works when the worker ignores
SIGTERM, holds the GIL in a long C call, or is stopped. What PDEATHSIG cannot reach is what a
work function started: its children are orphaned, not killed. Each worker leads its own process
group, and the reaper kills those groups::

    client (supervisor) --"pgid\\n" / "-pgid\\n" over a pipe--> reaper (python -I -S -c ...)
    client dies (any way, kill -9 too): the pipe's write end closes, the reaper reads EOF,
    SIGKILLs every group still on its list, exits.

Why a process and not a subreaper worker: a SIGKILLed worker can do nothing for its children;
only someone outside the worker can. One reaper serves every worker of a runtime, costs ~8 MiB
and one interpreter start (``-I -S``: no site, no user paths, no dcplocal import), which runs in
parallel with the first workers' start. A group is struck off when its worker is reaped, so a
recycled pgid is never killed. A client that ``fork()``s without exec keeps the pipe open in the
child, and the reaper waits for that child too.

Must not know: zmq, jobs, workers' identities. It deals in process group ids.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

_CODE = r"""
import os, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups, pending = set(), b""
while True:
    data = os.read(0, 4096)
    if not data:
        break
    *lines, pending = (pending + data).split(b"\n")
    for line in lines:
        if line.startswith(b"-"):
            groups.discard(int(line[1:]))
        elif line:
            groups.add(int(line))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    """The client's end of one reaper process."""

    def __init__(self) -> None:
        read, self._write = os.pipe()  # both close-on-exec: no worker inherits the write end
        try:
            self.popen: Optional[subprocess.Popen] = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _CODE], stdin=read, stdout=subprocess.DEVNULL,
                close_fds=True, start_new_session=True)  # Ctrl-C is the client's alone
        finally:
            os.close(read)

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen is not None else None

    def _tell(self, line: str) -> None:
        try:
            os.write(self._write, line.encode())
        except OSError:  # the reaper is gone (killed by hand): PDEATHSIG still covers workers
            pass

    def watch(self, group: int) -> None:
        """Kill process group ``group`` if the client dies."""
        self._tell(f"{group}\n")

    def forget(self, group: int) -> None:
        """``group`` is gone (its id may be reused): never kill it."""
        self._tell(f"-{group}\n")

    def close(self, timeout: float = 2.0) -> None:
        """Let the reaper go: it kills the groups still listed and exits."""
        if self.popen is None:
            return
        os.close(self._write)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.popen = None
