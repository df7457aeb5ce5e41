"""How many sessions each worker of ``smtpx serve`` has, in memory they all share.

Workers that share a listening socket (:mod:`smtpx.io.accept`) take a connection when
their loop is free, which balances new connections; but a burst of connections that stay
open (a client that keeps twenty sessions for hours) may all go to the first worker to
wake. So each worker keeps its count of live sessions in a slot of a small shared memory
(a ``memfd`` its supervisor makes, inherited), and one that has more than
:data:`SLACK` sessions over the least busy worker leaves new connections to the others
for a moment (:data:`smtpx.io.accept.DEFER`), then takes them again itself.

Each worker writes its own slot only (8 aligned octets: a single store), and reads the
others' as they are: a count one connection old changes nothing that matters.
"""

from __future__ import annotations

import mmap
import os

__all__ = ["SLACK", "SessionBalance", "make_balance"]

# A worker takes connections while it has at most this many sessions over the least busy.
SLACK = 6

_SLOT = 8  # octets a count


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
    """Worker ``index``'s view of the ``count`` workers' counts in the memory of ``fd``."""

    def __init__(self, fd: int, index: int, count: int) -> None:
        if not 0 <= index < count:
            raise ValueError(f"worker {index} of {count}?")
        self._memory = mmap.mmap(fd, count * _SLOT)
        self._counts = memoryview(self._memory).cast("q")
        self._index = index
        self._others = [i for i in range(count) if i != index]
        self._counts[index] = 0  # a restarted worker's sessions ended with it
        self._closed = False

    @property
    def sessions(self) -> int:
        return 0 if self._closed else int(self._counts[self._index])

    def change(self, by: int) -> None:
        """This worker has ``by`` sessions more (or fewer); nothing once closed (a
        session cut off at shutdown may end after its server let go of the counts)."""
        if not self._closed:
            self._counts[self._index] += by

    def takes_more(self, pending: int = 0) -> bool:
        """Whether this worker should take the next connection now: with the ``pending``
        connections it took whose sessions are not counted yet, it has at most
        :data:`SLACK` sessions over the least busy other (always, once closed)."""
        if self._closed:
            return True
        counts = self._counts
        mine = counts[self._index] + pending
        least = min((counts[i] for i in self._others), default=mine)
        return bool(mine <= least + SLACK)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._counts.release()
            self._memory.close()
