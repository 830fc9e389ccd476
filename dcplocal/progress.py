"""The progress bar of a running job, drawn with tqdm on the caller's terminal or notebook.

Whether a job shows one: ``localExec(n, progress=True/False)`` or ``exec(progress=...)`` first,
then the ``DCPLOCAL_PROGRESS`` environment variable (``1``/``0``; ``auto`` is the default), then
auto: on when stderr is a terminal or the code runs in a Jupyter kernel, off otherwise (a log
file never gets control characters). Even when on, the bar appears only once the job has run
``DELAY_SECONDS``, so short jobs stay silent.

It shows slices done of the total, the rate, the ETA and how many slices failed. While it is on,
console output of work functions and records of the client's ``logging`` are written above
it (``tqdm.write`` and tqdm's logging redirect), never through it.

Must not know: the runtime, sockets, how results arrive. The Job calls `update` from its own
thread; nothing here is called per slice.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Optional, TextIO

from .errors import EINVAL

#: A job shorter than this never shows a bar: a blinking bar on every 10 ms job is noise.
DELAY_SECONDS = 1.0
ENVIRONMENT = "DCPLOCAL_PROGRESS"


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def wanted(progress: Any) -> bool:
    """Whether a job gets a progress bar (see the module docstring for the order of rules)."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise EINVAL(f"progress must be True, False or None, not {progress!r}")
        return progress
    setting = os.environ.get(ENVIRONMENT, "auto").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off", ""):
        return False
    if setting != "auto":
        raise EINVAL(f"{ENVIRONMENT}={setting!r}: use 1, 0 or auto")
    stream = sys.stderr
    return _in_notebook() or bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def _has_fd(stream: Any) -> bool:
    try:
        os.get_terminal_size(stream.fileno())
        return True
    except (AttributeError, OSError, ValueError):
        return False


class JobProgress:
    """One job's bar; `update` as results arrive, `write` for console output, `close` at the end.

    The bar itself (and tqdm's logging redirect) is made only once the job has run
    ``DELAY_SECONDS``: tqdm's own delay is not enough, because ``tqdm.write`` draws every bar
    it knows of, so a short job that prints would flash a half-drawn bar and leave it behind.
    """

    def __init__(self, total: Optional[int], description: str = "") -> None:
        self.total, self.description = total, description
        self.started = time.monotonic()
        self.bar: Any = None
        self.failed = 0
        self._logging = contextlib.ExitStack()

    def _show(self, computed: int) -> None:
        if _in_notebook():
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._tqdm = tqdm
        # a terminal that reports no width (a pty nobody sized) would get an empty bar
        sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0 if _has_fd(sys.stderr) else False
        self.bar = tqdm(total=self.total, desc=self.description or None, unit="slice",
                        initial=computed, dynamic_ncols=sized, ncols=None if sized else 80,
                        file=sys.stderr, leave=True)
        self.bar.start_t = self.started  # its rate and elapsed time count from the job's start
        self._logging.enter_context(logging_redirect_tqdm(tqdm_class=tqdm))

    def update(self, computed: int, failed: int, total: Optional[int]) -> None:
        self.total = total if total is not None else self.total
        if self.bar is None:
            if time.monotonic() - self.started < DELAY_SECONDS:
                return
            self._show(computed)
        bar = self.bar
        if self.total is not None and bar.total != self.total:
            bar.total = self.total
        if failed != self.failed:
            self.failed = failed
            bar.set_postfix_str(f"failed={failed}", refresh=False)
        bar.update(computed - bar.n)

    def write(self, text: str, stream: TextIO) -> None:
        if self.bar is None:
            print(text, file=stream)
        else:
            self._tqdm.write(text, file=stream)

    def close(self) -> None:
        self._logging.close()
        if self.bar is not None:
            self.bar.close()
