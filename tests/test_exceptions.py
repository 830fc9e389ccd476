"""A work function's exception comes back as itself: its class, args and attributes, with the
worker's traceback as ``__cause__``, on localExec(0), (1) and (2) alike. Only an exception that
truly cannot be rebuilt becomes a SliceError, which then names its type, repr and why.

(A class defined in the user's ``__main__`` is covered by tests/scripts/script_types.py, run as a
script by test_serialization.py; here, a class defined inside a function travels by value too.)
"""
from __future__ import annotations

import threading

import pytest

from dcplocal import compute
from dcplocal.errors import RemoteTraceback, SliceError

MODES = (0, 1, 2)


class ModuleError(Exception):
    pass


class HttpError(Exception):
    """An ``__init__`` with extra required arguments: its default pickling cannot rebuild it."""

    def __init__(self, status, url):
        super().__init__(f"{status} at {url}")
        self.status, self.url = status, url


class RefusesToPickle(Exception):
    def __reduce__(self):
        raise RuntimeError("no pickling for me")


class Outer(Exception):
    pass


def _made_in_a_function():
    """A class and a work function that pickle cannot name, as a notebook's or script's: both
    travel by value, and the class comes back as this very class."""
    class LocalError(Exception):
        def __init__(self, code):
            super().__init__(code)
            self.code = code

    def raise_local(i):
        raise LocalError(i * 10)
    return LocalError, raise_local


LocalError, raise_local = _made_in_a_function()


def raise_module(i):
    raise ModuleError("module", i)


def raise_http(i):
    raise HttpError(503, f"http://example.invalid/{i}")


def raise_refusing(i):
    err = RefusesToPickle("refuses", i)
    err.detail = {"i": i}
    raise err


def raise_chained(i):
    try:
        {}["missing"]
    except KeyError as inner:
        raise Outer("outer") from inner


# (work function, expected class, expected args, expected attributes, text in the remote traceback)
SHAPES = {
    "module class": (raise_module, ModuleError, ("module", 0), {}, "ModuleError"),
    "extra __init__ arguments": (raise_http, HttpError, ("503 at http://example.invalid/0",),
                                 {"status": 503, "url": "http://example.invalid/0"}, "HttpError"),
    "__reduce__ raises": (raise_refusing, RefusesToPickle, ("refuses", 0), {"detail": {"i": 0}},
                          "RefusesToPickle"),
    "raise X from Y": (raise_chained, Outer, ("outer",), {}, "KeyError: 'missing'"),
    "class made in a function": (raise_local, LocalError, (0,), {"code": 0}, "LocalError"),
}


@pytest.mark.parametrize("cores", MODES)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_exceptions_keep_their_class_args_attributes_and_remote_traceback(shape, cores):
    work, cls, args, attributes, traceback_text = SHAPES[shape]
    with pytest.raises(cls) as caught:     # one slice: with two workers any could fail first
        compute.for_(0, 0, work).localExec(cores)
    error = caught.value
    assert type(error) is cls and error.args == args
    for name, value in attributes.items():
        assert getattr(error, name) == value
    assert isinstance(error.__cause__, RemoteTraceback)
    assert traceback_text in error.__cause__.tb


@pytest.mark.parametrize("cores", MODES)
def test_an_exception_that_cannot_be_rebuilt_is_a_slice_error_saying_what_and_why(cores):
    def raise_with_a_lock(i):
        raise ModuleError("locked", threading.Lock())
    with pytest.raises(SliceError) as caught:
        compute.for_(0, 0, raise_with_a_lock).localExec(cores)
    message = str(caught.value)
    assert "ModuleError" in message and "locked" in message and "lock" in message.lower()
    assert "not re-raised as its own type" in message
    assert isinstance(caught.value.__cause__, RemoteTraceback)


@pytest.mark.parametrize("cores", MODES)
def test_error_events_and_failed_entries_carry_the_rebuilt_exception(cores):
    job = compute.for_(0, 3, lambda i: i if i != 2 else raise_http(i))
    job.errorLimit = 1
    seen = []
    job.on("error", seen.append)
    results = job.localExec(cores)
    assert [results[i] for i in (0, 1, 3)] == [0, 1, 3]
    with pytest.raises(HttpError) as caught:
        results[2]
    assert caught.value.status == 503
    assert [type(event.error) for event in seen] == [HttpError] and seen[0].sliceIndex == 2
