"""Runtime directories (where the broker's ipc socket lives) that cannot collide.

TMPDIR may be shared: scratch on a network filesystem seen by every node of a cluster, or a
``/tmp`` shared by containers with their own PID namespaces. A process id alone names nothing
there. Each directory is named ``dcplocal-<tag>-<pid>-<random>``, where the tag hashes what makes
a pid unique — host name, boot id and PID namespace — so this process can tell the directories
that a process of *its own* host and namespace made. It removes a stale one (left by a
``kill -9``) only if it carries its own tag, is its user's, and its pid is dead; anything else,
including the old ``dcplocal-<pid>-*`` names, is never touched.

A unix socket path has a hard limit (``zmq.IPC_PATH_MAX_LEN``, 107 bytes on Linux). When TMPDIR is
too long for it, the directory goes to a short private place instead ($XDG_RUNTIME_DIR, /tmp,
/dev/shm); it is created 0700, so no other user can reach the socket.

Why not abstract sockets (``ipc://@name``): they have no file permissions, so any process of any
user in the network namespace could connect (authentication would stop it from getting work, not
from knocking), and they are Linux-only.

Must not know: zmq sockets, workers, jobs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from typing import List, Optional

PREFIX = "dcplocal-"
#: sun_path is 108 bytes on Linux (104 on macOS) including its NUL; zmq says so as IPC_PATH_MAX_LEN
IPC_PATH_MAX = 103
SOCKET_NAME = "broker"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def host_tag() -> str:
    """12 hex digits naming this host, boot and PID namespace: where our process ids mean
    something."""
    facts = "|".join([socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"),
                      _pid_namespace()])
    return hashlib.sha256(facts.encode()).hexdigest()[:12]


def _max_path() -> int:
    try:
        import zmq

        return int(getattr(zmq, "IPC_PATH_MAX_LEN", IPC_PATH_MAX)) or IPC_PATH_MAX
    except ImportError:
        return IPC_PATH_MAX


def _fits(base: str) -> bool:
    # dcplocal-<12>-<pid up to 7>-<8 random>/broker
    longest = os.path.join(base, f"{PREFIX}{'x' * 12}-{'9' * 7}-{'x' * 8}", SOCKET_NAME)
    return len(longest.encode()) <= _max_path()


def bases() -> List[str]:
    """Where a runtime directory may go, best first: TMPDIR, then short private places."""
    candidates = [tempfile.gettempdir(), os.environ.get("XDG_RUNTIME_DIR", ""), "/tmp", "/dev/shm"]
    return [base for base in dict.fromkeys(candidates)
            if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK)]


def choose_base() -> str:
    """The first writable place short enough for a socket path; OSError naming TMPDIR if none."""
    for base in bases():
        if _fits(base):
            return base
    raise OSError(f"no directory short enough for a unix socket path (at most {_max_path()} "
                  f"bytes): TMPDIR={tempfile.gettempdir()!r} is too long and neither "
                  f"$XDG_RUNTIME_DIR, /tmp nor /dev/shm is writable")


def remove_stale(base: str, tag: Optional[str] = None) -> List[str]:
    """Remove the directories that runtimes of this host and namespace left behind when they
    died without cleaning up; returns their paths."""
    tag = host_tag() if tag is None else tag
    removed = []
    for name in os.listdir(base):
        if not name.startswith(f"{PREFIX}{tag}-"):
            continue
        pid = name[len(PREFIX) + len(tag) + 1:].partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        except OSError:  # another user's process (EPERM), or the entry vanished
            continue
    return removed


def make() -> "tempfile.TemporaryDirectory[str]":
    """A fresh 0700 runtime directory (removed by its ``cleanup()``), after clearing stale ones."""
    base = choose_base()
    tag = host_tag()
    remove_stale(base, tag)
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{tag}-{os.getpid()}-", dir=base)


def socket_address(directory: str) -> str:
    """The broker's ipc endpoint inside a runtime directory."""
    return f"ipc://{os.path.join(directory, SOCKET_NAME)}"
