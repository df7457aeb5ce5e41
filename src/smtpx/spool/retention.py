"""Failed mail leaves the spool after a while (``SpoolConfig.failed_retention``).

A message whose recipients are all done and some failed for good (refused with a 5xx,
or out of retries: ``5.4.7 Delivery time expired``) is frozen, so that an operator can
look at it: its sender already got a bounce (unless bounces are off, or it was a bounce
itself: nobody to tell). Without this sweep it would stay frozen, and on disk, for ever.

Once ``failed_retention`` has passed since its last attempt, the sweep removes it (a
``removed`` event saying why) and purges it (``purged``), with a mail log line naming
the message, its sender and the failed recipients. Postfix deletes such mail at once
(the bounce is the record); here the operator has the retention to look, to send it
again (``send`` retries the failed recipients, which makes it no longer failed), or to
keep it (``failed_retention = None``). Nothing else is ever swept: frozen mail with
recipients left, removed and quarantined mail stay until an operator acts.

It works against :class:`~smtpx.spool.store.Store` (``all``, ``find``, and the admin
operations), so on the local journal and on the shared PostgreSQL queue alike; there
every node sweeps the whole queue, and a message another node got to first is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from smtpx.spool.admin import Admin
from smtpx.spool.context import SpoolContext
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.store import Store
from smtpx.spool.types import SpoolError
from smtpx.units import format_duration, short_duration

__all__ = ["SWEEP_EVERY", "Retention", "expired"]

log = logging.getLogger("smtpx.spool")

SWEEP_EVERY = 3600.0  # seconds between sweeps (less with a retention under 4 hours)


def failed_at(entry: SpooledMessage) -> float:
    """When the message failed: its last attempt (its arrival, without one)."""
    return entry.last_attempt[0] if entry.last_attempt else entry.spool_date


def expired(entry: SpooledMessage, now: float, retention: float) -> bool:
    """Frozen with every recipient done, some failed, ``retention`` seconds ago."""
    if entry.status is not Status.FROZEN or entry.recipients or not entry.failed:
        return False
    return now - failed_at(entry) >= retention


class Retention:
    """The sweep, and the task that runs it every :data:`SWEEP_EVERY` seconds."""

    def __init__(self, context: SpoolContext, store: Store, admin: Admin) -> None:
        self.context = context
        self.store = store
        self.admin = admin
        self._stopping = asyncio.Event()

    def period(self) -> float:
        """Seconds to the next sweep: an hour, or a quarter of a short retention."""
        retention = self.context.config.failed_retention
        return SWEEP_EVERY if retention is None else max(1.0, min(SWEEP_EVERY, retention / 4))

    async def run(self) -> None:
        """Sweep now, then every :meth:`period` (read again each time: a reload may
        change the retention)."""
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("spool: the sweep of failed mail failed (tried again later)")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period()):
                    await self._stopping.wait()

    def stop(self) -> None:
        """End :meth:`run` at its next wait, or between two messages of a sweep: not in
        the middle of a statement (on PostgreSQL a cancelled one costs a cancel request,
        and its connection until the server confirms)."""
        self._stopping.set()

    async def sweep(self) -> int:
        """Remove and purge the failed mail older than the retention; how many."""
        retention = self.context.config.failed_retention
        if retention is None:
            return 0
        now = self.context.clock()
        swept = 0
        for entry in await self.store.all():
            if self._stopping.is_set():
                break
            if expired(entry, now, retention) and await self._drop(entry.id, now, retention):
                swept += 1
        return swept

    async def _drop(self, message_id: str, now: float, retention: float) -> bool:
        entry = await self.store.find(message_id)  # as it is now (an operator may have acted)
        if entry is None or not expired(entry, now, retention):
            return False
        reason = (
            f"failed {short_duration(now - failed_at(entry))} ago "
            f"(spool.failed_retention = {format_duration(retention)})"
        )
        try:
            await self.admin.remove([message_id], detail=reason)
            await self.admin.purge([message_id])
        except SpoolError:
            return False  # recovered, purged or sent meanwhile (another node, an operator)
        self.context.stats["failed_retention_purged"] += 1
        self.context.log(entry).info(
            "purged",
            session_marker="purged",
            spool_id=entry.id,
            sender=entry.sender,
            recipients=[recipient for recipient, _ in entry.failed],
            reason=reason,
        )
        return True
