"""When a session's pending read must end, and why: sans-I/O, the caller gives the time.

A deadline is never pushed back by bytes that trickle in:

* a command (or an AUTH response line) must be complete within ``command_timeout`` of the
  moment the server began waiting for it, however its bytes arrive;
* message content (after ``354``, or a BDAT chunk) must keep coming: each wait for more
  ends after ``data_timeout``, and the whole transfer must average ``min_data_rate``
  octets a second after a grace period: the content that has arrived by time *t* since
  the first content read must be at least ``(t - grace) * min_data_rate`` octets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Deadline", "ReadDeadlines", "TimedOut"]


class TimedOut(enum.Enum):
    """Which rule a deadline enforces (and which counter its hang-up goes to)."""

    COMMAND = "command"  # a command not complete within command_timeout
    DATA = "data"  # no content for data_timeout
    SLOW_DATA = "slow_data"  # content below min_data_rate after the grace period
    # Not a read's: replies the client left unread for command_timeout (the session
    # waits for it before it reads on; dropped without a 421, which it would not read).
    UNREAD_REPLIES = "unread_replies"


@dataclass(frozen=True, slots=True, init=False)
class Deadline:
    at: float  # loop time
    reason: TimedOut

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (ten times the cost; docs/performance.md, "Writing code that compiles").
    def __init__(self, at: float, reason: TimedOut) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "reason", reason)


class ReadDeadlines:
    """Tracks one session: tell it each event the core produced (:meth:`event`), each
    read's size (:meth:`received`), and ask before each read (:meth:`next`)."""

    def __init__(
        self,
        *,
        command_timeout: float,
        data_timeout: float,
        min_data_rate: float | None,
        data_rate_grace: float,
    ) -> None:
        self.command_timeout = command_timeout
        self.data_timeout = data_timeout
        self.min_data_rate = min_data_rate
        self.data_rate_grace = data_rate_grace
        self._command_deadline: Deadline | None = None  # one object per command awaited
        self._transfer_start: float | None = None
        self._transfer_octets = 0

    def event(self, *, content: bool) -> None:
        """The core produced an event (or refused a line): the command waited for is
        complete. Anything but a piece of content also ends the transfer being timed."""
        self._command_deadline = None
        if not content:
            self._transfer_start = None
            self._transfer_octets = 0

    def received(self, octets: int, *, content: bool) -> None:
        if content:
            self._transfer_octets += octets

    def next(self, now: float, *, content: bool) -> Deadline:
        """The deadline of a read that starts at ``now``; ``content``: it is for message
        content, not for a command."""
        if not content:
            deadline = self._command_deadline
            if deadline is None:
                deadline = Deadline(now + self.command_timeout, TimedOut.COMMAND)
                self._command_deadline = deadline
            return deadline
        if self._transfer_start is None:
            self._transfer_start = now
        idle = Deadline(now + self.data_timeout, TimedOut.DATA)
        if self.min_data_rate is None:
            return idle
        earned = self._transfer_octets / self.min_data_rate
        slow = Deadline(self._transfer_start + self.data_rate_grace + earned, TimedOut.SLOW_DATA)
        return slow if slow.at < idle.at else idle
