"""The runtime's own file descriptors, kept off the low numbers a work function may reuse.

A work function may close fds 0-2 (or any low number) and open files; the kernel hands out the
lowest free number, so a descriptor the runtime opened after that would take fd 1, and C-level
writes to "stdout" (a library's printf) would land in it: inside a shared-memory segment whose
regions the client holds as results. So the runtime's long-lived descriptors move up to
`HIGH_FD` and beyond (`high_fd`), and the copy of its file that an mmap keeps lands there too
(`map_fd`).

Must not know: what the descriptors are for.
"""
from __future__ import annotations

import mmap
import os
import sys
from typing import Any, List

try:
    import fcntl
except ImportError:  # not a POSIX system: there is no arena there either (no memfd)
    fcntl = None  # type: ignore[assignment]

#: Descriptors the runtime keeps open sit at or above this number: a work function that closes
#: and reopens low numbers never gets one of them, and nothing it opens lands up here while
#: fewer than ~100 of its own files are open.
HIGH_FD = 100


def high_fd(fd: int) -> int:
    """``fd`` moved to the lowest free number >= `HIGH_FD` (close-on-exec); the original is
    closed. Where the move fails (a tiny RLIMIT_NOFILE), the original is kept."""
    try:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
    except (OSError, AttributeError):
        return fd
    os.close(fd)
    return moved


def map_fd(fd: int, length: int, below: int = HIGH_FD, **options: Any) -> mmap.mmap:
    """``mmap.mmap(fd, length, **options)`` whose own copy of ``fd`` stays off the low numbers.

    Before Python 3.13 (``trackfd=False``) an mmap keeps a dup of its file at the lowest free
    number: fd 1, once a work function closed it, and then "stdout" writes go into the file.
    So every free number below ``below`` is held while it maps (~50 µs for 85 of them, once per
    segment)."""
    if sys.version_info >= (3, 13):
        return mmap.mmap(fd, length, trackfd=False, **options)
    held: List[int] = []
    try:
        while True:
            spare = os.dup(fd)
            if spare >= below:
                os.close(spare)
                break
            held.append(spare)
        return mmap.mmap(fd, length, **options)
    finally:
        for spare in held:
            os.close(spare)
