"""Event streams: a small publish/subscribe bus, and the envelope-received event (F117).

A slow subscriber never slows the server: each subscriber has a bounded queue, and when it
is full the oldest event is dropped (and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Generic, TypeVar

from smtpx.envelope import EnvelopeInfo

__all__ = ["EnvelopeReceived", "EventBus", "Subscription"]

T = TypeVar("T")


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
        self.dropped = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: T) -> None:
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)

    def subscribe(self) -> Subscription[T]:
        """Events published from now on (the subscription starts at once, before the
        first ``async for`` step); close it, or leave the ``async with``, to stop."""
        subscription = Subscription(self, asyncio.Queue(self._queue_size))
        self._subscribers.add(subscription.queue)
        return subscription


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
