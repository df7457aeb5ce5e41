"""Event streams: a small publish/subscribe bus, the envelope-received event (F117), and
the error stream (F109: every error-level log record, as events).

A slow subscriber never slows the server: each subscriber has a bounded queue, and when it
is full the oldest event is dropped (and counted). A listener (:meth:`EventBus.listen`)
is called with each event as it is published instead: for quick bookkeeping (a counter,
a histogram), with no queue and no task to wake per event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from smtpx.envelope import EnvelopeInfo

__all__ = [
    "EnvelopeReceived",
    "ErrorEvent",
    "ErrorStream",
    "EventBus",
    "Listening",
    "Subscription",
]

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EnvelopeReceived:
    """A message arrived whole and is about to be handed to the plugin's ``process``."""

    time: float  # seconds since the epoch
    session_id: str
    info: EnvelopeInfo
    size: int


class EventBus(Generic[T]):
    """Publish without waiting; subscribe with ``async for event in bus.subscribe():``."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[T]] = set()
        self._listeners: tuple[Callable[[T], None], ...] = ()
        self._reporting = False  # a listener's failure is being logged
        self.dropped = 0

    @property
    def subscribers(self) -> int:
        """How many subscriptions and listeners get the events (none: publishing can be
        skipped, and the event need not be made)."""
        return len(self._subscribers) + len(self._listeners)

    def publish(self, event: T) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # the publisher (a session, the spool) goes on regardless
                self._report(listener)
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)

    def _report(self, listener: Callable[[T], None]) -> None:
        # Not again from inside the report: the error stream's bus publishes each error
        # record, and a listener failing there would report itself without end.
        if self._reporting:
            return
        self._reporting = True
        try:
            log.exception("event listener %r failed", listener)
        finally:
            self._reporting = False

    def listen(self, listener: Callable[[T], None]) -> Listening[T]:
        """Call ``listener`` with each event published from now on, inside
        :meth:`publish`: it must be quick and must not block (an exception it raises is
        logged, and the publisher goes on). Close the returned handle, or leave its
        ``with``, to stop."""
        self._listeners = (*self._listeners, listener)
        return Listening(self, listener)

    def subscribe(self) -> Subscription[T]:
        """Events published from now on (the subscription starts at once, before the
        first ``async for`` step); close it, or leave the ``async with``, to stop."""
        subscription = Subscription(self, asyncio.Queue(self._queue_size))
        self._subscribers.add(subscription.queue)
        return subscription


class Listening(Generic[T]):
    """A listener's registration (see :meth:`EventBus.listen`)."""

    def __init__(self, bus: EventBus[T], listener: Callable[[T], None]) -> None:
        self._bus = bus
        self._listener = listener

    def close(self) -> None:
        listeners = list(self._bus._listeners)
        with contextlib.suppress(ValueError):  # (closed already)
            listeners.remove(self._listener)  # the first: one callable may be there twice
        self._bus._listeners = tuple(listeners)

    def __enter__(self) -> Listening[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscription(Generic[T]):
    """An iterator over one subscriber's events."""

    def __init__(self, bus: EventBus[T], queue: asyncio.Queue[T]) -> None:
        self._bus = bus
        self.queue = queue

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        return await self.queue.get()

    def close(self) -> None:
        self._bus._subscribers.discard(self.queue)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


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
