"""Message content while it arrives: in memory while small, in a file past a threshold,
and within a budget shared by every session of the server.

A session keeps at most ``spill_threshold`` octets of a message in memory (256 KiB by
default); the rest goes to an anonymous temporary file (:class:`smtpx.content.Spill`).
All sessions together keep at most ``max_buffered`` octets in memory: a message that
would pass that is spilled at once, whatever its size. So 1,000 sessions cost at most
the budget in memory, not 1,000 messages. A file that cannot be written (the disk is
full) makes the transaction's end get ``452 4.3.1``; the session goes on.
"""

from __future__ import annotations

import logging

from smtpx.content import Spill, SpilledMessage
from smtpx.protocol import replies
from smtpx.protocol.replies import Reply

__all__ = ["BufferBudget", "ContentBuffer"]

log = logging.getLogger("smtpx.server")


class BufferBudget:
    """Octets of message content held in memory by all the sessions of one server."""

    __slots__ = ("limit", "peak", "spills", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.spills = 0  # messages that went to a file


class ContentBuffer:
    """One transaction's content, in memory or spilled, counted against the budget."""

    __slots__ = ("_budget", "_counted", "_spill", "error")

    def __init__(self, budget: BufferBudget, threshold: int, directory: str | None) -> None:
        self._budget = budget
        self._spill = Spill(threshold, directory)
        self._counted = 0  # what this buffer holds of the budget
        self.error: Reply | None = None  # the reply the transaction gets instead

    @property
    def size(self) -> int:
        return self._spill.size

    def add(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        budget = self._budget
        over = budget.used + len(data) > budget.limit
        was_spilled = self._spill.spilled
        try:
            self._spill.add(data, force_spill=over)
        except OSError as exc:
            log.error("cannot keep message content in a file: %s", exc)
            self.error = replies.insufficient_storage("Insufficient system storage, try later")
            self.close()
            return
        if self._spill.spilled and not was_spilled:
            budget.spills += 1
        self._recount()

    def result(self) -> bytes | SpilledMessage:
        """The content (a spilled one stays owned by this buffer until :meth:`close`)."""
        return self._spill.result()

    def close(self) -> None:
        self._spill.close()
        self._recount()

    def _recount(self) -> None:
        budget = self._budget
        held = self._spill.in_memory
        budget.used += held - self._counted
        budget.peak = max(budget.peak, budget.used)
        self._counted = held
