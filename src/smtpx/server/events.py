"""Event streams: the envelope-received event (F117) and the error stream (F109: every
error-level log record, as events), on the bus of :mod:`smtpx.server.bus` (re-exported
here).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from smtpx.envelope import EnvelopeInfo
from smtpx.server.bus import EventBus, Listening, Subscription

__all__ = [
    "EnvelopeReceived",
    "ErrorEvent",
    "ErrorStream",
    "EventBus",
    "Listening",
    "Subscription",
]


@dataclass(frozen=True, slots=True)
class EnvelopeReceived:
    """A message arrived whole and is about to be handed to the plugin's ``process``."""

    time: float  # seconds since the epoch
    session_id: str
    info: EnvelopeInfo
    size: int


# -- the error stream (F109) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """One error-level log record. ``seq`` counts them from 1 since the stream began."""

    seq: int
    time: float
    level: str
    logger: str
    message: str
    exception: str | None = None
    fields: dict[str, Any] | None = None  # a mail log line's component, flows and tags

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "kind": "error",
            "seq": self.seq,
            "time": self.time,
            "level": self.level,
            "logger": self.logger,
            "message": self.message,
        }
        if self.exception:
            line["exception"] = self.exception
        if self.fields:
            line["fields"] = self.fields
        return line


class ErrorStream(logging.Handler):
    """A :mod:`logging` handler that publishes every record at ERROR or above on
    :attr:`bus`, and keeps the last ``keep`` of them (:attr:`recent`).

    Records logged from other threads (``asyncio.to_thread`` workers) reach the bus
    through the event loop the stream was made on, never directly: its queues are not
    thread-safe.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, keep: int = 100) -> None:
        super().__init__(logging.ERROR)
        self.loop = loop
        self.bus: EventBus[ErrorEvent] = EventBus()
        self.recent: collections.deque[ErrorEvent] = collections.deque(maxlen=keep)
        self.seq = 0
        self._thread = threading.get_ident()
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = self._event(record)
        except Exception:  # a record that cannot be formatted: logging's own report
            self.handleError(record)
            return
        if threading.get_ident() == self._thread:
            self._publish(event)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._publish, event)

    def _event(self, record: logging.LogRecord) -> ErrorEvent:
        with self.lock or contextlib.nullcontext():
            self.seq += 1
            seq = self.seq
        exception = None
        if record.exc_info:
            exception = self._formatter.formatException(record.exc_info)
        fields = getattr(record, "mail", None)
        return ErrorEvent(
            seq=seq,
            time=record.created,
            level=record.levelname.lower(),
            logger=record.name,
            message=record.getMessage(),
            exception=exception,
            fields=dict(fields) if isinstance(fields, dict) else None,
        )

    def _publish(self, event: ErrorEvent) -> None:
        self.recent.append(event)
        self.bus.publish(event)
