"""Intake: new messages made durable (:meth:`smtpx.spool.spool.Spool.add`'s work).

Each delivery becomes a :class:`~smtpx.spool.message.SpooledMessage` with its own spool
id, mail for a suspended destination is deferred at once (:mod:`smtpx.spool.deferral`),
the store writes them all (durable when it returns), and each is announced. Apart from
:class:`~smtpx.spool.spool.Spool` because every message passes here: this module is in
the compiled build (docs/performance.md), the spool's life (start, shutdown, whose
report names the coroutines it waits in) is not.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Mapping, Sequence
from sys import intern

from smtpx.envelope import Envelope, RetryInterval
from smtpx.protocol.addresses import Address
from smtpx.protocol.params import RcptParams
from smtpx.spool.context import SpoolContext
from smtpx.spool.deferral import defer_untried, report_deferred
from smtpx.spool.ids import SpoolIds
from smtpx.spool.journal_store import NOWHERE, JournalStore
from smtpx.spool.message import (
    NO_RCPT_PARAMS,
    QuarantineReason,
    SpooledMessage,
    Status,
)
from smtpx.spool.store import Store
from smtpx.spool.types import Delivery, EventKind

__all__ = ["Intake"]


class Intake:
    """Writes new messages to ``store``: ids from ``ids``, retry jitter from ``rng``."""

    def __init__(
        self, context: SpoolContext, store: Store, ids: SpoolIds, rng: random.Random
    ) -> None:
        self.context = context
        self.store = store
        self.ids = ids
        self.rng = rng

    async def add(
        self, deliveries: Sequence[Delivery], *, frozen: bool = False, set_related: bool = False
    ) -> list[str]:
        """Spool ``deliveries``; their ids once they are durable (see ``Spool.add``)."""
        status = Status.FROZEN if frozen else Status.SEND_NOW
        entries = await self.write(deliveries, status, set_related=set_related)
        context = self.context
        debug = context.mail.enabled(logging.DEBUG)  # (else no line, nor its MailLog)
        for entry in entries:
            context.emit(EventKind.SPOOLED, entry)
            if debug:
                context.log(entry).debug(
                    "spooled", spool_id=entry.id, local_id=entry.parent_id, route=entry.route
                )
            if entry.status is Status.SEND_AT:  # (its destination is suspended)
                report_deferred(context, entry, entry.recipients, None, None)
        context.stats["spooled"] += len(entries)
        return [entry.id for entry in entries]

    async def write(
        self,
        deliveries: Sequence[Delivery],
        status: Status,
        quarantine: str | QuarantineReason | None = None,
        *,
        set_related: bool = False,
    ) -> list[SpooledMessage]:
        """Store ``deliveries`` as new messages in ``status``; the entries once durable
        (``quarantine``: the reason they are held, as text or whole)."""
        context = self.context
        now = context.clock()
        default_intervals = context.config.retry_intervals
        ids = [self.ids(str(d.envelope.id), self._taken) for d in deliveries]
        entries: list[SpooledMessage] = []
        for delivery, message_id in zip(deliveries, ids, strict=True):
            envelope = delivery.envelope
            held = _reason(quarantine, envelope)
            intervals = (
                default_intervals if delivery.retry_intervals is None else delivery.retry_intervals
            )
            entries.append(
                SpooledMessage(
                    id=message_id,
                    parent_id=str(envelope.id),
                    spool_date=now,
                    status=status,
                    sender=intern(envelope.sender.path()),
                    sender_args=intern(str(envelope.info.sender_args)),
                    recipients=[str(r) for r in envelope.recipients],
                    location=NOWHERE,
                    next_hops=tuple([intern(str(h)) for h in delivery.next_hops]),
                    route=None if delivery.route is None else intern(delivery.route),
                    retry_intervals=list(_texts(tuple(intervals))),
                    quarantine_reason=None if held is None else held.description,
                    quarantine_from=None if held is None else held.from_headers,
                    related=tuple([i for i in ids if i != message_id]) if set_related else (),
                    flows=delivery.flows.extend("out").ids,
                    message_id=envelope.message_id(),
                    rcpt_params=_rcpt_params(envelope.info.recipient_params),
                )
            )
        if status is Status.SEND_NOW:
            for entry in entries:
                defer_untried(context, entry, now, self.rng)
        await self.store.write(entries, [d.envelope.content for d in deliveries])
        return entries

    def _taken(self, message_id: str) -> bool:
        # The journal knows every id it holds; a shared store's primary key refuses a
        # duplicate (the add fails: nothing is overwritten).
        store = self.store
        return isinstance(store, JournalStore) and message_id in store.messages


@functools.lru_cache(maxsize=64)  # (the configuration's list, for nearly every message)
def _texts(intervals: tuple[RetryInterval, ...]) -> tuple[str, ...]:
    return tuple([intern(str(i)) for i in intervals])


def _rcpt_params(params: tuple[tuple[Address, RcptParams], ...]) -> Mapping[str, str]:
    """Each recipient's RCPT parameters as written, for those that had any (the shared
    empty mapping if none did: the message's metadata stays version 1, and smaller)."""
    given = {str(a): str(p) for a, p in params if p.notify or p.orcpt or p.extra}
    return given or NO_RCPT_PARAMS


def _reason(
    quarantine: str | QuarantineReason | None, envelope: Envelope
) -> QuarantineReason | None:
    if quarantine is None or isinstance(quarantine, QuarantineReason):
        return quarantine
    return QuarantineReason.of_envelope(quarantine, envelope)
