"""A small publish/subscribe bus: the server's envelope-received events, the spool's
events, the error stream.

A slow subscriber never slows the publisher: each subscriber has a bounded queue, and
when it is full the oldest event is dropped (and counted). A listener
(:meth:`EventBus.listen`) is called with each event as it is published instead: for
quick bookkeeping (a counter, a histogram), with no queue and no task to wake per
event. Apart from :mod:`smtpx.server.events` because the spool publishes two events a
message: this module is in the compiled build (docs/performance.md), the error stream
(a :mod:`logging` handler) is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["EventBus", "Listening", "Subscription"]

T = TypeVar("T")

log = logging.getLogger("smtpx.server.events")  # (where its reports have always gone)


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
