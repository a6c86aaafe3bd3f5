"""A running task's progress in the terminal: redrawn in place on a TTY, a plain line now and then otherwise.

The visualiser shows progress when a run uses luigid; this is for the person at the terminal of a
`--local-scheduler` run, and for cron's mail or a log file (not a TTY), which get a line at most every
`[progress] interval` seconds so a long download still shows it is moving.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

_CLEAR_LINE = "\r\x1b[K"
_LOGGERS = ("", "luigi-interface")  # where luigi and our logging.cfg put their stderr handlers (luigi_tasks.cli)


class TerminalProgress:
    """Shows `what` (e.g. 'ToParquet yellow 2021-01') as it progresses, on `stream` (default stderr)."""

    def __init__(self, what: str, *, unit: str, scale: float, interval: float, stream: TextIO | None = None) -> None:
        self.what, self.unit, self.scale, self.interval = what, unit, scale, interval
        self.stream = stream or sys.stderr
        self.tty = _isatty(self.stream)
        self._started = self._last_line = time.monotonic()
        self._drawn = False

    def update(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self.tty:
            _clear_before_log_lines(self)
            self._write(_CLEAR_LINE + self.describe(done, total, now))
            self._drawn = True
            if total and done >= total:
                self.finish()  # the task's own "done" line follows at once
        elif now - self._last_line >= self.interval:
            self._last_line = now
            self._write(self.describe(done, total, now) + "\n")

    def finish(self) -> None:
        """Take the redrawn line away, so that the next log line starts on a clean line."""
        if self._drawn:
            self._write(_CLEAR_LINE)
            self._drawn = False

    def describe(self, done: int, total: int | None, now: float) -> str:
        shown = f"{done / self.scale:,.0f}"
        if total:
            shown += f" of {total / self.scale:,.0f} {self.unit} ({done * 100 // total}%)"
        else:
            shown += f" {self.unit}"
        elapsed = now - self._started
        rate = f", {done / self.scale / elapsed:,.1f} {self.unit}/s" if elapsed >= 1 else ""
        return f"{self.what}: {shown}{rate}"

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal or pipe must not fail the task


class _ClearDrawnLine(logging.Filter):
    """Takes a drawn progress line away before a log line is written to the same terminal."""

    def __init__(self, progress: TerminalProgress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.finish()
        return True


def _clear_before_log_lines(progress: TerminalProgress) -> None:
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if getattr(handler, "stream", None) is progress.stream:
                for old in [f for f in handler.filters if isinstance(f, _ClearDrawnLine)]:
                    handler.removeFilter(old)
                handler.addFilter(_ClearDrawnLine(progress))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
