"""The ``compute`` module of the DCP Compute API: ``compute.for_``, ``compute.do`` and friends.

``compute.for_`` accepts every form of the spec (range object or dict; start, end[, step];
multi-range; sparse; distribution; any iterable) and returns a `Job`. ``getattr(compute, "for")``
is the same function, so DCP documentation applies verbatim. Arguments are checked here, so bad
input fails with a typed error before any process starts.

Must not know: sockets, processes, how jobs run.
"""
from __future__ import annotations

import numbers
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union, overload

from . import ranges
from .distributions import stats  # noqa: F401 - re-exported for compute users
from .errors import EINVAL, ENOTAVAIL, ETYPE
from .job import JOBS, Job
from .jobinputs import DataInput
from .ranges import MultiRangeObject, RangeObject, SparseRangeObject
from .sandbox import CallWithoutDatum


#: The spec's NYI market rate (DCC per slice), used by marketValue and calculateSlicePayment.
MARKET_RATE = 0.0001465376


def _is_number(value: Any) -> bool:
    return isinstance(value, (numbers.Real, Decimal, Fraction)) and not isinstance(value, bool)


def _check_work(work: Any) -> Any:
    """``work`` as given; a source string is compiled here, so a syntax error is reported before
    any process starts."""
    if callable(work):
        return work
    if not isinstance(work, str):
        raise ETYPE(f"work must be a callable or a source string, not {type(work).__name__}")
    if not work.strip():
        raise EINVAL("work function source is empty")
    try:
        compile(work, "<work function>", "eval")
    except SyntaxError:
        try:
            compile(work, "<work function>", "exec")
        except SyntaxError as exc:
            raise EINVAL(f"work function source does not compile: {exc.msg} (line {exc.lineno}: "
                         f"{(exc.text or '').strip()!r})") from exc
    return work


def _check_args(arguments: Any) -> Tuple[Any, ...]:
    if arguments is None:
        return ()
    if isinstance(arguments, (list, tuple)):
        return tuple(arguments)
    raise ETYPE(f"work function arguments must be a list or tuple, not {type(arguments).__name__}")


def _job_from_input(input_set: Any, work: Any, arguments: Any) -> Job:
    if isinstance(input_set, range) and len(input_set):  # travels as a range, not as data
        input_set = RangeObject(input_set.start, input_set[-1], input_set.step)
    spec = ranges.to_input_spec(input_set)
    if spec is not None:
        return Job(spec, None, _check_work(work), _check_args(arguments))
    if isinstance(input_set, (str, bytes, dict)) or not isinstance(input_set, Iterable):
        raise ETYPE(f"input set must be a range object, a distribution or an iterable, "
                    f"not {type(input_set).__name__}")
    return Job(None, DataInput(input_set), _check_work(work), _check_args(arguments))


Number = Union[int, float, Decimal, Fraction]
Work = Union[Callable[..., Any], str]
InputSet = Union[RangeObject, MultiRangeObject, SparseRangeObject, Dict[str, Any], Iterable[Any]]


@overload
def for_(input_set: InputSet, work: Work, arguments: Optional[Sequence[Any]] = None, /) -> Job: ...


@overload
def for_(start: Number, end: Number, work: Work, arguments: Optional[Sequence[Any]] = None,
         /) -> Job: ...


@overload
def for_(start: Number, end: Number, step: Number, work: Work,
         arguments: Optional[Sequence[Any]] = None, /) -> Job: ...


def for_(*args: Any, **kwargs: Any) -> Job:
    """Make a job that maps ``work`` over an input set; nothing runs until ``exec``/``localExec``.

    The spec's ``compute.for`` (also ``getattr(compute, "for")``), in every form::

        compute.for_(range_object, work[, arguments])        # 1: RangeObject or {start, end, step, group}
        compute.for_(start, end, step, work[, arguments])    # 2a: end inclusive, exact arithmetic
        compute.for_(start, end, work[, arguments])          # 2b: step 1; end < start is empty
        compute.for_([range, range, ...], work[, arguments]) # 3: multi-range (Cartesian product):
                                                             #    work(i, j, ...), results nest
        compute.for_({"sparse": [range, ...]}, work[, arguments])  # sparse: ranges one after another
        compute.for_(iterable, work[, arguments])            # 4: any iterable or generator, streamed
        compute.for_(stats.set.normalRNG(n, ...), work[, arguments])  # a distribution

    ``work`` is any callable (closures, lambdas and script-level functions travel by value) or
    source text defining or evaluating to one function; it is called ``work(datum,
    *arguments)``. A range object without a step counts down when ``end < start``; a step that
    moves away from ``end`` raises ERANGE; ``group=g`` hands each slice a numpy array of up to g
    values. Bad input raises a typed ``dcplocal.errors`` error (ETYPE, EINVAL, ERANGE) here.

    Example::

        results = compute.for_(1, 3, lambda i: i * 10).localExec(2)   # [10, 20, 30]
    """
    if kwargs:
        raise ETYPE(f"compute.for takes positional arguments only, got {', '.join(kwargs)}")
    if not args:
        raise ETYPE("compute.for needs an input set (or start, end) and a work function")
    if _is_number(args[0]):
        if len(args) >= 3 and _is_number(args[2]):
            start, end, step, rest = args[0], args[1], args[2], args[3:]
        else:
            start, end, step, rest = args[0], args[1] if len(args) > 1 else None, None, args[2:]
        if not _is_number(end):
            raise ETYPE(f"compute.for(start, end, …): end must be a number, not {end!r}")
        if not 1 <= len(rest) <= 2:
            raise ETYPE(f"compute.for(start, end[, step], work[, arguments]): got {len(args)} arguments")
        return _job_from_input(ranges.range_from_args(start, end, step), rest[0],
                               rest[1] if len(rest) > 1 else None)
    if not 2 <= len(args) <= 3:
        raise ETYPE(f"compute.for(inputSet, work[, arguments]): got {len(args)} arguments")
    return _job_from_input(args[0], args[1], args[2] if len(args) > 2 else None)


@overload
def do(work: Work, arguments: Optional[Sequence[Any]] = None, /) -> Job: ...


@overload
def do(n: int, work: Work, arguments: Optional[Sequence[Any]] = None, /) -> Job: ...


def do(*args: Any, **kwargs: Any) -> Job:
    """Make a job that calls ``work(*arguments)`` once, or ``n`` times; nothing runs until
    ``exec``/``localExec``::

        compute.do(work[, arguments])       # one slice: work(*arguments)
        compute.do(n, work[, arguments])    # n slices:  work(i, *arguments) for i in 0..n-1

    Example::

        compute.do(lambda: 6 * 7).localExec(1)           # [42]
        compute.do(3, lambda i, k: i * k, [10]).localExec(2)   # [0, 10, 20]
    """
    if kwargs:
        raise ETYPE(f"compute.do takes positional arguments only, got {', '.join(kwargs)}")
    if args and isinstance(args[0], numbers.Integral) and not isinstance(args[0], bool):
        n = int(args[0])
        if n < 0:
            raise EINVAL(f"compute.do(n, …): n must be >= 0, not {n}")
        if not 2 <= len(args) <= 3:
            raise ETYPE(f"compute.do(n, work[, arguments]): got {len(args)} arguments")
        input_set: Any = RangeObject(0, n - 1) if n else []
        return _job_from_input(input_set, args[1], args[2] if len(args) > 2 else None)
    if args and _is_number(args[0]):
        raise EINVAL(f"compute.do(n, …): n must be a whole number, not {args[0]!r}")
    if not 1 <= len(args) <= 2:
        raise ETYPE(f"compute.do(work[, arguments]): got {len(args)} arguments")
    job = _job_from_input([None], CallWithoutDatum(_check_work(args[0])), args[1] if len(args) > 1 else None)
    return job


def _find(job_or_id: Any) -> Job:
    if isinstance(job_or_id, Job):
        return job_or_id
    job = JOBS.get(job_or_id)
    if job is None:
        raise ENOTAVAIL(f"no job with id {job_or_id!r} in this process")
    return job


def cancel(job_or_id: Any) -> None:
    """Cancel a running job given its handle or id (``compute.cancel``)."""
    _find(job_or_id).cancel()


def resume(job_or_id: Any) -> Job:
    """The handle of a job of this process, to ``exec`` again (``compute.resume``)."""
    return _find(job_or_id)


def status(job_or_id: Any) -> Dict[str, Any]:
    """``{id, runStatus, total, distributed, computed}`` of a job (``compute.status``)."""
    job = _find(job_or_id)
    return {"id": job.id, **dict(job.status)}


def getJobInfo(job_id: Any) -> Dict[str, Any]:
    """Information and status of a job (``compute.getJobInfo``)."""
    job = _find(job_id)
    return {"id": job.id, "status": dict(job.status), "public": dict(job.public),
            "meanSliceProfile": job.meanSliceProfile, "receipt": job.receipt,
            "errorLimit": job.errorLimit, "failed": len(job._store.errors) if job._store else 0}


def getSliceInfo(job_id: Any) -> List[Dict[str, Any]]:
    """Per-slice status of a job: ``{sliceNumber, status}`` with status computed/failed/pending."""
    job = _find(job_id)
    store = job._store
    if store is None:
        return []
    info = []
    for index in range(store.size):
        state = "failed" if index in store.errors else "computed" if store.done[index] else "pending"
        info.append({"sliceNumber": index + 1, "status": state})
    return info


class _MarketValue(float):
    """``compute.marketValue``: the market rate as a number, and callable as marketValue(ratio, max)."""

    def __call__(self, ratio: float = 1.0, maximum: Optional[float] = None) -> Dict[str, Any]:
        offer = float(self) * ratio
        return {"offerPerSlice": offer if maximum is None else min(offer, maximum)}


marketValue = _MarketValue(MARKET_RATE)
marketRate = marketValue


def calculateSlicePayment(sliceProfile: Dict[str, float], workValue: Dict[str, float]) -> float:
    """Payment for one slice of ``sliceProfile`` at the rates of ``workValue`` (per unit)."""
    units = ("cpuHours", "gpuHours", "inputMBytes", "outputMBytes")
    return float(sum(float(sliceProfile.get(u, 0)) * float(workValue.get(u, 0)) for u in units))


__all__ = ["for_", "do", "cancel", "resume", "status", "getJobInfo", "getSliceInfo",
           "marketValue", "marketRate", "calculateSlicePayment", "RangeObject", "MultiRangeObject",
           "SparseRangeObject", "Job", "stats"]
globals()["for"] = for_
