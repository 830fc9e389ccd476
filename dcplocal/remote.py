"""Large inputs read by the worker straight out of the client's memory (``process_vm_readv``).

The fastest way for a 1 MiB array argument to reach a worker is for the worker to copy it
itself, from the client's own array into its own (warm) heap: one copy, made by the workers in
parallel, with nothing for the client's thread to do but say where the bytes are. The client
keeps the chunk's buffers alive until every slice of the chunk is resolved, so the addresses stay
valid while any task of it can run; the worker's copy is its own, so a work function may write
to it freely.

The kernel allows this only where the worker may ptrace the client (not under Yama's
``ptrace_scope`` 1, Ubuntu's default, nor in some seccomp sandboxes); each worker finds out once,
by reading a probe buffer (`Probe`), and says so in its Ready. Where it may not, large inputs go
through the client's shared-memory arena (arena.py) instead.

Must not know: sockets, messages, scheduling, what a frame means.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, List, Optional, Tuple

import numpy as np

#: (frame index, address in the client, byte length) of a frame the worker reads itself.
Remote = Tuple[Tuple[int, int, int], ...]


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _process_vm_readv() -> Optional[Any]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_ssize_t
    function.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                         ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]
    return function


_READV = _process_vm_readv()


def locate(data: memoryview) -> Tuple[int, int]:
    """(address, byte length) of a contiguous buffer in this process: where a worker reads it
    (the ``place`` of `arena.place_frames` for this path)."""
    array = np.frombuffer(data, dtype=np.uint8)
    return array.ctypes.data, array.nbytes


def read(pid: int, address: int, nbytes: int) -> np.ndarray:
    """A new writable uint8 array holding ``nbytes`` read from ``address`` in process ``pid``."""
    if _READV is None:
        raise OSError("process_vm_readv is not available here")
    out = np.empty(nbytes, dtype=np.uint8)
    done = 0
    while done < nbytes:  # the kernel may return short counts for large reads
        local = _IoVec(out.ctypes.data + done, nbytes - done)
        remote = _IoVec(address + done, nbytes - done)
        got = _READV(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            errno = ctypes.get_errno() if got < 0 else 0
            raise OSError(errno, f"process_vm_readv from process {pid}: "
                                 f"{os.strerror(errno) if errno else 'no progress'}")
        done += got
    return out


class Probe:
    """A few random bytes in the client, which a worker reads to learn whether `read` works."""

    def __init__(self) -> None:
        self.expected = os.urandom(16)
        self._buffer = ctypes.create_string_buffer(self.expected, len(self.expected))

    @property
    def address(self) -> int:
        return ctypes.addressof(self._buffer)

    def args(self) -> List[str]:
        """Worker command-line arguments that name the probe."""
        return ["--parent-probe-address", str(self.address), "--parent-probe-bytes", self.expected.hex()]


def can_read(pid: int, address: int, expected_hex: str) -> bool:
    """Whether this process may read process ``pid``'s memory (the probe holds ``expected``)."""
    if not pid or not address:
        return False
    expected = bytes.fromhex(expected_hex)
    try:
        return read(pid, address, len(expected)).tobytes() == expected
    except OSError:
        return False
