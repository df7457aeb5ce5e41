"""Destinations found unreachable, remembered for a while (Postfix's "dead" list).

When an attempt cannot open a session with any next hop of a destination (every hop
refused, timed out or failed its greeting: :class:`~smtpx.errors.NoHopAvailable`), the
destination is suspended for ``SpoolConfig.unreachable_backoff`` seconds (default: the
spool's first retry interval, as Postfix's ``minimal_backoff_time`` serves both).
Meanwhile its mail is deferred without a connection: a new message is spooled already
deferred (one record, no claim, no attempt), and a message coming back from a retry wait
is deferred as if its attempt had failed the same way (mail released by an operator is
tried, on another node of a shared queue too). Each such deferral uses up one retry
interval and waits at least until the suspension ends (so a message is deferred once per
suspension at most, and its number of attempts bounds its life as when every attempt is
made); a message with no interval left is always tried (its last attempt is never
skipped).

Any session opened with the destination lifts the suspension, and so does an operator's
``send`` for one of its messages and a reload. The memory is this process's only (with a
shared queue, each node keeps its own) and holds at most :data:`LIMIT` destinations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LIMIT", "SUSPENDED", "Suspension", "Unreachable"]

LIMIT = 10_000  # destinations remembered at most (Postfix bounds its dead list too)
SUSPENDED = "delivery temporarily suspended: "  # (then the error that suspended it)


@dataclass(frozen=True, slots=True)
class Suspension:
    until: float  # no attempt before this time
    reason: str  # what the deferral says ("delivery temporarily suspended: ...")


class Unreachable:
    """Which destination keys are suspended, until when, and why."""

    def __init__(self, clock: Callable[[], float], backoff: Callable[[], float]) -> None:
        self._clock = clock
        self._backoff = backoff  # read at each mark: a reload changes it
        self._down: dict[str, Suspension] = {}

    def mark(self, key: str, error: str) -> None:
        """An attempt found ``key`` unreachable with ``error``: suspend it."""
        backoff = self._backoff()
        if backoff <= 0:
            return
        now = self._clock()
        if key not in self._down and len(self._down) >= LIMIT:
            self._expire(now)
            if len(self._down) >= LIMIT:
                return  # full of live entries: this one is tried as usual
        self._down[key] = Suspension(now + backoff, SUSPENDED + error)

    def suspended(self, key: str) -> Suspension | None:
        """Why and until when ``key``'s mail is not to be tried (None: try it now)."""
        down = self._down.get(key)
        if down is None:
            return None
        if down.until <= self._clock():
            del self._down[key]
            return None
        return down

    def clear(self, key: str) -> None:
        """``key`` answered (or an operator wants it tried): lift its suspension."""
        self._down.pop(key, None)

    def clear_all(self) -> None:
        self._down.clear()

    def __len__(self) -> int:
        return len(self._down)

    def _expire(self, now: float) -> None:
        for key in [k for k, down in self._down.items() if down.until <= now]:
            del self._down[key]
