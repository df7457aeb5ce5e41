"""Virtual time for asyncio tests: timeouts fire at once, nothing really sleeps.

:func:`run_virtual` runs a coroutine on an event loop whose clock jumps ahead whenever
nothing is ready to run. It suits code that talks over in-memory streams
(:func:`smtpx.io.memory_pair`): a test of a 5-minute timeout takes milliseconds. Real
sockets still work, but their waits would be skipped too, so keep those tests on the
normal loop. ``run_in_executor`` runs its function inline, so file work done in threads
(the spool's journal) does not look like idle time; the journal's fsync helper process is
not used on this loop (``VirtualClockLoop.virtual_clock``).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualClockLoop", "run_virtual"]

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; when nothing is ready, moves the loop's clock instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events and timeout is not None and timeout > 0:
            self._loop.advance(timeout)
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop with a virtual monotonic clock starting at 0."""

    # Says so to code that would wait for another process (the spool journal's fsync
    # helper): such a wait looks idle here, so that code keeps to run_in_executor.
    virtual_clock = True

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def run_in_executor(
        self, executor: object, func: Callable[..., T], *args: object
    ) -> asyncio.Future[T]:
        """Run ``func`` right here: a worker thread would look like idle time to the
        jumping clock, and timers would fire while it works."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # handed to the awaiting code
            future.set_exception(exc)
        return future


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualClockLoop`."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
