"""Frames on the wire: message headers, and the payload encodings of results and data.

A message is ``[header, *payload_frames]``; the header is compact JSON ``[version, op, *fields]``
(see protocol.py). Payload encodings live here too, because worker and client must agree on them:

* ``pack_results(values)``: a batch of results. Numeric scalars of one type become ONE numpy array
  frame (typed collation, no per-item pickling); anything else is pickle protocol 5 whose large
  buffers (numpy arrays) travel out of band as their own frames, so they are never copied into the
  pickle stream.
* ``pack_inputs``/``unpack_inputs``: a chunk of a data job's input set, in the results'
  encoding, so that a task can unpickle just its own items (and fetch just their buffers, one
  item at a time) out of a chunk it shares with other tasks.
* ``dumps``/``loads``: pickle-5 with out-of-band buffers for any other object (work.emit values,
  exceptions, input specs).

The broker only ever calls ``encode``/``decode`` on headers; it never unpickles a payload.
This module must not know about sockets, processes or jobs.
"""
from __future__ import annotations

import json
import pickle
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ERESULTTOOBIG
from .protocol import PROTOCOL_VERSION, Message, message_class

#: numpy arrays at least this large travel as their own frame instead of inside the pickle stream.
#: Below it, an extra frame costs more than the copy it saves (~64 KiB is where zmq's zero-copy
#: send overtakes memcpy).
OUT_OF_BAND_BYTES = 64 * 1024

# Result payload kinds (first byte of the kind frame).
KIND_ARRAY = b"A"   # frames: kind, dtype-and-origin header, raw array bytes
KIND_ITEMS = b"I"   # frames: kind, int64 (stream bytes, buffers) per item, streams, *buffers

_NATIVE_DTYPES = {int: np.dtype(np.int64), float: np.dtype(np.float64), bool: np.dtype(np.bool_)}


class ProtocolError(Exception):
    """A frame that does not decode: wrong version, unknown op, or malformed header."""


def encode(msg: Message) -> bytes:
    """Header frame for ``msg``."""
    return json.dumps([PROTOCOL_VERSION, msg.OP, *msg.fields()], separators=(",", ":")).encode()


def decode(header: bytes) -> Message:
    """Message from a header frame; raises ProtocolError if it is not one of ours."""
    try:
        version, op, *fields = json.loads(header)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"malformed header {bytes(header)[:60]!r}") from exc
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version} (expected {PROTOCOL_VERSION})")
    try:
        return message_class(op)(*fields)
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"bad message op {op!r} with {len(fields)} fields") from exc


def dumps(obj: Any) -> List[Any]:
    """Pickle-5 ``obj``; returns ``[stream, *buffers]`` where large buffers are out of band."""
    buffers: List[pickle.PickleBuffer] = []

    def keep_large(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes >= OUT_OF_BAND_BYTES:
            buffers.append(buf)
            return False  # out of band
        return True

    stream = pickle.dumps(obj, protocol=5, buffer_callback=keep_large)
    return [stream, *buffers]


def loads(frames: Sequence[Any]) -> Any:
    """Inverse of ``dumps``: ``frames[0]`` is the stream, the rest are the out-of-band buffers."""
    return pickle.loads(frames[0], buffers=frames[1:])


def _uniform_type(values: Sequence[Any]) -> Optional[type]:
    """The one type of every value in ``values`` (non-empty), or None."""
    kind = type(values[0])
    # counting identities in a list of types is ~2x faster than building a set of them
    return kind if list(map(type, values)).count(kind) == len(values) else None


def typed_array(values: Sequence[Any]) -> Optional[Tuple[np.ndarray, str]]:
    """``(array, origin)`` when every value is a numeric scalar of one type, else None."""
    kind = _uniform_type(values)
    if kind in _NATIVE_DTYPES:
        try:  # every value is known to be of this one type, so fromiter cannot coerce anything
            return np.fromiter(values, dtype=_NATIVE_DTYPES[kind], count=len(values)), "native"
        except OverflowError:  # an int beyond int64 stays an exact Python int
            return None
    if kind is not None and issubclass(kind, np.generic) and values[0].dtype.kind in "biufc":
        return np.array(values, dtype=values[0].dtype), "numpy"
    return None


def pack_results(values: Sequence[Any], max_bytes: Optional[int] = None,
                 at_item: Optional[Callable[[int], None]] = None
                 ) -> Tuple[List[Any], List[Tuple[int, BaseException]]]:
    """Frames for one batch of results, and (offset, exception) of results that cannot be sent.

    Numeric scalars of one type become ONE array frame. Anything else is pickled item by item into
    one stream (so one bad result fails only its own slice) with large buffers out of band. A
    result whose pickled size exceeds ``max_bytes`` is refused with ERESULTTOOBIG. ``at_item`` is
    told which item is being pickled (pickling runs user code that may hang).
    """
    if values:
        typed = typed_array(values)
        if typed is not None:
            array, origin = typed
            return [KIND_ARRAY, f"{array.dtype.str}|{origin}".encode(), array], []
    buffers: List[Any] = []
    sizes: List[int] = []
    parts: List[bytes] = []
    failures: List[Tuple[int, BaseException]] = []

    def keep_large(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes >= OUT_OF_BAND_BYTES:
            buffers.append(buf)
            return False
        return True

    for offset, value in enumerate(values):
        before = len(buffers)
        if at_item is not None:
            at_item(offset)
        try:
            part = pickle.dumps(value, protocol=5, buffer_callback=keep_large)
            size = len(part) + sum(b.raw().nbytes for b in buffers[before:])
            if max_bytes is not None and size > max_bytes:
                raise ERESULTTOOBIG(f"a {type(value).__name__} result of {size} bytes is over "
                                    f"the job's maxResultBytes of {max_bytes} bytes")
        except BaseException as exc:  # noqa: B902 - even sys.exit in __reduce__ fails one slice
            del buffers[before:]
            failures.append((offset, exc))
            part = pickle.dumps(None, protocol=5)
        parts.append(part)
        sizes.extend((len(part), len(buffers) - before))
    index = np.array(sizes, dtype=np.int64)
    return [KIND_ITEMS, index, b"".join(parts), *buffers], failures


def unpack_results(frames: Sequence[Any]) -> Tuple[Any, bool, List[Tuple[int, BaseException]]]:
    """Inverse of ``pack_results``: ``(array_or_list, native, failures)``.

    ``native`` tells a typed array's readers to hand out Python scalars (the work function returned
    ``int``/``float``/``bool``) rather than numpy scalars; ``failures`` lists (offset, exception)
    of results that would not unpickle here.
    """
    kind = bytes(frames[0])
    if kind == KIND_ARRAY:
        dtype, origin = bytes(frames[1]).decode().split("|")
        return np.frombuffer(frames[2], dtype=np.dtype(dtype)), origin == "native", []
    if kind != KIND_ITEMS:
        raise ProtocolError(f"unknown result payload kind {kind!r}")
    index = np.frombuffer(frames[1], dtype=np.int64).reshape(-1, 2).tolist()
    stream = memoryview(frames[2])
    buffers = frames[3:]
    values: List[Any] = []
    failures: List[Tuple[int, BaseException]] = []
    pos = nbuf = 0
    for offset, (size, count) in enumerate(index):
        try:
            values.append(pickle.loads(stream[pos:pos + size], buffers=buffers[nbuf:nbuf + count]))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: B902 - even sys.exit in __setstate__ fails one slice
            values.append(None)
            failures.append((offset, exc))
        pos += size
        nbuf += count
    return values, False, failures


def pack_inputs(items: Sequence[Any]) -> List[Any]:
    """Frames for a chunk of input items (`pack_results`' encoding); raises what an item that
    cannot be pickled raised."""
    frames, failures = pack_results(items)
    if failures:
        raise failures[0][1]
    return frames


def unpack_inputs(frames: Sequence[Any], start: int, stop: int,
                  fetch: Optional[Callable[[int], Any]] = None) -> Iterator[Any]:
    """Items ``start:stop`` of a `pack_inputs` chunk, in order, each unpickled only when reached.

    ``fetch(i)`` gives frame ``i`` (default ``frames[i]``); it is asked for each frame once, and for
    an item's own buffers only just before that item is unpickled, so a worker that reads large
    buffers on demand holds one item's at a time, still in its cache when the work function uses
    it (measured: 1 MiB arguments read and summed item by item took 19 ms per 100 against 29 ms
    read all first). An item that cannot be fetched or unpickled raises from ``next`` and the
    iterator goes on with the next item, so it fails its own slice only.
    """
    fetch = frames.__getitem__ if fetch is None else fetch
    kind = bytes(fetch(0))
    if kind == KIND_ARRAY:
        dtype, origin = bytes(fetch(1)).decode().split("|")
        part = np.frombuffer(fetch(2), dtype=np.dtype(dtype))[start:stop]
        return iter(part.tolist() if origin == "native" else list(part))
    if kind != KIND_ITEMS:
        raise ProtocolError(f"unknown input payload kind {kind!r}")
    return _LazyItems(fetch, start, stop)


class _LazyItems:
    """The iterator `unpack_inputs` returns for pickled items (a class, not a generator: a
    generator that raised is finished, and the items after a bad one must still come)."""

    def __init__(self, fetch: Callable[[int], Any], start: int, stop: int) -> None:
        index = np.frombuffer(fetch(1), dtype=np.int64).reshape(-1, 2)
        self._fetch = fetch
        self._stream = memoryview(fetch(2))
        self._position = int(index[:start, 0].sum())
        self._buffer = 3 + int(index[:start, 1].sum())
        self._items = iter(index[start:stop].tolist())

    def __iter__(self) -> "_LazyItems":
        return self

    def __next__(self) -> Any:
        size, count = next(self._items)
        position, buffer = self._position, self._buffer
        self._position, self._buffer = position + size, buffer + count  # past it even if it fails
        try:
            buffers = [self._fetch(i) for i in range(buffer, buffer + count)]
            return pickle.loads(self._stream[position:position + size], buffers=buffers)
        except StopIteration as exc:  # would end the caller's loop: the item's failure only
            raise RuntimeError(f"input item raised StopIteration: {exc}") from exc
