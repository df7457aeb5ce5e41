"""Message content while it arrives: in memory while small, in a file past a threshold,
and within two budgets shared by every session of the server.

A session keeps at most ``spill_threshold`` octets of a message in memory (256 KiB by
default); the rest goes to an anonymous temporary file (:class:`smtpx.content.Spill`).
All sessions together keep at most ``max_buffered`` octets in memory: a message that
would pass that is spilled at once, whatever its size. So 1,000 sessions cost at most
the budget in memory, not 1,000 messages.

The files are the second budget: all sessions together keep at most ``max_spilled``
octets in them (F25). A transaction whose content would pass it, or whose file cannot be
written (the disk is full), is read to its end and discarded, and gets ``452 4.3.1
Insufficient system storage``; the session goes on. The files share the spool's disk, and
this keeps a burst of large messages from filling it under the journal.
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

    __slots__ = ("limit", "peak", "refused", "spill_limit", "spilled", "spills", "used")

    def __init__(self, limit: int, spill_limit: int | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.spills = 0  # messages that went to a file
        self.spill_limit = spill_limit  # octets in files, all sessions together (None: any)
        self.spilled = 0  # octets in files now
        self.refused = 0  # transactions refused because the files would pass spill_limit


class ContentBuffer:
    """One transaction's content, in memory or spilled, counted against the budget."""

    __slots__ = ("_budget", "_counted", "_on_disk", "_spill", "error")

    def __init__(self, budget: BufferBudget, threshold: int, directory: str | None) -> None:
        self._budget = budget
        self._spill = Spill(threshold, directory)
        self._counted = 0  # what this buffer holds of the memory budget
        self._on_disk = 0  # and of the files' budget
        self.error: Reply | None = None  # the reply the transaction gets instead

    @property
    def size(self) -> int:
        return self._spill.size

    def add(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        budget = self._budget
        spill = self._spill
        over = budget.used + len(data) > budget.limit
        was_spilled = spill.spilled
        if self._too_much_on_disk(len(data), spilling=over):
            budget.refused += 1
            log.warning(
                "message content files are at max_spilled (%d octets): 452 for a transaction",
                budget.spill_limit,
            )
            self._refuse()
            return
        try:
            spill.add(data, force_spill=over)
        except OSError as exc:
            log.error("cannot keep message content in a file: %s", exc)
            self._refuse()
            return
        if spill.spilled and not was_spilled:
            budget.spills += 1
        self._recount()

    def _too_much_on_disk(self, more: int, *, spilling: bool) -> bool:
        """Whether adding ``more`` octets would put the files past the spill budget."""
        budget, spill = self._budget, self._spill
        if budget.spill_limit is None:
            return False
        if not (spill.spilled or spilling or spill.size + more > spill.threshold):
            return False  # it stays in memory
        return budget.spilled - self._on_disk + spill.size + more > budget.spill_limit

    def _refuse(self) -> None:
        self.error = replies.insufficient_storage("Insufficient system storage, try later")
        self.close()

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
        on_disk = self._spill.size if self._spill.spilled else 0
        budget.spilled += on_disk - self._on_disk
        self._on_disk = on_disk
