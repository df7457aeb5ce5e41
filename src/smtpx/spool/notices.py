"""The notices the spool sends a message's sender (RFC 3464, RFC 3461): bounces for failed
recipients, one delay warning for a message that waits long, success notices for the
recipients that asked NOTIFY=SUCCESS.

Each notice is built by :mod:`smtpx.spool.bounce` from the original (read from the store
a chunk at a time, checked: a damaged body raises :class:`~smtpx.spool.journal.BodyDamaged`
and the caller quarantines the message) and spooled like any other message, to the
sender's domain. Only the start of a large original is kept: a notice returns a message
whole only up to ``DEFAULT_MAX_RETURNED`` octets, otherwise its header section.
Each recipient's NOTIFY and ORCPT decide whether it is reported and how.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from smtpx.content import Content, chunks_of, header_block, read_with
from smtpx.envelope import Envelope
from smtpx.maillog import Flows
from smtpx.protocol.addresses import Address
from smtpx.protocol.replies import Reply
from smtpx.spool.bounce import (
    DEFAULT_MAX_RETURNED,
    RecipientFailure,
    build_bounce,
    build_delay_warning,
)
from smtpx.spool.context import SpoolContext
from smtpx.spool.message import SpooledMessage
from smtpx.spool.store import Store
from smtpx.spool.types import Delivery, EventKind

__all__ = ["Notices"]

Submit = Callable[[Sequence[Delivery]], Awaitable[list[str]]]
# Octets of an original kept for a notice: more than any message a notice returns whole
# (DEFAULT_MAX_RETURNED), and room for a large header section.
KEEP = max(1 << 20, DEFAULT_MAX_RETURNED)


class Notices:
    """Builds and spools the notices about messages of ``store``; ``submit`` spools."""

    def __init__(self, context: SpoolContext, store: Store, submit: Submit) -> None:
        self.context = context
        self.store = store
        self.submit = submit

    async def bounce(
        self,
        entry: SpooledMessage,
        failures: list[tuple[str, Reply]],
        remote: str | None,
        refused: dict[str, Reply],
    ) -> None:
        """Tell the sender about ``failures`` (recipient, reply). Only a reply of
        ``refused`` came from ``remote``; one made up here ("delivery time expired") is
        reported as this host's own diagnostic."""
        context = self.context
        if not context.config.bounce or entry.sender == "<>":
            return
        original, whole = await self._original(entry, [r for r, _ in failures])
        reported = [
            self.with_dsn(
                entry,
                RecipientFailure.of(
                    Address.parse(r), reply, remote_mta=remote if refused.get(r) is reply else None
                ),
            )
            for r, reply in failures
        ]
        notice = build_bounce(
            original,
            reported,
            reporting_mta=context.config.reporting_mta,
            arrival_date=entry.spool_date,
            now=context.clock(),
            return_content=None if whole else False,
        )
        if notice is None:
            return
        await self._spool(notice, original, entry)
        context.stats["bounces"] += 1
        context.log(entry).info(
            "bounced",
            session_marker="bounced",
            spool_id=entry.id,
            recipients=[r for r, _ in failures],
            reply=str(failures[0][1]),
        )
        context.emit(EventKind.BOUNCED, entry, ", ".join(r for r, _ in failures))

    async def maybe_warn(
        self,
        entry: SpooledMessage,
        waiting: list[str],
        refused: dict[str, Reply],
        remote: str | None,
        now: float,
    ) -> None:
        """Once a message has waited ``delay_warning_after``, tell its sender (once) that
        it is still being retried (RFC 3464 ``Action: delayed``)."""
        config = self.context.config
        after = config.delay_warning_after
        if after is None or entry.warned or entry.sender == "<>" or now - entry.spool_date < after:
            return
        entry.warned = True
        original, whole = await self._original(entry, waiting)
        # A recipient without a reply was not reached at all (a connection or DNS
        # problem): say what went wrong, as RFC 3463 4.4.1 (no answer from host).
        error = entry.last_attempt[1] if entry.last_attempt else "not attempted yet"
        failures = []
        for recipient in waiting:
            reply = refused.get(recipient)
            failure = (
                RecipientFailure.of(Address.parse(recipient), reply, remote_mta=remote)
                if reply is not None
                else RecipientFailure(
                    Address.parse(recipient), None, status="4.4.1", diagnostic=error
                )
            )
            failures.append(self.with_dsn(entry, failure))
        notice = build_delay_warning(
            original,
            failures,
            reporting_mta=config.reporting_mta,
            arrival_date=entry.spool_date,
            now=now,
            will_retry_until=now + sum(i.span for i in entry.intervals()),
            return_content=None if whole else False,
        )
        if notice is not None:
            await self._spool(notice, original, entry)
            self.context.stats["delay_warnings"] += 1

    async def success(
        self, entry: SpooledMessage, done: list[str], action: str, remote: str | None
    ) -> None:
        """Tell the sender of the ``done`` recipients that asked NOTIFY=SUCCESS (RFC 3461
        4.1): ``delivered`` to a local mailbox, or ``relayed`` to a next hop that does not
        offer DSN."""
        context = self.context
        if not context.config.bounce or entry.sender == "<>":
            return
        wanted = [r for r in done if "SUCCESS" in (entry.params_of(r).notify or ())]
        if not wanted:
            return
        original, whole = await self._original(entry, wanted)
        how = f"relayed to {remote}, which does not offer DSN" if remote else "delivered"
        successes = [
            self.with_dsn(
                entry,
                RecipientFailure(
                    Address.parse(r),
                    None,
                    action=action,
                    status="2.0.0",
                    remote_mta=remote,
                    diagnostic=how,
                ),
            )
            for r in wanted
        ]
        notice = build_bounce(
            original,
            successes,
            reporting_mta=context.config.reporting_mta,
            arrival_date=entry.spool_date,
            now=context.clock(),
            return_content=None if whole else False,
        )
        if notice is not None:
            await self._spool(notice, original, entry)
            context.stats["success_notices"] += 1

    @staticmethod
    def with_dsn(entry: SpooledMessage, failure: RecipientFailure) -> RecipientFailure:
        """The notice's view of a recipient, with what it asked for in RCPT: NOTIFY (which
        notices it wants) and ORCPT (its Original-Recipient), RFC 3461."""
        params = entry.params_of(str(failure.recipient))
        if params.notify is None and params.orcpt is None:
            return failure
        return dataclasses.replace(failure, notify=params.notify, orcpt=params.orcpt)

    async def _original(
        self, entry: SpooledMessage, recipients: list[str]
    ) -> tuple[Envelope, bool]:
        """The original for a notice, and whether it is whole: a message longer than
        :data:`KEEP` is read to its end (checked) but only its header section is kept
        (too long to be returned whole anyway)."""
        async with self.store.content(entry) as content:
            start, whole = await read_with(_start_of, content)
        original = Envelope.create(
            sender=entry.sender,
            recipients=recipients,
            message=start if whole else header_block(start),
            sender_args=entry.sender_args,
        )
        return original, whole

    async def _spool(self, notice: Envelope, original: Envelope, entry: SpooledMessage) -> None:
        await self.submit([Delivery(notice, route=_domain(original), flows=Flows(entry.flows))])


def _domain(original: Envelope) -> str | None:
    """Where a notice about ``original`` goes: its sender's domain."""
    address = original.sender.address
    return None if address is None else address.domain.lower()


def _start_of(content: Content) -> tuple[bytes, bool]:
    """The first :data:`KEEP` octets of ``content``, all of which is read (a damaged body
    raises), and whether they are the whole of it."""
    kept: list[bytes] = []
    room, whole = KEEP, True
    for chunk in chunks_of(content):
        if len(chunk) > room:
            whole = False
        if room > 0:
            kept.append(chunk[:room])
            room -= len(kept[-1])
    return b"".join(kept), whole
