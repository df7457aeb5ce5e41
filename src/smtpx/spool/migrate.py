"""Moving a queue from one store to the other (the local journal, a PostgreSQL queue).

Both stores must be idle (no ``smtpx serve`` using them). Every message of the source is
written to the target under its own id, with its state and body (checked: a damaged body
stays in the source and is reported), then the messages the target holds are purged from
the source. Re-run after an interruption, it skips what the target already has, and
finishes the purge: nothing is lost, nothing is delivered twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from smtpx.spool.journal import BodyDamaged
from smtpx.spool.message import Status
from smtpx.spool.store import Store

__all__ = ["MigrationReport", "migrate_queue"]

log = logging.getLogger("smtpx.spool")


@dataclass
class MigrationReport:
    copied: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # left in the source
    purged: int = 0


async def migrate_queue(source: Store, target: Store) -> MigrationReport:
    """Copy every message of ``source`` to ``target``, then purge the copies from
    ``source`` (both stores open)."""
    report = MigrationReport()
    for entry in await source.all():
        if await target.find(entry.id) is not None:
            report.already_there.append(entry.id)
            continue
        try:
            content = await source.read(entry)
        except BodyDamaged as damage:
            report.damaged.append((entry.id, damage.problem))
            log.error("spool migrate: %s left behind: %s", entry.id, damage)
            continue
        if entry.status is Status.SENDING:  # cut off mid-delivery: due again
            entry.status = Status.SEND_NOW
        await target.write([entry], [content])
        report.copied.append(entry.id)
    for entry in await source.all():
        if await target.find(entry.id) is None:
            continue
        # An operator's purge needs removed or quarantined: say so, durably, first.
        entry.status = Status.REMOVED
        await source.update_durably(entry)
        if await source.purge(entry):
            report.purged += 1
    return report
