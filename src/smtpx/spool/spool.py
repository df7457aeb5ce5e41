"""The spool: durable intake, scheduled delivery with retries, bounces, admin operations.

::

    async with Spool(SpoolConfig(directory="var/spool"), router=router) as spool:
        ids = await spool.add([Delivery(envelope, route="example.org")])   # durable now
        ...
        await spool.freeze(ids); await spool.send(ids)

Delivery (F85-F88): due messages are grouped by destination; a worker takes a group, asks
``presend`` about each message, routes the group once (``router``), and sends it over one
pooled connection (``send_many``: one round trip per message). Each refusal is judged by
``on_error`` (default: 5xx fails permanently, anything else is tried later); recipients
that are done leave the message, failed ones are bounced (RFC 3464) and remembered, and
the rest wait for the next retry interval (with jitter). When the intervals run out, what
is left fails too: bounced, and the message is frozen for an operator.

Concurrency: at most ``max_deliveries`` workers in all and ``max_per_destination`` per
destination key: the message's explicit next hops when it has them, else its route (the
recipient domain the MTA spooled it under), so two domains that share a smarthost are
counted apart. State changes are journal records; acceptance is durable before ``add``
returns, deliveries are recorded without waiting (a crash may repeat a delivery, never lose
one: at-least-once, as Postfix).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import heapq
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from sys import intern
from typing import Any, Protocol

from smtpx.auth import Credentials
from smtpx.client import (
    Accepted,
    CacheConfig,
    ClientConfig,
    ConnectionCache,
    EnvelopeStatus,
    RejectedAllRecipients,
    Unsendable,
    WireFile,
)
from smtpx.client.cache import Opener
from smtpx.envelope import Envelope, EnvelopeId, HostPort, RetryInterval
from smtpx.errors import SMTPXError
from smtpx.maillog import Flows, MailLog
from smtpx.protocol.addresses import Address
from smtpx.protocol.data import dot_stuff, dot_unstuff
from smtpx.protocol.replies import Reply
from smtpx.server.events import EventBus
from smtpx.spool.bounce import RecipientFailure, build_bounce, build_delay_warning
from smtpx.spool.journal import (
    BodyDamaged,
    FsyncPolicy,
    Journal,
    JournalProblem,
    Location,
    Record,
    RecordKind,
    Replay,
)
from smtpx.spool.message import SpooledMessage, Status, message_id_of

__all__ = [
    "DEFAULT_RETRY_INTERVALS",
    "Delivery",
    "EventKind",
    "Hops",
    "Local",
    "LocalAgent",
    "Outcome",
    "Presend",
    "RouteLater",
    "Spool",
    "SpoolConfig",
    "SpoolError",
    "SpoolEvent",
    "Unroutable",
]

log = logging.getLogger("smtpx.spool")

COMPACTION_BATCH = 256  # messages copied forward per journal append

DEFAULT_RETRY_INTERVALS = tuple(
    RetryInterval.parse(text)
    for text in (
        "1m~10s",
        "5m~1m",
        "15m~3m",
        "30m~5m",
        "1h~10m",
        "2h~20m",
        "4h~30m",
        "8h~1h",
        "16h~2h",
    )
)


class SpoolError(SMTPXError):
    """An admin request the spool cannot carry out (unknown id, wrong state...)."""


class Outcome(enum.Enum):
    """What ``on_error`` decides about a refusal (F87)."""

    DONE = "done"  # stop trying this recipient (someone else handles it)
    FAIL_PERMANENTLY = "fail_permanently"
    TRY_LATER = "try_later"
    TRY_LATER_RATE_LIMITED = "try_later_rate_limited"


@dataclass(frozen=True, slots=True)
class Presend:
    """What the ``presend`` hook decides before an attempt (F85): one of
    ``Presend.send_now()``, ``Presend.send_at(when)``, ``Presend.freeze()``,
    ``Presend.remove()``."""

    action: str  # "send_now" | "send_at" | "freeze" | "remove"
    at: float | None = None

    @classmethod
    def send_now(cls) -> Presend:
        return _SEND_NOW

    @classmethod
    def send_at(cls, when: float) -> Presend:
        return cls("send_at", when)

    @classmethod
    def freeze(cls) -> Presend:
        return cls("freeze")

    @classmethod
    def remove(cls) -> Presend:
        return cls("remove")


_SEND_NOW = Presend("send_now")


# -- where a message goes (the router's answers) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Hops:
    """Send over SMTP to the first of ``hops`` that answers."""

    hops: tuple[HostPort, ...]
    key: str = ""
    credentials: Credentials | None = None


class LocalAgent(Protocol):
    async def deliver(self, message: SpooledMessage, content: bytes) -> list[tuple[str, Reply]]:
        """Deliver ``content`` (the raw message) to each remaining recipient; one reply
        each (2xx: delivered)."""
        ...


@dataclass(frozen=True, slots=True)
class Local:
    agent: LocalAgent


@dataclass(frozen=True, slots=True)
class Unroutable:
    """No route will ever exist (null MX, no such domain): a permanent failure."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class RouteLater:
    """No route now (a DNS timeout): try later."""

    reason: str


Destination = Hops | Local | Unroutable | RouteLater
Router = Callable[[SpooledMessage], Awaitable[Destination]]
PresendHook = Callable[[SpooledMessage], Awaitable[Presend]]
OnError = Callable[[SpooledMessage, Reply], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message to spool: the envelope, and where it goes (explicit next hops, or a route
    key, usually the recipients' domain, for the router). Retry intervals default to the
    spool's."""

    envelope: Envelope
    next_hops: tuple[HostPort, ...] = ()
    route: str | None = None
    retry_intervals: tuple[RetryInterval, ...] | None = None
    flows: Flows = field(default_factory=Flows)  # mail log flows; an ``out##`` id is added


class EventKind(enum.Enum):
    SPOOLED = "spooled"
    PRESEND = "presend"
    DELIVERED = "delivered"
    DELAYED = "delayed"
    DELAYED_RATE_LIMITED = "delayed_rate_limited"
    FROZEN = "frozen"
    UNFROZEN = "unfrozen"
    REMOVED = "removed"
    RECOVERED = "recovered"
    PURGED = "purged"
    QUARANTINED = "quarantined"
    BOUNCED = "bounced"
    PING = "ping"


@dataclass(frozen=True, slots=True)
class SpoolEvent:
    time: float
    kind: EventKind
    id: str = ""
    detail: str = ""
    spool_date: float | None = None  # when the message was accepted

    def __str__(self) -> str:
        return f"{self.id} {self.kind.value}{': ' + self.detail if self.detail else ''}".strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolConfig:
    directory: str | Path = "var/spool"
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    segment_size: int = 64 * 1024 * 1024
    max_deliveries: int = 100
    max_per_destination: int = 10
    batch_size: int = 20  # messages sent over one connection in a row (send_many)
    retry_intervals: tuple[RetryInterval, ...] = DEFAULT_RETRY_INTERVALS
    bounce: bool = True
    freeze_failed: bool = True  # keep a message whose recipients all failed, frozen
    reporting_mta: str = "localhost"
    delay_warning_after: float | None = None  # tell the sender once a message waits this long
    ping_interval: float = 30.0
    cache: CacheConfig = field(default_factory=CacheConfig)


async def _default_presend(message: SpooledMessage) -> Presend:
    return _SEND_NOW


async def _default_on_error(message: SpooledMessage, reply: Reply) -> Outcome:
    return Outcome.FAIL_PERMANENTLY if reply.is_permanent else Outcome.TRY_LATER


class Spool:
    """The spool service; an async context manager."""

    def __init__(
        self,
        config: SpoolConfig | None = None,
        *,
        client_config: ClientConfig | None = None,
        router: Router | None = None,
        presend: PresendHook | None = None,
        on_error: OnError | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        opener: Opener | None = None,
    ) -> None:
        self.config = config or SpoolConfig()
        self.journal = Journal(
            self.config.directory, fsync=self.config.fsync, segment_size=self.config.segment_size
        )
        self.journal.on_new_segment = self._on_new_segment
        self.cache = ConnectionCache(self.config.cache, client_config, opener=opener)
        self.router = router or _hops_only
        self.presend = presend or _default_presend
        self.on_error = on_error or _default_on_error
        self.clock = clock
        self.rng = rng or random.Random()
        self.events: EventBus[SpoolEvent] = EventBus()
        self.mail = MailLog("spool")
        self.problems: list[JournalProblem] = []
        self.messages: dict[str, SpooledMessage] = {}
        # Live message bodies per journal segment (count, octets): what keeps it on disk.
        self._live: dict[int, list[int]] = {}
        self._compaction: asyncio.Task[int] | None = None
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._ready: dict[str, deque[str]] = defaultdict(deque)
        self._active: dict[str, int] = defaultdict(int)
        self._workers: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._killed = False
        self.stats: dict[str, int] = defaultdict(int)

    # -- life ---------------------------------------------------------------------------

    async def __aenter__(self) -> Spool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill_and_flush()

    async def start(self) -> None:
        """Open the journal, reload every message, schedule what is due (F83)."""
        replay = _EntryReplay()
        await asyncio.get_running_loop().run_in_executor(None, self.journal.open, replay)
        self.problems = replay.problems
        self.messages, replay.entries = replay.entries, {}
        for location in replay.unreadable.values():
            self._hold(location)  # never deleted: a newer smtpx may read it
        for message in self.messages.values():
            self._hold(message.location)
            if message.status in (Status.SEND_NOW, Status.SENDING):
                message.status = Status.SEND_NOW
                self._make_ready(message)
            elif message.status is Status.SEND_AT:
                self._schedule(message)
        await self.cache.__aenter__()
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self._scheduler()), loop.create_task(self._pinger())]
        self._collect_segments()
        log.info(
            "spool %s: %d messages (%d records in %d segments)",
            self.config.directory,
            len(self.messages),
            replay.records,
            replay.segments,
        )

    async def kill_and_flush(self, timeout: float | None = None) -> bool:
        """Start no new deliveries, wait (up to ``timeout``) for the running ones, close
        the connection cache and the journal (F94). False when workers had to be cut off."""
        self._killed = True
        self._wake.set()
        clean = True
        if self._workers:
            _, pending = await asyncio.wait(list(self._workers), timeout=timeout)
            for task in pending:
                clean = False
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in self._background:
            task.cancel()
        tasks: list[asyncio.Task[Any]] = [*self._background]
        if self._compaction is not None:
            self._compaction.cancel()
            tasks.append(self._compaction)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background = []
        await self.cache.close()
        await self.journal.aclose()
        return clean

    # -- intake -------------------------------------------------------------------------

    async def add(
        self, deliveries: Sequence[Delivery], *, frozen: bool = False, set_related: bool = False
    ) -> list[str]:
        """Spool ``deliveries``; return their ids once they are durable (F84).

        With ``set_related``, each message records the ids of the others of this call
        (``related``; the metadata grows with the square of the call's size, so keep it
        for small calls, like one SMTP transaction split by domain).
        """
        status = Status.FROZEN if frozen else Status.SEND_NOW
        entries = await self._write(deliveries, status, set_related=set_related)
        for entry in entries:
            self._emit(EventKind.SPOOLED, entry)
            self._log(entry).debug(
                "spooled", spool_id=entry.id, local_id=entry.parent_id, route=entry.route
            )
            if not frozen:
                self._make_ready(entry)
        self.stats["spooled"] += len(entries)
        return [entry.id for entry in entries]

    async def quarantine(self, deliveries: Sequence[Delivery], reason: str) -> list[str]:
        """Keep ``deliveries`` on disk, never sent unless recovered (F93)."""
        entries = await self._write(deliveries, Status.QUARANTINED, quarantine=reason)
        for entry in entries:
            self._emit(EventKind.QUARANTINED, entry, reason)
        return [entry.id for entry in entries]

    async def _write(
        self,
        deliveries: Sequence[Delivery],
        status: Status,
        quarantine: str | None = None,
        *,
        set_related: bool = False,
    ) -> list[SpooledMessage]:
        now = self.clock()
        entries: list[SpooledMessage] = []
        records: list[Record] = []
        ids = [str(EnvelopeId.create()) for _ in deliveries]
        for delivery, message_id in zip(deliveries, ids, strict=True):
            envelope = delivery.envelope
            intervals = (
                self.config.retry_intervals
                if delivery.retry_intervals is None
                else delivery.retry_intervals
            )
            entry = SpooledMessage(
                id=message_id,
                parent_id=str(envelope.id),
                spool_date=now,
                status=status,
                sender=intern(envelope.sender.path()),
                sender_args=intern(str(envelope.info.sender_args)),
                recipients=[str(r) for r in envelope.recipients],
                location=_NOWHERE,
                next_hops=tuple(intern(str(h)) for h in delivery.next_hops),
                route=None if delivery.route is None else intern(delivery.route),
                retry_intervals=[intern(str(i)) for i in intervals],
                quarantine_reason=quarantine,
                related=tuple(i for i in ids if i != message_id) if set_related else (),
                flows=delivery.flows.extend("out").ids,
                message_id=message_id_of(envelope),
                rcpt_params={str(a): str(p) for a, p in envelope.info.recipient_params},
            )
            entries.append(entry)
            # Stored wire-ready: dot-stuffed with CRLF, without the final ".CRLF"; a
            # spilled message is copied from its file a chunk at a time.
            content = envelope.content
            if isinstance(content, bytes):
                records.append(Record(RecordKind.MESSAGE, entry.to_meta(), dot_stuff(content)[:-3]))
            else:
                records.append(Record(RecordKind.MESSAGE, entry.to_meta(), stream=content))
        locations = await self.journal.append(records)
        for entry, location in zip(entries, locations, strict=True):
            assert location is not None
            entry.location = location
            self.messages[entry.id] = entry
            self._hold(location)
        return entries

    # -- scheduling ---------------------------------------------------------------------

    def _schedule(self, entry: SpooledMessage) -> None:
        assert entry.next_attempt is not None
        self._seq += 1
        heapq.heappush(self._heap, (entry.next_attempt, self._seq, entry.id))
        self._wake.set()

    async def _scheduler(self) -> None:
        while not self._killed:
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                due, _, message_id = heapq.heappop(self._heap)
                entry = self.messages.get(message_id)
                # A stale heap entry (rescheduled, frozen, delivered since) is skipped.
                if (
                    entry is not None
                    and entry.status is Status.SEND_AT
                    and entry.next_attempt == due
                ):
                    entry.status = Status.SEND_NOW
                    self._make_ready(entry)
            self._wake.clear()
            delay = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _make_ready(self, entry: SpooledMessage) -> None:
        key = _destination_key(entry)
        self._ready[key].append(entry.id)
        self._kick(key)

    def _kick(self, key: str | None = None) -> None:
        if self._killed:
            return
        keys = [key] if key is not None else list(self._ready)
        batch, per_destination = self.config.batch_size, self.config.max_per_destination
        for k in keys:
            queue = self._ready.get(k)
            if not queue:
                continue
            # Enough workers for the queue in batches, within both limits.
            wanted = min(per_destination, -(-len(queue) // batch))
            while self._active[k] < wanted and len(self._workers) < self.config.max_deliveries:
                self._active[k] += 1
                task = asyncio.get_running_loop().create_task(self._worker(k))
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)

    async def _worker(self, key: str) -> None:
        try:
            while not self._killed:
                batch = self._take(key)
                if not batch:
                    return
                try:
                    await self._attempt(batch)
                except Exception as exc:
                    # A bug must not strand messages in "sending": they are tried again.
                    log.exception("delivery to %s failed unexpectedly", key)
                    for entry in batch:
                        if entry.status is Status.SENDING:
                            await self._settle(entry, {}, f"internal error: {type(exc).__name__}")
        finally:
            self._active[key] -= 1
            if not self._active[key]:
                del self._active[key]
            if not self._ready.get(key):
                self._ready.pop(key, None)
            self._kick()

    def _take(self, key: str) -> list[SpooledMessage]:
        queue = self._ready.get(key)
        batch: list[SpooledMessage] = []
        while queue and len(batch) < self.config.batch_size:
            entry = self.messages.get(queue.popleft())
            if entry is not None and entry.status is Status.SEND_NOW:
                entry.status = Status.SENDING
                batch.append(entry)
        return batch

    # -- delivery -----------------------------------------------------------------------

    async def _attempt(self, batch: list[SpooledMessage]) -> None:
        to_send = []
        for entry in batch:
            decision = await self._ask_presend(entry)
            if decision.action == "send_now":
                to_send.append(entry)
            elif decision.action == "send_at" and decision.at is not None:
                entry.status = Status.SEND_AT
                entry.next_attempt = decision.at
                self._schedule(entry)
                self._update(entry)
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
            destination = RouteLater(f"router failed: {type(exc).__name__}: {exc}")
        if isinstance(destination, Unroutable):
            for entry in to_send:
                await self._settle(entry, dict.fromkeys(entry.recipients, destination.reply), None)
        elif isinstance(destination, RouteLater):
            for entry in to_send:
                await self._settle(entry, {}, destination.reason)
        elif isinstance(destination, Local):
            for entry in to_send:
                await self._deliver_locally(destination.agent, entry)
        else:
            await self._deliver(destination, to_send)

    async def _ask_presend(self, entry: SpooledMessage) -> Presend:
        try:
            decision = await self.presend(entry)
        except Exception:
            log.exception("presend hook failed for %s", entry.id)
            decision = _SEND_NOW
        if decision.action != "send_now":
            self._emit(EventKind.PRESEND, entry, decision.action)
        return decision

    async def _deliver(self, destination: Hops, batch: list[SpooledMessage]) -> None:
        """Send ``batch`` over one connection; each message's outcome is recorded as soon
        as its reply arrives (a crash repeats at most the messages in flight)."""
        batch = await self._sound(batch)
        if not batch:
            return
        settled: set[str] = set()
        error: str | None = None
        try:
            async with self.cache.connection(
                destination.hops, credentials=destination.credentials, route=destination.key or None
            ) as (hop, client):
                items = [(entry.info(), self._wire(entry)) for entry in batch]
                with contextlib.ExitStack() as pins:
                    for entry in batch:
                        pins.enter_context(self.journal.pinned(entry.location.segment))
                    index = 0
                    # A next hop that offers DSN got NOTIFY/ORCPT/RET/ENVID: it sends the
                    # notices from here on (RFC 3461 5.2.1); one that does not, we do.
                    relayed = not client.extensions.dsn
                    async for outcome in client.send_many(items):
                        entry = batch[index]
                        index += 1
                        settled.add(entry.id)
                        await self._settle_guarded(entry, outcome, hop.host, relayed=relayed)
        except (SMTPXError, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        for entry in batch:
            if entry.id not in settled:
                await self._settle(entry, {}, error or "not attempted")
        if settled:
            self._collect_segments()  # what was released while the segments were pinned

    async def _settle_guarded(
        self, entry: SpooledMessage, outcome: EnvelopeStatus, remote: str, *, relayed: bool
    ) -> None:
        """Settle one outcome in the middle of a connection: a failure here is ours, not
        the connection's, and must not be taken for one."""
        try:
            success = "relayed" if relayed else None
            await self._settle_status(entry, outcome, remote, success=success)
        except Exception as exc:
            log.exception("settling the delivery of %s failed", entry.id)
            if entry.status is Status.SENDING:
                await self._settle(entry, {}, f"internal error: {type(exc).__name__}")

    async def _sound(self, batch: list[SpooledMessage]) -> list[SpooledMessage]:
        """The messages of ``batch`` whose bodies match their checksums; the others go
        to quarantine (a damaged body is never sent)."""
        locations = [entry.location for entry in batch]
        damage = await asyncio.to_thread(self.journal.check_bodies, locations)
        sound = []
        for entry, problem in zip(batch, damage, strict=True):
            if problem is None:
                sound.append(entry)
            else:
                await self._quarantine_damaged(entry, problem)
        return sound

    async def _quarantine_damaged(self, entry: SpooledMessage, damage: BodyDamaged) -> None:
        self.stats["damaged_bodies"] += 1
        reason = f"damaged body: {damage.problem} ({damage.location})"
        log.error("spool: message %s quarantined: %s", entry.id, reason)
        entry.quarantine_reason = reason
        await self._set_status(entry, Status.QUARANTINED, EventKind.QUARANTINED, reason)

    def _wire(self, entry: SpooledMessage) -> WireFile:
        path = self.journal.segment_path(entry.location.segment)
        return WireFile(path, entry.location.length, entry.location.offset)

    async def _deliver_locally(self, agent: LocalAgent, entry: SpooledMessage) -> None:
        try:
            content = dot_unstuff(self.journal.read_body(entry.location))
        except BodyDamaged as damage:
            await self._quarantine_damaged(entry, damage)
            return
        try:
            results = await agent.deliver(entry, content)
        except Exception as exc:
            log.exception("local delivery of %s failed", entry.id)
            await self._settle(entry, {}, f"local delivery failed: {exc}")
            return
        refused = {rcpt: reply for rcpt, reply in results if not reply.is_completion}
        await self._settle(entry, refused, None, success="delivered")

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
        await self._settle(entry, refused, None, where, success=success)

    async def _settle(
        self,
        entry: SpooledMessage,
        refused: dict[str, Reply],
        error: str | None,
        remote: str | None = None,
        *,
        success: str | None = None,
    ) -> None:
        """Apply one attempt's result. ``error``: the attempt did not happen (a
        connection problem, no route now): everything is tried later. Otherwise each
        recipient in ``refused`` is judged by ``on_error``, the others were accepted;
        those that asked NOTIFY=SUCCESS get a notice with Action ``success``
        ("delivered", "relayed"; None: the next hop took their DSN request)."""
        now = self.clock()
        failures: list[tuple[str, Reply]] = []
        rate_limited = False
        if error is not None:
            entry.record_attempt(now, error)
            later = list(entry.recipients)
        else:
            later = []
            judged: dict[Reply, Outcome] = {}
            for recipient in entry.recipients:
                reply = refused.get(recipient)
                if reply is None:
                    continue  # accepted
                outcome = judged.get(reply)
                if outcome is None:
                    outcome = await self._judge(entry, reply)
                    judged[reply] = outcome
                if outcome is Outcome.FAIL_PERMANENTLY:
                    failures.append((recipient, reply))
                elif outcome in (Outcome.TRY_LATER, Outcome.TRY_LATER_RATE_LIMITED):
                    later.append(recipient)
                    rate_limited |= outcome is Outcome.TRY_LATER_RATE_LIMITED
            if refused:
                entry.record_attempt(now, "; ".join(sorted({str(r) for r in refused.values()})))
        delivered = len(entry.recipients) - len(later) - len(failures)
        self.stats["delivered_recipients"] += delivered
        done = [r for r in entry.recipients if r not in later and r not in dict(failures)]
        if success is not None and done:
            try:
                await self._notify_success(entry, done, success, remote)
            except BodyDamaged as damage:
                log.error("no success notice for %s: %s", entry.id, damage)
        if delivered and self.mail.enabled():
            self._log(entry).info(
                "delivered",
                session_marker="delivered",
                spool_id=entry.id,
                recipients=done,
                relay=remote or "local",
                delay=round(now - entry.spool_date, 3),
            )
        entry.recipients = later
        if later and not entry.retry_intervals:
            # Out of retries: what is left fails now (RFC 3463 4.4.7: delivery time expired).
            last = entry.last_attempt[1] if entry.last_attempt else "no attempt succeeded"
            expired = Reply.of(554, f"Delivery time expired; last error: {last}", "5.4.7")
            failures.extend((r, refused.get(r, expired)) for r in later)
            entry.recipients = later = []
        if failures:
            entry.failed.extend((r, str(reply)) for r, reply in failures)
            try:
                await self._bounce(entry, failures, remote, refused)
            except BodyDamaged as damage:
                await self._quarantine_damaged(entry, damage)
                return
        operator_state = entry.status in (Status.FROZEN, Status.REMOVED, Status.QUARANTINED)
        if later:
            if operator_state:
                self._update(entry)
                return
            interval = RetryInterval.parse(entry.retry_intervals.pop(0))
            entry.next_attempt = now + interval.to_span(self.rng)
            entry.status = Status.SEND_AT
            try:
                await self._maybe_warn(entry, later, refused, remote, now)
            except BodyDamaged as damage:
                await self._quarantine_damaged(entry, damage)
                return
            self._schedule(entry)
            self._update(entry)
            self.stats["deferred"] += 1
            self._log(entry).info(
                "deferred",
                session_marker="deferred",
                spool_id=entry.id,
                recipients=later,
                relay=remote,
                reply=entry.last_attempt[1] if entry.last_attempt else error,
                next_attempt=round(entry.next_attempt, 3),
            )
            kind = EventKind.DELAYED_RATE_LIMITED if rate_limited else EventKind.DELAYED
            self._emit(kind, entry, f"until {entry.next_attempt:.0f}")
            return
        if entry.failed and self.config.freeze_failed:
            if not operator_state:
                entry.status = Status.FROZEN
                self._emit(EventKind.FROZEN, entry, "recipients failed")
                self._log(entry).info(
                    "frozen",
                    session_marker="frozen",
                    spool_id=entry.id,
                    recipients=[r for r, _ in entry.failed],
                )
            self._update(entry)
            return
        # Everything delivered (or handed to a bounce): the message leaves the spool.
        entry.status = Status.DELIVERED
        del self.messages[entry.id]
        self._append_nowait([Record(RecordKind.FORGET, {"v": 1, "id": entry.id})])
        self.stats["delivered"] += 1
        self._emit(EventKind.DELIVERED, entry)
        if self._release(entry.location):
            self._collect_segments()

    async def _maybe_warn(
        self,
        entry: SpooledMessage,
        waiting: list[str],
        refused: dict[str, Reply],
        remote: str | None,
        now: float,
    ) -> None:
        """Once a message has waited ``delay_warning_after``, tell its sender (once) that
        it is still being retried (RFC 3464 ``Action: delayed``)."""
        after = self.config.delay_warning_after
        if after is None or entry.warned or entry.sender == "<>" or now - entry.spool_date < after:
            return
        entry.warned = True
        original = self._original(entry, waiting)
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
            failures.append(self._with_dsn(entry, failure))
        notice = build_delay_warning(
            original,
            failures,
            reporting_mta=self.config.reporting_mta,
            arrival_date=entry.spool_date,
            now=now,
            will_retry_until=now + sum(i.span for i in entry.intervals()),
        )
        if notice is not None:
            await self.add([Delivery(notice, route=_domain(original), flows=Flows(entry.flows))])
            self.stats["delay_warnings"] += 1

    def _with_dsn(self, entry: SpooledMessage, failure: RecipientFailure) -> RecipientFailure:
        """The notice's view of a recipient, with what it asked for in RCPT: NOTIFY (which
        notices it wants) and ORCPT (its Original-Recipient), RFC 3461."""
        params = entry.params_of(str(failure.recipient))
        if params.notify is None and params.orcpt is None:
            return failure
        return dataclasses.replace(failure, notify=params.notify, orcpt=params.orcpt)

    async def _notify_success(
        self, entry: SpooledMessage, done: list[str], action: str, remote: str | None
    ) -> None:
        """Tell the sender of the ``done`` recipients that asked NOTIFY=SUCCESS (RFC 3461
        4.1): ``delivered`` to a local mailbox, or ``relayed`` to a next hop that does not
        offer DSN."""
        if not self.config.bounce or entry.sender == "<>":
            return
        wanted = [r for r in done if "SUCCESS" in (entry.params_of(r).notify or ())]
        if not wanted:
            return
        original = self._original(entry, wanted)
        how = f"relayed to {remote}, which does not offer DSN" if remote else "delivered"
        successes = [
            self._with_dsn(
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
            reporting_mta=self.config.reporting_mta,
            arrival_date=entry.spool_date,
            now=self.clock(),
        )
        if notice is not None:
            await self.add([Delivery(notice, route=_domain(original), flows=Flows(entry.flows))])
            self.stats["success_notices"] += 1

    def _original(self, entry: SpooledMessage, recipients: list[str]) -> Envelope:
        return Envelope.create(
            sender=entry.sender,
            recipients=recipients,
            message=dot_unstuff(self.journal.read_body(entry.location)),
            sender_args=entry.sender_args,
        )

    async def _judge(self, entry: SpooledMessage, reply: Reply) -> Outcome:
        try:
            return await self.on_error(entry, reply)
        except Exception:
            log.exception("on_error hook failed for %s", entry.id)
            return Outcome.TRY_LATER

    async def _bounce(
        self,
        entry: SpooledMessage,
        failures: list[tuple[str, Reply]],
        remote: str | None,
        refused: dict[str, Reply],
    ) -> None:
        if not self.config.bounce or entry.sender == "<>":
            return
        original = self._original(entry, [r for r, _ in failures])
        # Only a reply of ``refused`` came from ``remote``; one made up here ("delivery
        # time expired") is reported as this host's own diagnostic.
        notice = build_bounce(
            original,
            [
                self._with_dsn(
                    entry,
                    RecipientFailure.of(
                        Address.parse(r),
                        reply,
                        remote_mta=remote if refused.get(r) is reply else None,
                    ),
                )
                for r, reply in failures
            ],
            reporting_mta=self.config.reporting_mta,
            arrival_date=entry.spool_date,
            now=self.clock(),
        )
        if notice is None:
            return
        await self.add([Delivery(notice, route=_domain(original), flows=Flows(entry.flows))])
        self.stats["bounces"] += 1
        self._log(entry).info(
            "bounced",
            session_marker="bounced",
            spool_id=entry.id,
            recipients=[r for r, _ in failures],
            reply=str(failures[0][1]),
        )
        self._emit(EventKind.BOUNCED, entry, ", ".join(r for r, _ in failures))

    # -- state records ------------------------------------------------------------------

    def _update(self, entry: SpooledMessage) -> None:
        self._append_nowait([Record(RecordKind.UPDATE, entry.state_meta())])

    def _append_nowait(self, records: list[Record]) -> None:
        # Queued now, not in a task of its own: a record written later (an admin freeze
        # in the same loop turn) must land after it, or a restart would undo it.
        self.journal.append_nowait(records).add_done_callback(_log_failure)

    async def _set_status(
        self, entry: SpooledMessage, status: Status, kind: EventKind, detail: str = ""
    ) -> None:
        entry.status = status
        if status is not Status.SEND_AT:
            entry.next_attempt = None
        await self.journal.append([Record(RecordKind.UPDATE, entry.state_meta())])
        self._emit(kind, entry, detail)

    def _log(self, entry: SpooledMessage) -> MailLog:
        return self.mail.with_flows(Flows(entry.flows))

    def _emit(self, kind: EventKind, entry: SpooledMessage, detail: str = "") -> None:
        when = entry.spool_date if kind in (EventKind.SPOOLED, EventKind.PRESEND) else self.clock()
        self.events.publish(SpoolEvent(when, kind, entry.id, detail, entry.spool_date))

    # -- disk space ---------------------------------------------------------------------

    def _hold(self, location: Location) -> None:
        held = self._live.setdefault(location.segment, [0, 0])
        held[0] += 1
        held[1] += location.length

    def _release(self, location: Location) -> bool:
        """Forget one live body; True when its segment holds no live body any more."""
        held = self._live.get(location.segment)
        if held is None:
            return False
        held[0] -= 1
        held[1] -= location.length
        if held[0] > 0:
            return False
        del self._live[location.segment]
        return True

    def _on_new_segment(self) -> None:
        if not self._killed:
            self._collect_segments()

    def _collect_segments(self) -> None:
        """Delete the segments nothing needs any more; start a compaction when most of
        what the kept ones hold is dead."""
        dead = self.journal.removable_segments(set(self._live))
        if dead:
            self.journal.delete_segments(dead)
        if self._killed or (self._compaction is not None and not self._compaction.done()):
            return
        if self._worth_compacting():
            self._compaction = asyncio.get_running_loop().create_task(self.compact())
            self._compaction.add_done_callback(_log_failure)

    def _worth_compacting(self) -> bool:
        """At least two sealed segments, more than half of them dead: one old message
        (frozen, say) must not keep gigabytes of delivered mail on disk."""
        sealed = [n for n in self.journal.segment_numbers() if n != self.journal.current_segment]
        if len(sealed) < 2:
            return False
        size = 0
        for number in sealed:
            with contextlib.suppress(FileNotFoundError):
                size += self.journal.segment_path(number).stat().st_size
        live = sum(self._live.get(number, (0, 0))[1] for number in sealed)
        return live * 2 < size

    def _read_bodies(self, entries: list[SpooledMessage]) -> list[tuple[bytes, BodyDamaged | None]]:
        return [self.journal.read_body_raw(entry.location) for entry in entries]

    async def compact(self) -> int:
        """Copy the live messages of the oldest sealed segment to the end of the journal
        (a new message record with their current state), so that it, and the dead
        segments behind it, can be deleted. Returns how many messages were copied.

        Safe against everything running meanwhile: a message delivered before its copy is
        appended is not copied; one delivered after has its forget record after the copy.
        """
        sealed = [n for n in self.journal.segment_numbers() if n != self.journal.current_segment]
        if not sealed:
            return 0
        oldest = sealed[0]
        entries = [e for e in self.messages.values() if e.location.segment == oldest]
        copied = 0
        for start in range(0, len(entries), COMPACTION_BATCH):
            chunk = entries[start : start + COMPACTION_BATCH]
            with self.journal.pinned(oldest):
                bodies = await asyncio.to_thread(self._read_bodies, chunk)
            # No await between this check and the append call: the journal's order is
            # the order of these lines.
            kept = [
                (entry, body)
                for entry, (body, _) in zip(chunk, bodies, strict=True)
                if self.messages.get(entry.id) is entry and entry.location.segment == oldest
            ]
            if not kept:
                continue
            # The copy keeps the original checksum: a damaged body stays detectably so.
            locations = await self.journal.append(
                [
                    Record(RecordKind.MESSAGE, entry.to_meta(), body, entry.location.crc)
                    for entry, body in kept
                ]
            )
            for (entry, _), location in zip(kept, locations, strict=True):
                assert location is not None
                if self.messages.get(entry.id) is entry:
                    self._release(entry.location)
                    entry.location = location
                    self._hold(location)
            copied += len(kept)
            for entry, (_, damage) in zip(chunk, bodies, strict=True):
                # (a message being sent is checked, and quarantined, by its delivery)
                idle = entry.status not in (Status.QUARANTINED, Status.SENDING)
                if damage is not None and idle and self.messages.get(entry.id) is entry:
                    await self._quarantine_damaged(entry, damage)
        self.stats["compacted"] += copied
        log.info("spool: compaction copied %d messages out of segment %d", copied, oldest)
        if copied:  # (else what holds it cannot move: messages a newer smtpx wrote)
            self._collect_segments()
        return copied

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval)
            self.events.publish(SpoolEvent(self.clock(), EventKind.PING))

    # -- admin (F89-F92) ----------------------------------------------------------------

    def get(self, message_id: str) -> SpooledMessage:
        try:
            return self.messages[message_id]
        except KeyError:
            raise SpoolError(f"{message_id}: not found") from None

    def status(self) -> list[SpooledMessage]:
        """Every message known, oldest first (no content is ever read)."""
        return sorted(self.messages.values(), key=lambda m: (m.spool_date, m.id))

    def read_message(self, message_id: str) -> bytes:
        """The message as received; :class:`BodyDamaged` if its body rotted."""
        return dot_unstuff(self.journal.read_body(self.get(message_id).location))

    def inspect_message(self, message_id: str) -> tuple[bytes, BodyDamaged | None]:
        """The message as stored, damaged or not, and what is wrong with it (for an
        operator's ``show``: looking is not using)."""
        body, damage = self.journal.read_body_raw(self.get(message_id).location)
        return dot_unstuff(body), damage

    async def freeze(self, ids: Iterable[str]) -> None:
        for message_id in ids:
            entry = self.get(message_id)
            if entry.status in (Status.REMOVED, Status.QUARANTINED):
                raise SpoolError(f"{message_id}: is {entry.status.value}; recover it first")
            if entry.status is not Status.FROZEN:
                await self._set_status(entry, Status.FROZEN, EventKind.FROZEN, "by request")

    async def send(
        self,
        ids: Iterable[str] | None = None,
        *,
        frozen_only: bool = False,
        retry_intervals: Sequence[RetryInterval] = (),
    ) -> int:
        """Send now: the given messages, or (``ids`` None) every frozen and waiting one,
        or with ``frozen_only`` every frozen one (F90). Given retry intervals come first;
        failed recipients are tried again. Returns how many were released."""
        if ids is None:
            wanted = [
                m
                for m in self.messages.values()
                if m.status is Status.FROZEN or (m.status is Status.SEND_AT and not frozen_only)
            ]
        else:
            wanted = [self.get(i) for i in ids]
            for entry in wanted:
                if entry.status in (Status.REMOVED, Status.QUARANTINED):
                    state = entry.status.value
                    raise SpoolError(f"{entry.id}: is {state}; recover it first")
        released = 0
        for entry in wanted:
            if entry.status not in (Status.FROZEN, Status.SEND_AT):
                continue
            was_frozen = entry.status is Status.FROZEN
            entry.retry_intervals = [str(i) for i in retry_intervals] + entry.retry_intervals
            entry.recipients = entry.recipients + [r for r, _ in entry.failed]
            entry.failed = []
            entry.status = Status.SEND_NOW
            entry.next_attempt = None
            await self.journal.append([Record(RecordKind.UPDATE, entry.state_meta())])
            if was_frozen:
                self._emit(EventKind.UNFROZEN, entry)
            self._make_ready(entry)
            released += 1
        return released

    async def remove(self, ids: Iterable[str]) -> None:
        """Only frozen messages can be removed (F91); removed ones can be recovered."""
        for message_id in ids:
            entry = self.get(message_id)
            if entry.status is not Status.FROZEN:
                state = entry.status.value
                raise SpoolError(f"{message_id}: only frozen messages can be removed ({state})")
            await self._set_status(entry, Status.REMOVED, EventKind.REMOVED)

    async def recover(self, ids: Iterable[str], *, from_: str = "removed") -> None:
        """Bring removed (``from_="removed"``) or quarantined messages back, frozen (F92)."""
        source = {"removed": Status.REMOVED, "quarantine": Status.QUARANTINED}[from_]
        for message_id in ids:
            entry = self.get(message_id)
            if entry.status is not source:
                raise SpoolError(f"{message_id}: is not {source.value}")
            entry.quarantine_reason = None
            await self._set_status(entry, Status.FROZEN, EventKind.RECOVERED, f"from {from_}")

    async def purge(self, ids: Iterable[str]) -> None:
        """Forget removed or quarantined messages for good: their journal space can then be
        reclaimed. Nothing else can be purged (remove it first)."""
        entries = [self.get(message_id) for message_id in ids]
        for entry in entries:
            if entry.status not in (Status.REMOVED, Status.QUARANTINED):
                state = entry.status.value
                raise SpoolError(
                    f"{entry.id}: only removed or quarantined messages can be purged ({state})"
                )
        for entry in entries:
            if self.messages.pop(entry.id, None) is None:
                continue  # named twice
            self._release(entry.location)
            await self.journal.append([Record(RecordKind.FORGET, {"v": 1, "id": entry.id})])
            self._emit(EventKind.PURGED, entry)
        self._collect_segments()

    # -- offline -------------------------------------------------------------------------

    @staticmethod
    def status_from_disk(directory: str | Path) -> list[SpooledMessage]:
        """Read the spool's journal without taking its lock (a live spool may be
        appending: its newest records may be missed, never misread)."""
        replay = _EntryReplay()
        Journal(directory).replay_readonly(replay)
        return sorted(replay.entries.values(), key=lambda m: (m.spool_date, m.id))

    @staticmethod
    def count_from_disk(directory: str | Path) -> int:
        return sum(
            1
            for m in Spool.status_from_disk(directory)
            if m.status in (Status.SEND_NOW, Status.SEND_AT, Status.SENDING, Status.FROZEN)
        )


@dataclass
class _EntryReplay(Replay):
    """Builds the spool's entries record by record (no metadata dict outlives its
    record: the peak memory of a restart is the entries themselves)."""

    entries: dict[str, SpooledMessage] = field(default_factory=dict)
    # Messages this version cannot read (written by a newer one): not loaded, but their
    # bodies stay on disk (the spool holds these locations) for a version that can.
    unreadable: dict[str, Location] = field(default_factory=dict)

    def message(self, meta: dict[str, Any], location: Location) -> None:
        message_id = meta["id"]
        self.unreadable.pop(message_id, None)
        try:
            self.entries[message_id] = SpooledMessage.from_meta(meta, location)
        except (KeyError, ValueError, TypeError) as exc:
            self.entries.pop(message_id, None)
            self._unreadable(message_id, location, exc)

    def update(self, meta: dict[str, Any]) -> None:
        entry = self.entries.get(meta["id"])
        if entry is None:
            return
        try:
            entry.apply_state(meta)
        except (KeyError, ValueError, TypeError) as exc:
            del self.entries[entry.id]
            self._unreadable(entry.id, entry.location, exc)

    def forget(self, message_id: str) -> None:
        self.entries.pop(message_id, None)
        self.unreadable.pop(message_id, None)

    def knows(self, message_id: str) -> bool:
        return message_id in self.entries or message_id in self.unreadable

    def _unreadable(self, message_id: str, location: Location, exc: Exception) -> None:
        self.unreadable[message_id] = location
        description = f"unreadable entry {message_id}: {exc} (kept on disk, not delivered)"
        self.problems.append(JournalProblem(location.segment, location.offset, description))


_NOWHERE = Location(0, 0, 0)  # an entry's location until its record is written


def _domain(original: Envelope) -> str | None:
    """Where a notice about ``original`` goes: its sender's domain."""
    address = original.sender.address
    return None if address is None else address.domain.lower()


def _destination_key(entry: SpooledMessage) -> str:
    if entry.next_hops:
        return "hops:" + ",".join(entry.next_hops)
    if entry.route:
        return "route:" + entry.route.lower()
    domains = {r.rpartition("@")[2].lower() for r in entry.recipients}
    return "route:" + ",".join(sorted(domains))


async def _hops_only(message: SpooledMessage) -> Destination:
    """Without a router, a message must carry its next hops (the reference's model)."""
    if message.next_hops:
        return Hops(message.hops(), "hops:" + ",".join(message.next_hops))
    return Unroutable(Reply.of(554, "No route: the message has no next hops", "5.4.4"))


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("journal append failed", exc_info=task.exception())
