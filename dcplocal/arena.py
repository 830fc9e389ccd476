"""Shared-memory transport of large frames between the client and its workers, both ways.

A large result (an 8 MB numpy array, say) would otherwise cross a socket: copied into the kernel,
copied out again into fresh client memory, whose every page faults on first touch — the
dominant cost on a VM. Instead each worker keeps an `Arena`: a few memfd segments that it maps
once and reuses. It copies a large frame into a free region of its arena (warm memory, one copy)
and sends only where the frame lies. The broker maps each new segment (`/proc/<pid>/fd/<fd>`,
kept in `ArenaMaps`) before the worker may use it — the worker waits for that answer — so a
result already sent survives its worker's death, and hands the client a numpy view of the
region: zero copies on the client, no page faults once the mapping is warm. If the broker cannot
map a segment (a ptrace-restricted ``/proc``), that worker sends everything through the socket.

A region belongs to its client array until that array (and every view of it) dies: a finalizer
on the region's owner array queues a release, the broker flushes releases to the worker as a
``Release`` message, and only then may the worker reuse the region. So a result is never
overwritten while the client can see it, and it outlives its worker (the client's mapping keeps
the memfd alive) and the runtime. A wholly free segment stays, warm for the next job, for
`IDLE_SECONDS`, and only while the worker's free segments hold at most `retain_bytes()`; then it
is closed, so memory goes back to the system once the client has dropped its results.

Large *inputs* take the mirror path where a worker may not read the client's memory itself
(remote.py, the faster way): the client's thread copies a data chunk's large frames into
the client's own arena (`place_frames`; the arena locks, as the broker's thread frees regions),
`RegionHolds` counts who may still read each region (the broker's copy of the
chunk, and each worker per task message sent to it), and a worker maps the regions of each task
it receives copy-on-write (`private_view`), so a work function that writes to its input changes
only its own copy, and reports them released when its views die. A worker that cannot open the
client's segments (`can_open`) is sent such chunks through the socket.

Must not know: sockets, messages, scheduling, what a frame means.
"""
from __future__ import annotations

import bisect
import collections
import mmap
import os
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .fds import high_fd, map_fd

#: Frames at least this large travel through the arena. Below it a socket copy is cheap and a
#: region's bookkeeping (finalizer, release message) is not worth it.
ARENA_MIN_BYTES = 256 * 1024
#: Segments are this large unless one frame needs more.
SEGMENT_BYTES = 64 * 1024 * 1024
#: A wholly free segment is closed after this long unused (warm memory for the next job first).
IDLE_SECONDS = 60.0


def retain_bytes() -> int:
    """Free segments a worker keeps warm at most: 1 GiB, or a quarter of RAM shared by as many
    workers as there are cores, whichever is less."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        ram = 4 << 30
    return min(1 << 30, ram // (4 * (os.cpu_count() or 1)))
#: Regions start on page boundaries: client arrays are aligned and never share a page.
_PAGE = mmap.PAGESIZE

#: Where a frame was placed: (segment id, segment fd, offset, byte length).
Placement = Tuple[int, int, int, int]
#: Where a message's frames were placed: (frame index, *Placement) for each.
Placed = Tuple[Tuple[int, int, int, int, int], ...]
#: A region: (segment id, offset).
Region = Tuple[int, int]


def _round_up(size: int, to: int) -> int:
    return -(-size // to) * to


class _Segment:
    """One memfd with a first-fit free list of (offset, size) blocks, kept sorted.

    ``mapped``: written through a mapping of our own (fastest); otherwise with ``pwrite``, which
    takes no address space — for a worker under a memory limit, where the segments the client
    still holds would otherwise count against that limit."""

    def __init__(self, seg_id: int, size: int, mapped: bool = True) -> None:
        self.id, self.size = seg_id, size
        self.fd = high_fd(os.memfd_create(f"dcplocal-arena-{seg_id}", os.MFD_CLOEXEC))
        try:
            os.ftruncate(self.fd, size)
            self.map = map_fd(self.fd, size) if mapped else None
        except BaseException:
            os.close(self.fd)
            raise
        self.view = np.frombuffer(self.map, dtype=np.uint8) if self.map is not None else None
        self.free: List[Tuple[int, int]] = [(0, size)]
        self.used: Dict[int, int] = {}     # offset -> size of each live region
        self.idle_since = time.monotonic()

    def allocate(self, size: int) -> Optional[int]:
        for index, (offset, length) in enumerate(self.free):
            if length >= size:
                if length == size:
                    del self.free[index]
                else:
                    self.free[index] = (offset + size, length - size)
                self.used[offset] = size
                return offset
        return None

    def release(self, offset: int) -> None:
        size = self.used.pop(offset)
        index = bisect.bisect(self.free, (offset, size))
        # coalesce with the free neighbours, so big regions can be carved again
        if index < len(self.free) and self.free[index][0] == offset + size:
            size += self.free.pop(index)[1]
        if index and self.free[index - 1][0] + self.free[index - 1][1] == offset:
            index -= 1
            offset, size = self.free[index][0], self.free[index][1] + size
            del self.free[index]
        self.free.insert(index, (offset, size))
        if not self.used:
            self.idle_since = time.monotonic()

    def write(self, offset: int, data: memoryview) -> None:
        raw = np.frombuffer(data, dtype=np.uint8)
        if self.view is not None:
            self.view[offset:offset + raw.nbytes] = raw
            return
        done = 0
        while done < raw.nbytes:
            done += os.pwrite(self.fd, raw[done:].data, offset + done)

    def close(self) -> None:
        self.view = None
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:  # a copy into it is still running (runtime closing): unmapped later
                pass
        os.close(self.fd)


class Arena:
    """A worker's reusable shared memory for outgoing large frames.

    ``announce(segment id, fd)`` is asked before a new segment is used; it returns whether the
    receiving side could map it. After a refusal the arena places nothing more.
    """

    def __init__(self, announce: Callable[[int, int], bool], min_bytes: int = ARENA_MIN_BYTES,
                 segment_bytes: int = SEGMENT_BYTES, idle_seconds: float = IDLE_SECONDS,
                 retain: Optional[int] = None, mapped: bool = True) -> None:
        self.announce, self.mapped = announce, mapped
        self.min_bytes, self.segment_bytes, self.idle_seconds = min_bytes, segment_bytes, idle_seconds
        self.retain = retain_bytes() if retain is None else retain
        self.segments: Dict[int, _Segment] = {}
        # The client's input arena is filled on the client's thread and freed on the broker's;
        # reentrant for the same reason as ArenaMaps'.
        self._lock = threading.RLock()
        # memfd and /proc/<pid>/fd are Linux's; elsewhere every frame takes the socket
        self.enabled = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
        self._next_id = 1

    def place(self, frame: Any) -> Optional[Placement]:
        """Copy ``frame`` (any C-contiguous buffer, see `frame_bytes`) into a free region; None
        if it is too small (or the arena is off)."""
        if not self.enabled:
            return None
        data = memoryview(frame)
        nbytes = data.nbytes
        if nbytes < self.min_bytes:
            return None
        with self._lock:
            where = self._allocate(_round_up(nbytes, _PAGE))
        if where is None:
            return None
        segment, offset = where
        # copied outside the lock (numpy lets go of the GIL), so the broker is not held up
        segment.write(offset, data)
        return segment.id, segment.fd, offset, nbytes

    def _allocate(self, size: int) -> Optional[Tuple[_Segment, int]]:
        for segment in self.segments.values():
            offset = segment.allocate(size)
            if offset is not None:
                break
        else:
            try:
                segment = _Segment(self._next_id, max(self.segment_bytes, size), self.mapped)
            except (OSError, MemoryError, ValueError):  # e.g. the job's memory_limit: use the socket
                return None
            self._next_id += 1
            if not self.announce(segment.id, segment.fd):
                segment.close()
                self.enabled = False
                return None
            self.segments[segment.id] = segment
            offset = segment.allocate(size)
            assert offset is not None
        return segment, offset

    def release(self, regions: Iterable[Tuple[int, int]]) -> None:
        """The client dropped these (segment id, offset) regions: they may be reused."""
        with self._lock:
            for seg_id, offset in regions:
                segment = self.segments.get(seg_id)
                if segment is not None and offset in segment.used:
                    segment.release(offset)

    def close_idle(self, now: Optional[float] = None) -> List[int]:
        """Close segments wholly free for ``idle_seconds``, and the longest-free ones beyond
        ``retain`` bytes of free segments; returns their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._close_idle(now)

    def _close_idle(self, now: float) -> List[int]:
        free = sorted((s for s in self.segments.values() if not s.used),
                      key=lambda s: s.idle_since, reverse=True)   # most recently freed first
        kept, closed = 0, []
        for segment in free:
            if kept + segment.size > self.retain or now - segment.idle_since >= self.idle_seconds:
                closed.append(segment.id)
                self.segments.pop(segment.id).close()
            else:
                kept += segment.size
        return closed

    @property
    def idle(self) -> bool:
        """Some segment is wholly free (and so will be closed if it stays that way)."""
        return any(not s.used for s in self.segments.values())

    def close(self) -> None:
        with self._lock:
            for segment in self.segments.values():
                segment.close()
            self.segments.clear()


class ArenaMaps:
    """The client's side: worker segments mapped once, regions handed out as numpy arrays.

    ``on_release`` is called (from whichever thread drops the last view of a region) with no
    arguments whenever a release is queued; the owner then calls `take_releases` on its thread.
    """

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._maps: Dict[Tuple[bytes, int], mmap.mmap] = {}
        self._releases: List[Tuple[bytes, int, int]] = []
        # Reentrant: a finalizer can run in the middle of any allocation made under the lock
        # (the garbage collector freeing another region's array), on the same thread.
        self._lock = threading.RLock()
        self._on_release = on_release
        self._live = 0

    def held(self) -> int:
        """How many regions the client holds views of now (resolved, not yet released)."""
        return self._live

    def map(self, worker: bytes, pid: int, seg_id: int, fd: int) -> None:
        """Map a worker's new segment; raises OSError if it cannot be opened."""
        handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR)
        try:
            self._maps[(worker, seg_id)] = map_fd(handle, 0)
        finally:
            os.close(handle)

    def resolve(self, worker: bytes, placement: Placement) -> np.ndarray:
        """A writable uint8 array over a placed region of a segment mapped earlier; ValueError
        for a segment we do not map (a forgotten worker's late message) or a bad region."""
        seg_id, _fd, offset, nbytes = placement
        segment = self._maps.get((worker, seg_id))
        if segment is None or offset < 0 or nbytes < 0 or offset + nbytes > len(segment):
            raise ValueError(f"no mapped arena region {placement} of worker {worker!r}")
        owner = np.frombuffer(segment, dtype=np.uint8, count=nbytes, offset=offset)
        # Views of ``owner`` keep it as their base (numpy stops collapsing bases at the mmap),
        # so this runs only when the last array over the region is gone.
        weakref.finalize(owner, self._release, worker, seg_id, offset).atexit = False
        with self._lock:
            self._live += 1
        return owner

    def _release(self, worker: bytes, seg_id: int, offset: int) -> None:
        with self._lock:
            self._live -= 1
            first = not self._releases
            self._releases.append((worker, seg_id, offset))
        if first:
            self._on_release()

    def take_releases(self) -> Dict[bytes, List[Tuple[int, int]]]:
        """Queued releases, by worker: ``{worker: [(segment id, offset), ...]}``."""
        with self._lock:
            releases, self._releases = self._releases, []
        by_worker: Dict[bytes, List[Tuple[int, int]]] = {}
        for worker, seg_id, offset in releases:
            by_worker.setdefault(worker, []).append((seg_id, offset))
        return by_worker

    def closed(self, worker: bytes, seg_ids: Iterable[int]) -> None:
        """The worker closed these segments: unmap them here once no array uses them."""
        for seg_id in seg_ids:
            self._maps.pop((worker, seg_id), None)

    def forget_worker(self, worker: bytes) -> None:
        """The worker is gone: its live regions keep their mappings; nothing more is mapped."""
        for key in [key for key in self._maps if key[0] == worker]:
            del self._maps[key]

    def segments(self, worker: Optional[bytes] = None) -> List[Tuple[bytes, int]]:
        """(worker, segment id) of every mapped segment (of one worker), for tests and stats."""
        return sorted(key for key in self._maps if worker is None or key[0] == worker)

    def clear(self) -> None:
        self._maps.clear()


def frame_bytes(frame: Any) -> memoryview:
    """A frame's bytes as one contiguous view (a PickleBuffer of a Fortran-ordered array is not
    C-contiguous as it stands)."""
    view = memoryview(frame)
    return view if view.c_contiguous else frame.raw()


def place_frames(frames: List[Any], place: Callable[[memoryview], Optional[Tuple[int, ...]]],
                 min_bytes: int) -> Tuple[List[Any], Tuple[Any, ...]]:
    """``frames`` without each one of ``min_bytes`` or more that ``place`` takes, and
    ``(frame index, *where place put it)`` for each (`restore_frames` puts them back).

    ``place`` is `Arena.place` (a copy into shared memory) or `remote.locate` (where the bytes
    already are, for a worker to read). A placed frame is left out of the message rather than
    sent empty: each frame costs ~1 µs to send and again to receive, and a chunk has one per
    array."""
    kept, placed = [], []
    for index, frame in enumerate(frames):
        if not (isinstance(frame, bytes) and len(frame) < min_bytes):
            data = frame_bytes(frame)
            if data.nbytes >= min_bytes:
                where = place(data)
                if where is not None:
                    placed.append((index, *where))
                    continue
        kept.append(frame)
    return kept, tuple(placed)


def restore_frames(kept: List[Any], away: Dict[int, Any]) -> List[Any]:
    """The whole frame list of a message whose frames ``away`` (index -> what stands in for it)
    were left out by `place_frames`."""
    total = len(kept) + len(away)
    beyond = [index for index in away if not 0 <= index < total]
    if beyond:  # a malformed message: never let it shift the other frames
        raise ValueError(f"frame {min(beyond)} was placed beyond the message's {total} frames")
    rest = iter(kept)
    return [away[index] if index in away else next(rest) for index in range(total)]


def placements(placed: Placed) -> List[Tuple[int, Placement]]:
    """``(frame index, Placement)`` of each entry of a placed list (as decoded from JSON too)."""
    return [(index, (seg_id, fd, offset, nbytes)) for index, seg_id, fd, offset, nbytes in placed]


def regions(placed: Placed) -> List[Region]:
    """The (segment id, offset) of each placement in a ``place_frames`` list."""
    return [(seg_id, offset) for _index, seg_id, _fd, offset, _nbytes in placed]


class RegionHolds:
    """Reference counts on the regions of an arena whose readers are other processes.

    A holder is ``None`` (the owner's own copy, e.g. a chunk the broker may send again) or a
    worker, once per message that carried the region. A region goes back to the arena when
    nobody holds it; a dead worker's holds are dropped all at once.
    """

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self._count: Dict[Tuple[int, int], int] = {}
        self._by_holder: Dict[Any, "collections.Counter[Tuple[int, int]]"] = {}

    def hold(self, held: Iterable[Tuple[int, int]], holder: Any = None) -> None:
        counter = self._by_holder.setdefault(holder, collections.Counter())
        for region in held:
            self._count[region] = self._count.get(region, 0) + 1
            counter[region] += 1

    def drop(self, held: Iterable[Tuple[int, int]], holder: Any = None) -> None:
        counter = self._by_holder.get(holder)
        if counter is None:
            return
        for region in held:
            if counter[region] > 0:  # a stray or repeated release must not free a held region
                counter[region] -= 1
                self._drop_one(region)

    def drop_holder(self, holder: Any) -> None:
        for region, count in self._by_holder.pop(holder, collections.Counter()).items():
            for _ in range(count):
                self._drop_one(region)

    def _drop_one(self, region: Tuple[int, int]) -> None:
        left = self._count[region] - 1
        if left:
            self._count[region] = left
        else:
            del self._count[region]
            self.arena.release([region])

    def __len__(self) -> int:
        """How many regions are held."""
        return len(self._count)


def can_open(pid: int, fd: int) -> bool:
    """Whether this process may open process ``pid``'s file descriptor ``fd`` (ptrace rules)."""
    try:
        os.close(os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY))
        return True
    except OSError:
        return False


def private_view(pid: int, placement: Placement, on_release: Callable[[int, int], None]) -> np.ndarray:
    """A writable copy-on-write uint8 view of a region in process ``pid``'s arena.

    Mapped for this one use, so the pages it writes are its own and vanish with it; when its last
    view dies, ``on_release(segment id, offset)`` runs."""
    seg_id, fd, offset, nbytes = placement
    handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY)
    try:
        # read-only fd: its copy cannot write anywhere, so only the standard streams are kept
        # free of it (per input, where holding 85 numbers would cost ~50 µs each)
        region = map_fd(handle, nbytes, below=3, flags=mmap.MAP_PRIVATE,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
    finally:
        os.close(handle)
    owner = np.frombuffer(region, dtype=np.uint8, count=nbytes)
    weakref.finalize(owner, on_release, seg_id, offset).atexit = False
    return owner
