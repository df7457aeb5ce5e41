"""The handler :func:`smtpx.maillog.configure_logging` installs: a
:class:`logging.StreamHandler` that writes the mail log's info and debug lines made in an
event loop together, at the loop's next pass, instead of one system call each.

Why: on ``smtpx serve`` intake each message makes two lines (``accepted``, then
``deferred`` or ``delivered``), and each was a ``write`` of its own; now the lines of one
pass of the loop share one (with kept connections: 6.2 writes a message of every kind
before, 4.5 after, and about 2% less CPU a message; under systemd each write also wakes
journald; docs/performance.md). Nothing waits longer than that pass: the lines are
written at the loop's next pass, and at once when no loop runs (the CLI's commands) or
outside a loop's thread, for a warning or an error (which writes the lines before it
first), and for a stream without a file descriptor (a ``StringIO`` costs no system
call). The stdlib's path through this handler (another logger's line) writes the waiting
lines first too, and so does ``flush()``, which :func:`logging.shutdown` calls at exit:
the lines keep their order, and an ordinary exit loses none.

Each ``write`` holds whole lines and at most ``PIPE_BUF`` octets when it can (a longer
line goes alone, as before): the workers of ``smtpx serve`` share their supervisor's
standard error, and a pipe keeps writes of that size whole, never mixed with another
worker's.
"""

from __future__ import annotations

import asyncio
import logging
import select
from typing import Any, TextIO

__all__ = ["ATOMIC_WRITE", "BatchingHandler"]

# What a pipe writes whole (POSIX: at least 512; Linux: 4096).
ATOMIC_WRITE = getattr(select, "PIPE_BUF", 512)


class BatchingHandler(logging.StreamHandler[TextIO]):
    """A stream handler that also takes finished lines (:meth:`add_line`) to write at the
    running loop's next pass."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._batching = _has_descriptor(stream)
        # The loop a write of the waiting lines is scheduled on (None: no write is): a
        # loop closed before it ran the write leaves it here, and the next line made in
        # another loop schedules one there.
        self._scheduled: asyncio.AbstractEventLoop | None = None

    def add_line(self, text: str, *, urgent: bool = False) -> None:
        """Write ``text`` and the terminator: now when ``urgent`` (or when batching does
        not apply), else at the running loop's next pass. The caller holds the lock."""
        self._pending.append(text + self.terminator)
        if urgent or not self._batching:
            self._write_pending()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: the waiting lines and this one
            self._write_pending()
            return
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self._write_soon)

    def setStream(self, stream: TextIO) -> TextIO | None:
        """The stdlib's: the waiting lines go to the old stream (its flush)."""
        old = super().setStream(stream)
        self._batching = _has_descriptor(stream)
        return old

    def emit(self, record: logging.LogRecord) -> None:
        """The stdlib's path (the lock held): the waiting lines go first."""
        if self._pending:
            self._flush_pending()
        super().emit(record)

    def flush(self) -> None:
        """The waiting lines first (``logging.shutdown`` calls this at exit)."""
        self.acquire()
        try:
            if self._pending:
                self._flush_pending()
            super().flush()  # (the lock is an RLock)
        finally:
            self.release()

    def _write_soon(self) -> None:
        self.acquire()
        try:
            self._scheduled = None
            if self._pending:  # (a warning may have written them)
                self._flush_pending()
        finally:
            self.release()

    def _flush_pending(self) -> None:
        """Write the waiting lines; a failing stream is reported, never raised."""
        try:
            self._write_pending()
        except Exception:  # as StreamHandler.emit: reported, never raised into mail
            self.handleError(logging.makeLogRecord({"msg": "mail log lines not written"}))

    def _write_pending(self) -> None:
        lines, self._pending = self._pending, []
        stream = self.stream
        for chunk in _chunks(lines, ATOMIC_WRITE):
            stream.write(chunk)
            stream.flush()


def _chunks(lines: list[str], limit: int) -> list[str]:
    """``lines`` joined into texts of at most ``limit`` octets in UTF-8 where possible:
    whole lines, in order (a line longer than ``limit`` alone)."""
    if len(lines) == 1:
        return lines
    chunks: list[str] = []
    start = size = 0
    for at, line in enumerate(lines):
        octets = len(line) if line.isascii() else len(line.encode("utf-8", "replace"))
        if size + octets > limit and at > start:
            chunks.append("".join(lines[start:at]))
            start, size = at, 0
        size += octets
    chunks.append("".join(lines[start:]))
    return chunks


def _has_descriptor(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return True
