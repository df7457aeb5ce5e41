"""Delivery and settlement: a batch of due messages to one destination, tried once, and
what each outcome does to each message (F85-F88).

A worker hands a batch here: ``presend`` is asked about each message, the batch is routed
once (``router``), and it goes out over one pooled connection (``send_many``: one round
trip per message) or to a local agent. Each refusal is judged by ``on_error`` (default:
5xx fails permanently, anything else is tried later). Recipients that are done leave the
message; failed ones are bounced and remembered; the rest wait for the next retry
interval (with jitter). When the intervals run out, what is left fails too, and the
message is frozen for an operator. Each outcome is recorded as soon as its reply arrives
(a crash repeats at most the messages in flight: at-least-once, as Postfix). A body that
no longer matches its checksum is never sent: the message goes to quarantine.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from smtpx.client import (
    Accepted,
    ConnectionCache,
    EnvelopeStatus,
    RejectedAllRecipients,
    Unsendable,
)
from smtpx.errors import NoHopAvailable, SMTPXError, describe
from smtpx.protocol.replies import Reply
from smtpx.spool.context import SpoolContext
from smtpx.spool.deferral import report_deferred, schedule_retry
from smtpx.spool.journal import BodyDamaged
from smtpx.spool.message import SpooledMessage, Status, destination_key
from smtpx.spool.notices import Notices
from smtpx.spool.store import Store
from smtpx.spool.types import (
    EventKind,
    Hops,
    Local,
    LocalAgent,
    OnError,
    Outcome,
    Presend,
    PresendHook,
    RouteLater,
    Router,
    Unroutable,
    deliver_locally,
)

__all__ = ["DeliveryEngine", "held_by_operator", "set_status"]

log = logging.getLogger("smtpx.spool")
# What an attempt cut short by a bug in smtpx (or a hook) says; the log has the traceback.
INTERNAL_ERROR = "internal error (the log has the details)"


async def set_status(
    context: SpoolContext,
    store: Store,
    entry: SpooledMessage,
    status: Status,
    *,
    kind: EventKind,
    detail: str = "",
) -> None:
    """Change ``entry``'s status durably, then say so."""
    entry.status = status
    if status is not Status.SEND_AT:
        entry.next_attempt = None
    await store.update_durably(entry)
    context.emit(kind, entry, detail)


@dataclass
class _Judged:
    """One attempt's outcome per recipient."""

    failures: list[tuple[str, Reply]] = field(default_factory=list)  # for good
    later: list[str] = field(default_factory=list)  # to try again
    rate_limited: bool = False


class DeliveryEngine:
    def __init__(
        self,
        context: SpoolContext,
        store: Store,
        notices: Notices,
        cache: ConnectionCache,
        *,
        router: Router,
        presend: PresendHook,
        on_error: OnError,
        rng: random.Random,
    ) -> None:
        self.context = context
        self.store = store
        self.notices = notices
        self.cache = cache
        self.router = router
        self.presend = presend
        self.on_error = on_error
        self.rng = rng

    async def run(self, batch: list[SpooledMessage]) -> None:
        """Try ``batch`` once (a scheduler's worker calls this)."""
        try:
            await self._attempt(batch)
        except Exception:
            # A bug must not strand messages in "sending": they are tried again.
            log.exception("delivery of %d messages failed unexpectedly", len(batch))
            for entry in batch:
                if entry.status is Status.SENDING:
                    await self.settle(entry, {}, INTERNAL_ERROR)

    async def _attempt(self, batch: list[SpooledMessage]) -> None:
        batch = await self._skip_suspended(batch)
        to_send = []
        for entry in batch:
            decision = await self._ask_presend(entry)
            if decision.action == "send_now":
                to_send.append(entry)
            elif decision.action == "send_at" and decision.at is not None:
                entry.status = Status.SEND_AT
                entry.next_attempt = decision.at
                self.store.update(entry)
            elif decision.action == "freeze":
                await self._set_status(entry, Status.FROZEN, EventKind.FROZEN, "presend")
            else:
                await self._set_status(entry, Status.REMOVED, EventKind.REMOVED, "presend")
        if not to_send:
            return
        try:
            destination = await self.router(to_send[0])
        except Exception as exc:
            log.exception("router failed")
            destination = RouteLater(f"router failed: {describe(exc)}")
        to_send = _still_sending(to_send)  # (an operator may have acted meanwhile)
        if isinstance(destination, Unroutable):
            for entry in to_send:
                await self.settle(entry, dict.fromkeys(entry.recipients, destination.reply), None)
        elif isinstance(destination, RouteLater):
            for entry in to_send:
                await self.settle(entry, {}, destination.reason)
        elif isinstance(destination, Local):
            for entry in to_send:
                await self._deliver_locally(destination.agent, entry)
        else:
            await self._deliver(destination, to_send)

    async def _skip_suspended(self, batch: list[SpooledMessage]) -> list[SpooledMessage]:
        """While the batch's destination is suspended (found unreachable a moment ago:
        :mod:`smtpx.spool.unreachable`), its messages back from a retry wait are deferred
        again without a connection, except those on their last attempt; mail due now
        because it is new or an operator released it is tried. Returns what to try."""
        suspension = self.context.unreachable.suspended(destination_key(batch[0]))
        if suspension is None:
            return batch
        for entry in batch:
            if entry.next_attempt is not None and entry.retry_intervals:
                await self.settle(entry, {}, suspension.reason, not_before=suspension.until)
        return [entry for entry in batch if entry.status is Status.SENDING]

    async def _ask_presend(self, entry: SpooledMessage) -> Presend:
        try:
            decision = await self.presend(entry)
        except Exception:
            log.exception("presend hook failed for %s", entry.id)
            decision = Presend.send_now()
        if decision.action != "send_now":
            self.context.emit(EventKind.PRESEND, entry, decision.action)
        return decision

    async def _set_status(
        self, entry: SpooledMessage, status: Status, kind: EventKind, detail: str = ""
    ) -> None:
        await set_status(self.context, self.store, entry, status, kind=kind, detail=detail)

    # -- sending --------------------------------------------------------------------------

    async def _deliver(self, destination: Hops, batch: list[SpooledMessage]) -> None:
        """Send ``batch`` over one connection; each message's outcome is recorded as soon
        as its reply arrives (a crash repeats at most the messages in flight)."""
        batch = await self._sound(batch)
        if not batch:
            return
        settled: set[str] = set()
        error: str | None = None
        key = destination_key(batch[0])
        try:
            async with self.cache.connection(
                destination.hops, credentials=destination.credentials, route=destination.key or None
            ) as (hop, client):
                self.context.unreachable.clear(key)
                # Frozen or removed while the connection opened: not sent, already settled.
                batch = _still_sending(batch)
                items = [(entry.info(), self.store.body(entry)) for entry in batch]
                with self.store.pinned(batch):
                    # A next hop that offers DSN got NOTIFY/ORCPT/RET/ENVID: it sends the
                    # notices from here on (RFC 3461 5.2.1); one that does not, we do.
                    success = None if client.extensions.dsn else "relayed"
                    index = 0
                    async for outcome in client.send_many(items):
                        entry = batch[index]
                        index += 1
                        settled.add(entry.id)
                        await self._settle_guarded(entry, outcome, hop.host, success)
        except BodyDamaged as damage:
            # Found while it was being sent (a store that checks as it reads): the client
            # never sent its final dot. That message goes to quarantine, the rest wait.
            error = "the connection was dropped: another message's body is damaged"
            damaged = next(e for e in batch if e.id not in settled)
            settled.add(damaged.id)
            await self.quarantine_damaged(damaged, damage)
        except (SMTPXError, OSError, TimeoutError) as exc:
            error = describe(exc)
            if isinstance(exc, NoHopAvailable) and exc.failures:  # every hop failed
                self.context.unreachable.mark(key, error)
        for entry in batch:
            if entry.id not in settled:
                await self.settle(entry, {}, error or "not attempted")
        if settled:
            self.store.collect_segments()  # what was released while the segments were pinned

    async def _settle_guarded(
        self, entry: SpooledMessage, outcome: EnvelopeStatus, remote: str, success: str | None
    ) -> None:
        """Settle one outcome in the middle of a connection: a failure here is ours, not
        the connection's, and must not be taken for one."""
        try:
            await self._settle_status(entry, outcome, remote, success=success)
        except Exception:
            log.exception("settling the delivery of %s failed", entry.id)
            if entry.status is Status.SENDING:
                await self.settle(entry, {}, INTERNAL_ERROR)

    async def _sound(self, batch: list[SpooledMessage]) -> list[SpooledMessage]:
        """The messages of ``batch`` whose bodies match their checksums; the others go
        to quarantine (a damaged body is never sent)."""
        damage = await self.store.check(batch)
        sound = []
        for entry, problem in zip(batch, damage, strict=True):
            if problem is None:
                sound.append(entry)
            else:
                await self.quarantine_damaged(entry, problem)
        return sound

    async def quarantine_damaged(self, entry: SpooledMessage, damage: BodyDamaged) -> None:
        self.context.stats["damaged_bodies"] += 1
        reason = f"damaged body: {damage.problem} ({damage.location})"
        log.error("spool: message %s quarantined: %s", entry.id, reason)
        entry.quarantine_reason = reason
        await self._set_status(entry, Status.QUARANTINED, EventKind.QUARANTINED, reason)

    async def _deliver_locally(self, agent: LocalAgent, entry: SpooledMessage) -> None:
        try:
            # The agent reads the content a chunk at a time: a large message is never
            # whole in memory; a damaged one raises before its last chunk is read.
            async with self.store.content(entry) as content:
                results = await deliver_locally(agent, entry, content)
        except BodyDamaged as damage:
            await self.quarantine_damaged(entry, damage)
            return
        except Exception as exc:
            log.exception("local delivery of %s failed", entry.id)
            await self.settle(entry, {}, f"local delivery failed: {exc}")
            return
        refused = {rcpt: reply for rcpt, reply in results if not reply.is_completion}
        await self.settle(entry, refused, None, success="delivered")

    async def _settle_status(
        self,
        entry: SpooledMessage,
        status: EnvelopeStatus,
        remote: str | None,
        *,
        success: str | None = None,
    ) -> None:
        """Turn a client status into per-recipient refusals (empty: all accepted)."""
        if isinstance(status, Accepted | RejectedAllRecipients):
            refused = {str(address): reply for address, reply in status.rejected}
        else:
            refused = dict.fromkeys(entry.recipients, status.reply)
        # Unsendable: the client chose not to send; no remote MTA said anything.
        where = None if isinstance(status, Unsendable) else remote
        await self.settle(entry, refused, None, where, success=success)

    # -- settling -------------------------------------------------------------------------

    async def settle(
        self,
        entry: SpooledMessage,
        refused: dict[str, Reply],
        error: str | None,
        remote: str | None = None,
        *,
        success: str | None = None,
        not_before: float = 0.0,
    ) -> None:
        """Apply one attempt's result. ``error``: the attempt did not happen (a
        connection problem, no route now): everything is tried later (not before
        ``not_before``). Otherwise each recipient in ``refused`` is judged by
        ``on_error``, the others were accepted; those that asked NOTIFY=SUCCESS get a
        notice with Action ``success`` ("delivered", "relayed"; None: the next hop took
        their DSN request)."""
        now = self.context.clock()
        judged = await self._judge_all(entry, refused, error, now)
        failed = dict(judged.failures)
        done = [r for r in entry.recipients if r not in judged.later and r not in failed]
        self._delivered(entry, done, remote, now)
        if success is not None and done:
            try:
                await self.notices.success(entry, done, success, remote)
            except BodyDamaged as damage:
                log.error("no success notice for %s: %s", entry.id, damage)
        entry.recipients = judged.later
        if judged.later and not entry.retry_intervals:
            # Out of retries: what is left fails now (RFC 3463 4.4.7: delivery time expired).
            last = entry.last_attempt[1] if entry.last_attempt else "no attempt succeeded"
            expired = Reply.of(554, f"Delivery time expired; last error: {last}", "5.4.7")
            judged.failures.extend((r, refused.get(r, expired)) for r in judged.later)
            entry.recipients = judged.later = []
        if judged.failures:
            entry.failed.extend((r, str(reply)) for r, reply in judged.failures)
            try:
                await self.notices.bounce(entry, judged.failures, remote, refused)
            except BodyDamaged as damage:
                await self.quarantine_damaged(entry, damage)
                return
        if judged.later:
            await self._retry_later(
                entry, judged, refused, error=error, remote=remote, now=now, not_before=not_before
            )
        else:
            self._finish(entry)

    async def _judge_all(
        self, entry: SpooledMessage, refused: dict[str, Reply], error: str | None, now: float
    ) -> _Judged:
        judged = _Judged()
        if error is not None:
            entry.record_attempt(now, error)
            judged.later = list(entry.recipients)
            return judged
        outcomes: dict[Reply, Outcome] = {}
        for recipient in entry.recipients:
            reply = refused.get(recipient)
            if reply is None:
                continue  # accepted
            outcome = outcomes.get(reply)
            if outcome is None:
                outcome = outcomes[reply] = await self._judge(entry, reply)
            if outcome is Outcome.FAIL_PERMANENTLY:
                judged.failures.append((recipient, reply))
            elif outcome in (Outcome.TRY_LATER, Outcome.TRY_LATER_RATE_LIMITED):
                judged.later.append(recipient)
                judged.rate_limited |= outcome is Outcome.TRY_LATER_RATE_LIMITED
        if refused:
            entry.record_attempt(now, "; ".join(sorted({str(r) for r in refused.values()})))
        return judged

    async def _judge(self, entry: SpooledMessage, reply: Reply) -> Outcome:
        try:
            return await self.on_error(entry, reply)
        except Exception:
            log.exception("on_error hook failed for %s", entry.id)
            return Outcome.TRY_LATER

    def _delivered(
        self, entry: SpooledMessage, done: list[str], remote: str | None, now: float
    ) -> None:
        context = self.context
        context.stats["delivered_recipients"] += len(done)
        if done and context.mail.enabled():
            context.log(entry).info(
                "delivered",
                session_marker="delivered",
                spool_id=entry.id,
                recipients=done,
                relay=remote or "local",
                delay=round(now - entry.spool_date, 3),
            )

    async def _retry_later(
        self,
        entry: SpooledMessage,
        judged: _Judged,
        refused: dict[str, Reply],
        *,
        error: str | None,
        remote: str | None,
        now: float,
        not_before: float = 0.0,
    ) -> None:
        if held_by_operator(entry):
            self.store.update(entry)
            return
        schedule_retry(entry, now, self.rng, not_before)
        try:
            await self.notices.maybe_warn(entry, judged.later, refused, remote, now)
        except BodyDamaged as damage:
            await self.quarantine_damaged(entry, damage)
            return
        self.store.update(entry)
        report_deferred(
            self.context, entry, judged.later, remote, error, rate_limited=judged.rate_limited
        )

    def _finish(self, entry: SpooledMessage) -> None:
        """No recipient left to try: frozen when some failed (for an operator), else the
        message leaves the spool."""
        context = self.context
        if entry.failed and context.config.freeze_failed:
            if not held_by_operator(entry):
                entry.status = Status.FROZEN
                context.emit(EventKind.FROZEN, entry, "recipients failed")
                context.log(entry).info(
                    "frozen",
                    session_marker="frozen",
                    spool_id=entry.id,
                    recipients=[r for r, _ in entry.failed],
                )
            self.store.update(entry)
            return
        # Everything delivered (or handed to a bounce): the message leaves the spool.
        entry.status = Status.DELIVERED
        self.store.forget(entry)
        context.stats["delivered"] += 1
        context.emit(EventKind.DELIVERED, entry)


def held_by_operator(entry: SpooledMessage) -> bool:
    """Frozen, removed or quarantined meanwhile: an attempt's outcome keeps that state."""
    return entry.status in (Status.FROZEN, Status.REMOVED, Status.QUARANTINED)


def _still_sending(entries: list[SpooledMessage]) -> list[SpooledMessage]:
    """The entries nobody froze, removed or quarantined since they were claimed."""
    return [entry for entry in entries if entry.status is Status.SENDING]
