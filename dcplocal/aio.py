"""``job.aio``: the asyncio forms of a job's blocking calls.

``await job.aio.exec()`` and ``await job.aio.localExec(n)`` run the blocking call on a thread of
the event loop's default executor (listeners run on that thread); ``async for event in
job.aio.results(n)`` streams each slice's ``result`` event as it completes. Cancelling the
awaiting task, or leaving the ``async for`` early, cancels the job and waits until it stopped.

Must not know: the runtime, sockets; it drives a Job through its public methods only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import Payload

if TYPE_CHECKING:
    from .job import Job
    from .results import ResultHandle


class JobAio:
    """``await job.aio.exec()`` / ``await job.aio.localExec(n)`` / ``async for ev in
    job.aio.results(n)``: the blocking calls on a thread of the default executor, with
    listeners still running on that one thread. Cancelling the awaiting task (``task.cancel()``,
    ``asyncio.wait_for`` timing out) cancels the job, and waits until it stopped."""

    def __init__(self, job: "Job") -> None:
        self._job = job

    async def exec(self, *args: Any, **kwargs: Any) -> ResultHandle:
        return await self._run(lambda: self._job.exec(*args, **kwargs))

    async def localExec(self, cores: Any = None) -> ResultHandle:
        return await self._run(lambda: self._job.localExec(cores))

    async def _run(self, call: Any) -> ResultHandle:
        import asyncio

        running = asyncio.get_running_loop().run_in_executor(None, call)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            await self._stop(running)
            raise

    async def _stop(self, running: Any) -> None:
        """Cancel the job and wait for its thread to return (the job ends within a second)."""
        import asyncio

        self._job.cancel()
        try:
            await asyncio.shield(running)
        except BaseException:  # noqa: B902 - JobCancelledError, or another cancel of ours
            pass

    def results(self, cores: Any = None) -> "_ResultStream":
        """``async for event in job.aio.results(cores)``: run the job as ``localExec(cores)``
        and yield each slice's ``result`` event payload (``sliceNumber``, ``sort``, ``input``,
        ``result``) as that slice completes, in completion order. A failed job raises its error
        after the results that did arrive; leaving the loop early cancels the job."""
        return _ResultStream(self, cores)


class _ResultStream:
    """The async iterator of `JobAio.results`. A class, not an async generator: one left by
    ``break`` is dropped at once, and dropping it cancels the job (an async generator would
    run on until the event loop finalised it)."""

    _END = object()

    def __init__(self, aio: JobAio, cores: Any) -> None:
        self._aio, self._cores = aio, cores
        self._running: Any = None
        self._arrived: Any = None
        self._listener: Any = None
        self._over = False

    def __aiter__(self) -> "_ResultStream":
        return self

    def _start(self) -> None:
        import asyncio

        # the callbacks below must not hold this object: dropping it is what cancels the job
        loop, job, cores, end = asyncio.get_running_loop(), self._aio._job, self._cores, self._END
        arrived: "asyncio.Queue[Any]" = asyncio.Queue()

        def on_result(event: Payload) -> None:
            loop.call_soon_threadsafe(arrived.put_nowait, event)

        job.on("result", on_result)
        self._arrived, self._listener = arrived, on_result
        self._running = loop.run_in_executor(None, lambda: job.localExec(cores))
        # the thread's result events were queued before it returned, so `end` comes last
        self._running.add_done_callback(lambda _: arrived.put_nowait(end))

    async def __anext__(self) -> Payload:
        if self._over:
            raise StopAsyncIteration
        if self._running is None:
            self._start()
        event = await self._arrived.get()
        if event is not self._END:
            return event
        self._over = True
        self._aio._job.off("result", self._listener)
        self._running.result()  # the job's own error, if it failed
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel the job if it still runs, and wait until it stopped."""
        self._over = True
        if self._running is not None and not self._running.done():
            await self._aio._stop(self._running)

    def __del__(self) -> None:
        running = self._running
        if running is not None and not running.done():
            self._aio._job.off("result", self._listener)
            self._aio._job.cancel()
            running.add_done_callback(lambda done: done.exception())  # retrieved: no log noise
