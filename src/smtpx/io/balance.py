"""How many sessions each worker of ``smtpx serve`` has, in memory they all share.

Workers that share a listening socket (:mod:`smtpx.io.accept`) take a connection when
their loop is free, which balances new connections; but a burst of connections that stay
open (a client that keeps twenty sessions for hours) may all go to the first worker to
wake. So each worker keeps its count of live sessions in a slot of a small shared memory
(a ``memfd`` its supervisor makes, inherited), and one that has more than
:data:`SLACK` sessions over the least busy worker leaves new connections to the others
for a moment (:data:`smtpx.io.accept.DEFER`), then takes them again itself.

Only the workers that take connections count: each stamps a beat (the system's monotonic
clock, which every process reads alike) next to its count when it starts serving and
every :data:`BEAT_EVERY` seconds after, and clears it when it stops. A worker whose beat
is older than :data:`STALE` (stopped, hung in a long call, not serving yet, gone) is left
out of "the least busy": its count, frozen low, would otherwise have the others leave
every new connection waiting for it.

Each worker writes its own slots only (8 aligned octets each: a single store), and reads
the others' as they are: a count one connection old changes nothing that matters. The
supervisor reads the beats (:class:`Beats`) to find a worker whose loop has stood still
for long: it kills it, and restarts it as one that died.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import time
from collections.abc import Callable

__all__ = ["BEAT_EVERY", "SLACK", "STALE", "Beats", "SessionBalance", "make_balance"]

# A worker takes connections while it has at most this many sessions over the least busy.
SLACK = 6
# How often a serving worker stamps its beat, and the age past which the others leave it
# out (seconds).
BEAT_EVERY = 0.5
STALE = 2.0

_FIELDS = 2  # a count and a beat per worker, 8 octets each
_SLOT = 8 * _FIELDS


def _count_at(index: int) -> int:
    """Where worker ``index``'s count is, in the memory's 8-octet slots."""
    return _FIELDS * index


def _beat_at(index: int) -> int:
    """Where worker ``index``'s beat is: its clock in milliseconds, 0 when it does not
    serve."""
    return _FIELDS * index + 1


def _millis(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


def _mapped(fd: int, count: int) -> tuple[mmap.mmap, memoryview]:
    """The memory of ``fd`` for ``count`` workers, and its 8-octet slots."""
    memory = mmap.mmap(fd, count * _SLOT)
    return memory, memoryview(memory).cast("q")


def make_balance(count: int) -> int | None:
    """The shared memory for ``count`` workers' counts (all zero): its file descriptor,
    for the workers to inherit; None where there is no ``memfd`` (not Linux: the
    workers then take connections as they come)."""
    if not hasattr(os, "memfd_create"):
        return None
    fd = os.memfd_create("smtpx-sessions", 0)  # (closed on exec, unless passed on)
    try:
        os.ftruncate(fd, count * _SLOT)
    except BaseException:
        os.close(fd)
        raise
    return fd


class SessionBalance:
    """Worker ``index``'s view of the ``count`` workers' counts in the memory of ``fd``
    (``clock``: the monotonic clock the beats are stamped with, in seconds)."""

    def __init__(
        self, fd: int, index: int, count: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not 0 <= index < count:
            raise ValueError(f"worker {index} of {count}?")
        self._memory, self._slots = _mapped(fd, count)
        self._index = index
        self._others = [i for i in range(count) if i != index]
        self._clock = clock
        self._slots[_count_at(index)] = 0  # a restarted worker's sessions ended with it
        self._slots[_beat_at(index)] = 0  # and it is not serving yet
        self._beating: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def sessions(self) -> int:
        return 0 if self._closed else int(self._slots[_count_at(self._index)])

    def change(self, by: int) -> None:
        """This worker has ``by`` sessions more (or fewer); nothing once closed (a
        session cut off at shutdown may end after its server let go of the counts)."""
        if not self._closed:
            self._slots[_count_at(self._index)] += by

    def start_beating(self, loop: asyncio.AbstractEventLoop) -> None:
        """This worker serves: stamp its beat now and every :data:`BEAT_EVERY` seconds
        on ``loop`` until :meth:`close` (again: nothing)."""
        if self._closed or self._beating is not None:
            return
        self._beat(loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._slots[_beat_at(self._index)] = max(1, _millis(self._clock))  # (0: no beat)
        self._beating = loop.call_later(BEAT_EVERY, self._beat, loop)

    def takes_more(self, pending: int = 0) -> bool:
        """Whether this worker should take the next connection now: with the ``pending``
        connections it took whose sessions are not counted yet, it has at most
        :data:`SLACK` sessions over the least busy other that beats (always, once
        closed, or when no other does)."""
        if self._closed:
            return True
        slots = self._slots
        mine = slots[_count_at(self._index)] + pending
        fresh = _millis(self._clock) - int(STALE * 1000)
        least = mine
        for other in self._others:
            count = slots[_count_at(other)]
            if count < least and slots[_beat_at(other)] >= fresh:
                least = count
        return bool(mine <= least + SLACK)

    def close(self) -> None:
        """Stop beating and let go of the memory (this worker no longer serves)."""
        if not self._closed:
            self._closed = True
            if self._beating is not None:
                self._beating.cancel()
                self._beating = None
            self._slots[_beat_at(self._index)] = 0
            self._slots.release()
            self._memory.close()


class Beats:
    """The supervisor's view of the ``count`` workers' beats in the memory of ``fd``
    (``clock``: the monotonic clock they are stamped with, in seconds)."""

    def __init__(self, fd: int, count: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._memory, self._slots = _mapped(fd, count)
        self._count = count
        self._clock = clock

    def stalled(self, older_than: float) -> list[int]:
        """The workers that serve (they beat) and whose last beat is more than
        ``older_than`` seconds old: their event loop has not turned since."""
        before = _millis(self._clock) - int(older_than * 1000)
        slots = self._slots
        return [index for index in range(self._count) if 0 < slots[_beat_at(index)] < before]

    def clear(self, index: int) -> None:
        """Worker ``index`` no longer serves (it was killed; its next run beats anew)."""
        self._slots[_beat_at(index)] = 0

    def close(self) -> None:
        self._slots.release()
        self._memory.close()
