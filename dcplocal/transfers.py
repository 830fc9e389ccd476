"""Large input frames on their way from the client to its workers, as the broker moves them.

A data job's chunk may hold large frames (a list of 1 MiB arrays, say). They do not cross the
socket: a worker that may read the client's memory (`remote`, ``process_vm_readv``) is sent
their addresses and copies them itself; one that may only open the client's memfds is sent
regions of the client's input arena (`arena`), which the client's thread filled; any other
worker gets the frames through the socket. Each worker finds out what it may do by probing (an
fd of ours, a few bytes at an address of ours: `worker_args`) and says so in its Ready.

What stays alive for whom: a chunk's buffers (that addresses point into) until every task given
them is done or its worker gone (``remote_holds``), and each arena region until nobody may
still read it (`RegionHolds`: the job's own copy of the chunk, and each worker per task sent).

Must not know: sockets, messages, scheduling, what a frame means.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from . import features
from .arena import ARENA_MIN_BYTES, Arena, Placed, RegionHolds, place_frames, regions
from .fds import high_fd
from .remote import Probe, Remote, locate


class Prepared(NamedTuple):
    """A chunk's large frames made ready on the client's thread (see `InputTransport.prepare`):
    ``frames`` without those, and where each is — in the input arena (``placed``) or, for
    workers that read the client's memory themselves, at an address here (``remote``)."""

    frames: List[Any]
    placed: Placed = ()
    remote: Remote = ()
    #: the arena ``placed`` is in (a runtime restarted in between has a new one)
    arena: Optional[Arena] = None


class InputTransport:
    """The client side of large inputs: the input arena, the probes, and who holds what."""

    def __init__(self, arena_idle_seconds: float) -> None:
        self.arena = Arena(lambda segment_id, fd: True, idle_seconds=arena_idle_seconds)
        self.arena.enabled &= features.enabled("memfd")  # DCPLOCAL_DISABLE=memfd
        self.holds = RegionHolds(self.arena)
        self.maps: set = set()    # workers that may open our memfds (the fd probe, by number)
        self.reads: set = set()   # workers that may read our memory (the memory probe)
        #: worker -> {task id: the chunk frames it may read}: kept alive until that task's
        #: TaskDone or the worker's exit, even past its job's end (a queued task still runs)
        self.remote_holds: Dict[bytes, Dict[int, List[Any]]] = {}
        self._probe_fd = self._make_probe()
        self._memory_probe = Probe()

    def _make_probe(self) -> int:
        """An fd of ours for workers to try opening (-1: send them every input by socket)."""
        if not self.arena.enabled:
            return -1
        return high_fd(os.memfd_create("dcplocal-probe", os.MFD_CLOEXEC))

    def worker_args(self) -> List[str]:
        """Worker command-line arguments that name the probes."""
        return ["--parent-probe-fd", str(self._probe_fd), *self._memory_probe.args()]

    def ready(self, worker: bytes, maps: bool, reads: bool) -> None:
        """What a worker said in its Ready it may do."""
        if maps:
            self.maps.add(worker)
        if reads:
            self.reads.add(worker)

    def prepare(self, frames: List[Any]) -> Optional[Prepared]:
        """Ready a chunk's large frames for the workers (any thread: the arena locks).

        Once a worker has said it can read our memory, nothing is copied: it reads each frame
        itself (remote.py). Before that, or if none can, the frames are copied into the input
        arena. None: the chunk has no large frame."""
        if self.reads:
            kept, remote = place_frames(frames, locate, ARENA_MIN_BYTES)
            return Prepared(kept, remote=remote) if remote else None
        arena = self.arena
        kept, placed = place_frames(frames, arena.place, arena.min_bytes)
        return Prepared(kept, placed=placed, arena=arena) if placed else None

    def accept(self, prepared: Optional[Prepared]) -> Optional[Prepared]:
        """``prepared``, unless it was made by the broker before ours (its regions are not ours)."""
        if prepared is not None and prepared.arena not in (None, self.arena):
            return None
        return prepared

    def hold(self, prepared: Prepared) -> None:
        """The job keeps its chunk (to send it again): its regions stay."""
        self.holds.hold(regions(prepared.placed))

    def discard(self, prepared: Prepared, held: bool = True) -> None:
        """The job is done with its chunk (``held``: it had kept it) or never kept it."""
        if held:
            self.holds.drop(regions(prepared.placed))
        else:
            self.arena.release(regions(prepared.placed))

    def for_task(self, worker: bytes, task_id: int, chunk: List[Any],
                 prepared: Optional[Prepared]) -> Tuple[List[Any], Placed, Remote]:
        """The frames to send ``worker`` for a task of ``chunk``, and where the others are."""
        if prepared is not None and prepared.remote and worker in self.reads:
            self.remote_holds.setdefault(worker, {})[task_id] = chunk
            return prepared.frames, (), prepared.remote
        if prepared is not None and prepared.placed and worker in self.maps:
            self.holds.hold(regions(prepared.placed), worker)
            return prepared.frames, prepared.placed, ()
        return chunk, (), ()

    def task_done(self, worker: bytes, task_id: int) -> None:
        self.remote_holds.get(worker, {}).pop(task_id, None)

    def released(self, worker: bytes, held: Iterable[Tuple[int, int]]) -> None:
        """The worker no longer reads these regions (a stray or repeated release is ignored)."""
        self.holds.drop([(seg_id, offset) for seg_id, offset in held], worker)

    def forget(self, worker: bytes) -> None:
        """The worker is gone: nothing it held is held for it any more."""
        self.maps.discard(worker)
        self.reads.discard(worker)
        self.remote_holds.pop(worker, None)
        self.holds.drop_holder(worker)

    def close(self) -> None:
        self.arena.close()  # workers' views keep their own mappings until they exit
        if self._probe_fd >= 0:
            os.close(self._probe_fd)
