"""How one Python object becomes bytes and back: the same rules in the client, the workers and
``localExec(0)``.

A worker is a fresh interpreter whose ``__main__`` is dcplocal's worker module, not the user's
script or notebook. So what the script defines (a dataclass, an Enum, a NamedTuple, a function,
an exception class) cannot travel *by reference*, the way plain pickle sends it; it has to
travel *by value*, the way cloudpickle sends it. Three rules:

* **Data** (results, input items, ``work.emit`` values): plain pickle first, since it is C-fast,
  and cloudpickle for the item whose plain pickle fails, or whose stream names ``__main__``
  (it would load in this process and fail, or worse find a namesake, in the other). The check
  is one substring search per item, and numeric batches never get here (codec's typed arrays).
  cloudpickle tags each class it sends by value with a tracker id, so a class that went out
  with the work function comes back as *the same class* in the client: ``isinstance`` and a
  dataclass's ``==`` hold.
* **Code** (the work function and its arguments): always cloudpickle, plus an
  ``functools.lru_cache``/``cache`` wrapper defined in ``__main__`` sent by value (its own
  reduce names it as a global, which the worker cannot find).
* **Exceptions** keep their class and attributes even where their own pickling would not
  round-trip (an ``__init__`` with extra required arguments, a ``__reduce__`` that raises):
  they are rebuilt from class, ``args`` and ``__dict__`` without calling ``__init__``.

Must not know: frames, sockets, jobs.
"""
from __future__ import annotations

import functools
import importlib.machinery
import io
import pickle
import sys
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

import cloudpickle

#: numpy arrays at least this large travel as their own frame instead of inside the pickle stream.
#: Below it, an extra frame costs more than the copy it saves (~64 KiB is where zmq's zero-copy
#: send overtakes memcpy).
OUT_OF_BAND_BYTES = 64 * 1024

_MAIN = b"__main__"


def _out_of_band(buffers: List[Any]) -> Callable[[pickle.PickleBuffer], bool]:
    def keep_large(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes >= OUT_OF_BAND_BYTES:
            buffers.append(buf)
            return False  # out of band
        return True

    return keep_large


def _not_importable(obj: Any) -> bool:
    """Whether a receiving process could not find ``obj`` by its module and qualified name
    (it lives in ``__main__``, in a function, or in no importable module)."""
    module = getattr(obj, "__module__", None)
    if module == "__main__" or module not in sys.modules:
        return True
    found: Any = sys.modules[module]
    for part in getattr(obj, "__qualname__", "<locals>").split("."):
        found = getattr(found, part, None)
    return found is not obj


_FINDABLE: Dict[str, bool] = {}


def _by_value_if_unfindable(name: Optional[str]) -> None:
    """Have cloudpickle send a module's functions and classes by value when a worker could not
    import that module by name: one loaded from a file path (``spec_from_file_location``, a
    plugin loader, pytest's importlib mode) is in this process's ``sys.modules`` only."""
    if not name or name == "__main__" or name in _FINDABLE:
        return
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    top = name.partition(".")[0]
    findable = (module is None or top in sys.builtin_module_names
                or getattr(spec, "origin", None) in ("built-in", "frozen")
                or importlib.machinery.PathFinder.find_spec(top) is not None)
    _FINDABLE[name] = findable
    if not findable:
        cloudpickle.register_pickle_by_value(module)


def _lru_cached(fn: Callable[..., Any], maxsize: Optional[int], typed: bool) -> Callable[..., Any]:
    """Rebuilds an ``lru_cache`` wrapper on the receiving side (with an empty cache)."""
    return functools.lru_cache(maxsize=maxsize, typed=typed)(fn)


def _with_attributes(cls: Any, attributes: dict) -> Any:
    """An instance of ``cls`` made without ``__init__``, its attributes set one by one (which
    fills slots and ``__dict__`` alike)."""
    obj = cls.__new__(cls)
    for name, value in attributes.items():
        setattr(obj, name, value)
    return obj


class _ByValuePickler(cloudpickle.Pickler):
    """cloudpickle, plus script-defined ``lru_cache`` wrappers by value, and instances of a
    by-value class with ``__slots__`` as plain attributes: the copy cloudpickle rebuilds of
    such a class keeps its instances in a ``__dict__``, whose state the original class, with
    real slots, would refuse on the way back."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)):
            _by_value_if_unfindable(getattr(obj, "__module__", None))
        cls = type(obj)
        if cls is functools._lru_cache_wrapper and _not_importable(obj):
            params = obj.cache_parameters()
            return _lru_cached, (obj.__wrapped__, params["maxsize"], params["typed"])
        if ("__slots__" in getattr(cls, "__dict__", ()) and hasattr(obj, "__dict__")
                and _not_importable(cls)):
            return _with_attributes, (cls, dict(obj.__dict__))
        return super().reducer_override(obj)


def dumps_by_value(obj: Any, buffers: Optional[List[Any]] = None) -> bytes:
    """``obj`` pickled as cloudpickle would, large buffers appended to ``buffers`` when given."""
    stream = io.BytesIO()
    callback = _out_of_band(buffers) if buffers is not None else None
    _ByValuePickler(stream, protocol=5, buffer_callback=callback).dump(obj)
    return stream.getvalue()


def item_dumper(buffers: Optional[List[Any]] = None) -> Callable[[Any], bytes]:
    """`dumps` for many items, sharing one ``buffers`` list: what can be made once per batch
    (the out-of-band callback) is made here, so each item costs plain pickle's call, the
    ``__main__`` check, and nothing more."""
    callback = _out_of_band(buffers) if buffers is not None else None
    plain = pickle.dumps

    def dump(obj: Any) -> bytes:
        mark = len(buffers) if buffers is not None else 0
        try:
            stream = plain(obj, 5, buffer_callback=callback)
            if _MAIN not in stream:
                return stream
        except Exception:  # noqa: BLE001 - plain pickle's refusal is not final: try by value
            pass
        if buffers is not None:
            del buffers[mark:]
        return dumps_by_value(obj, buffers)

    return dump


def dumps(obj: Any, buffers: Optional[List[Any]] = None) -> bytes:
    """``obj`` as a pickle stream that loads in any dcplocal process (see the module's rules).

    With ``buffers``, numpy arrays of ``OUT_OF_BAND_BYTES`` or more are appended to it instead of
    copied into the stream. Raises what pickling raised when even cloudpickle cannot send it.
    """
    return item_dumper(buffers)(obj)


def loads(stream: Any, buffers: Any = ()) -> Any:
    """Inverse of `dumps` and `dumps_by_value`."""
    return pickle.loads(stream, buffers=buffers)


# ---- exceptions ---------------------------------------------------------------------------

def _rebuild_exception(cls: Any, args: Tuple[Any, ...], state: Optional[dict]) -> BaseException:
    """An exception of ``cls`` with ``args`` and attributes ``state``, without its ``__init__``."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    if state:
        exc.__dict__.update(state)
    return exc


def dumps_exception(exc: BaseException) -> Tuple[Optional[bytes], str]:
    """``(stream, "")`` that loads as an exception of ``exc``'s class with its args and
    attributes, or ``(None, why)`` when it cannot cross a process boundary at all."""
    reason = ""
    try:
        stream = dumps(exc)
        if type(loads(stream)) is type(exc):
            return stream, ""
        reason = "its pickle loads as another type"
    except Exception as err:  # noqa: BLE001 - its own pickling failed: rebuild it below
        reason = f"{type(err).__name__}: {err}"
    state, dropped = {}, []
    for name, value in getattr(exc, "__dict__", {}).items():
        try:  # an attribute that will not pickle costs that attribute only
            dumps(value)
            state[name] = value
        except Exception:  # noqa: BLE001 - named in a note instead
            dropped.append(name)
    if dropped:
        state["__notes__"] = [*state.get("__notes__", []),
                              f"attribute(s) {', '.join(dropped)} could not be pickled and were dropped"]
    try:
        stream = dumps_by_value(_Rebuilt(type(exc), exc.args, state))
        if type(loads(stream)) is type(exc):
            return stream, ""
        reason = "it does not rebuild as its own type"
    except Exception as err:  # noqa: BLE001 - the reason is reported instead
        reason = f"{type(err).__name__}: {err}"
    return None, reason


class _Rebuilt:
    """Pickles as `_rebuild_exception` of its fields."""

    def __init__(self, cls: type, args: Tuple[Any, ...], state: Optional[dict]) -> None:
        self.cls, self.args, self.state = cls, args, state

    def __reduce__(self) -> Any:
        return _rebuild_exception, (self.cls, self.args, self.state)
