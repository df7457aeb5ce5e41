"""The spool: durable intake, scheduled delivery with retries, bounces, admin operations.

::

    async with Spool(SpoolConfig(directory="var/spool"), router=router) as spool:
        ids = await spool.add([Delivery(envelope, route="example.org")])   # durable now
        ...
        await spool.freeze(ids); await spool.send(ids)

:class:`Spool` puts together parts that each own one thing (``docs/architecture.md``):

* **intake** (:mod:`smtpx.spool.intake`): new messages, their ids and records, durable
  before :meth:`Spool.add` returns;
* the **store** (:mod:`smtpx.spool.journal_store`): messages and bodies on disk, the
  index, compaction;
* the **scheduler** (:mod:`smtpx.spool.scheduler`): what is due, per-destination limits,
  the workers;
* **delivery** (:mod:`smtpx.spool.delivery`): an attempt, and what each outcome does
  (retries, failures, quarantine of damaged bodies), and the destinations found
  unreachable (:mod:`smtpx.spool.unreachable`: their new mail is spooled deferred);
* **notices** (:mod:`smtpx.spool.notices`): bounces, delay warnings, success notices;
* **admin** (:mod:`smtpx.spool.admin`): freeze, send, remove, recover, purge, status;
* **retention** (:mod:`smtpx.spool.retention`): failed mail leaves after a while.

This module keeps the life of the whole (start, the pinger, :meth:`Spool.kill_and_flush`)
and the names users know.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

from smtpx.client import ClientConfig, ConnectionCache
from smtpx.client.cache import Opener
from smtpx.envelope import Batch, RetryInterval
from smtpx.io.tasks import cancel_and_wait
from smtpx.maillog import Flows, MailLog
from smtpx.server.events import EventBus
from smtpx.spool.admin import Admin
from smtpx.spool.context import SpoolContext
from smtpx.spool.delivery import DeliveryEngine
from smtpx.spool.ids import SpoolIds
from smtpx.spool.intake import Intake
from smtpx.spool.journal import BodyDamaged, Journal, JournalProblem
from smtpx.spool.journal_store import JournalStore
from smtpx.spool.message import (
    QuarantineReason,
    SpooledMessage,
    Status,
)
from smtpx.spool.notices import Notices
from smtpx.spool.retention import Retention
from smtpx.spool.scheduler import Scheduler, grace, wind_down
from smtpx.spool.store import Store
from smtpx.spool.types import (
    DEFAULT_RETRY_INTERVALS,
    Delivery,
    Destination,
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
    SpoolConfig,
    SpoolError,
    SpoolEvent,
    Unroutable,
    default_on_error,
    default_presend,
    hops_only,
)

__all__ = [
    "DEFAULT_RETRY_INTERVALS",
    "Delivery",
    "Destination",
    "EventKind",
    "Hops",
    "Local",
    "LocalAgent",
    "Outcome",
    "Presend",
    "QuarantineReason",
    "RouteLater",
    "Spool",
    "SpoolConfig",
    "SpoolError",
    "SpoolEvent",
    "Unroutable",
]

log = logging.getLogger("smtpx.spool")


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
        self.context = SpoolContext(self.config, clock)
        self.store: Store = _store(self.config, self.context)
        self.cache = ConnectionCache(self.config.cache, client_config, opener=opener)
        self.scheduler = Scheduler(self.config, self.store, self._work, clock)
        self.notices = Notices(self.context, self.store, self.add)
        self.delivery = DeliveryEngine(
            self.context,
            self.store,
            self.notices,
            self.cache,
            router=router or hops_only,
            presend=presend or default_presend,
            on_error=on_error or default_on_error,
            rng=rng or random.Random(),
        )
        self.store.on_damaged = self.delivery.quarantine_damaged
        self.admin = Admin(self.context, self.store)
        self.intake = Intake(self.context, self.store, SpoolIds(rng), self.delivery.rng)
        self.retention = Retention(self.context, self.store, self.admin)
        self._pinging: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None

    # -- what the parts share, under the names users know -----------------------------------

    @property
    def events(self) -> EventBus[SpoolEvent]:
        return self.context.events

    @property
    def stats(self) -> defaultdict[str, int]:
        return self.context.stats

    @property
    def mail(self) -> MailLog:
        return self.context.mail

    @property
    def clock(self) -> Callable[[], float]:
        return self.context.clock

    @property
    def messages(self) -> dict[str, SpooledMessage]:
        """Every message on the spool, by id (the store's index)."""
        return self.store.messages

    @property
    def journal_store(self) -> JournalStore:
        """The local journal store (:class:`SpoolError` with a shared database)."""
        if not isinstance(self.store, JournalStore):
            raise SpoolError("this spool keeps its messages in PostgreSQL, not a journal")
        return self.store

    @property
    def journal(self) -> Journal:
        return self.journal_store.journal

    @property
    def problems(self) -> list[JournalProblem]:
        """What the journal's replay found at start."""
        return self.store.problems

    # -- life ---------------------------------------------------------------------------

    async def __aenter__(self) -> Spool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill_and_flush()

    async def start(self) -> None:
        """Open the journal, reload every message, schedule what is due (F83)."""
        loaded = await self.store.open()  # (and notes what is due)
        await self.cache.__aenter__()
        self.scheduler.start()
        self._pinging = asyncio.get_running_loop().create_task(self._pinger())
        self._sweeping = asyncio.get_running_loop().create_task(self.retention.run())
        log.info("spool %s: %s", self.config.directory, loaded)

    async def kill_and_flush(self, timeout: float | None = None) -> bool:
        """Start no new deliveries, wait (up to ``timeout``) for the running ones, close
        the connection cache and the journal (F94). False when workers had to be cut off."""
        self.retention.stop()
        clean = await self.scheduler.stop(timeout)
        if self._pinging is not None:
            await cancel_and_wait([self._pinging])
        if self._sweeping is not None:
            await wind_down(self._sweeping, grace(timeout))
        self._pinging = self._sweeping = None
        await self.cache.close()
        await self.store.close()
        return clean

    async def _work(self, batch: list[SpooledMessage]) -> None:
        await self.delivery.run(batch)

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval)
            self.events.publish(SpoolEvent(self.context.clock(), EventKind.PING))

    # -- intake -------------------------------------------------------------------------

    def add(
        self, deliveries: Sequence[Delivery], *, frozen: bool = False, set_related: bool = False
    ) -> Coroutine[Any, Any, list[str]]:
        """Spool ``deliveries``; return their ids once they are durable (F84).

        With ``set_related``, each message records the ids of the others of this call
        (``related``; the metadata grows with the square of the call's size, so keep it
        for small calls, like one SMTP transaction split by domain).
        """
        # The intake's own coroutine: an ``async def`` here ran interpreted around the
        # compiled one, once a message (about 1% of a worker's CPU, docs/performance.md).
        return self.intake.add(deliveries, frozen=frozen, set_related=set_related)

    async def add_batches(
        self, batches: Sequence[Batch], *, frozen: bool = False, flows: Flows | None = None
    ) -> list[str]:
        """Spool every member of ``batches`` (async_smtp's ``Spool.add``, F4), each to its
        own ``next_hop_choices`` with its own ``retry_intervals`` (none: one attempt).
        Each member is stored with its own copy of the batch's body (see
        docs/async_smtp.md, F4); the members of one batch are ``related``."""
        ids: list[str] = []
        for batch in batches:
            deliveries = [
                Delivery(
                    routed.envelope,
                    next_hops=routed.next_hop_choices,
                    retry_intervals=routed.retry_intervals,
                    flows=flows or Flows(),
                )
                for routed in batch.to_envelopes()
            ]
            ids += await self.add(deliveries, frozen=frozen, set_related=len(deliveries) > 1)
        return ids

    async def quarantine(
        self, deliveries: Sequence[Delivery], reason: str | QuarantineReason
    ) -> list[str]:
        """Keep ``deliveries`` on disk, never sent unless recovered (F93). A text
        ``reason`` is the description of each message's :class:`QuarantineReason` (F13),
        with its envelope sender and From fields."""
        entries = await self.intake.write(deliveries, Status.QUARANTINED, quarantine=reason)
        for entry in entries:
            self.context.emit(EventKind.QUARANTINED, entry, entry.quarantine_reason or "")
        return [entry.id for entry in entries]

    async def quarantine_messages(self, ids: Iterable[str], description: str) -> None:
        """Put spooled messages in quarantine (F13; ``smtpx spool quarantine``)."""
        await self.admin.quarantine(ids, description)

    # -- admin (F89-F92) ----------------------------------------------------------------

    def get(self, message_id: str) -> SpooledMessage:
        return self.admin.get(message_id)

    def status(self) -> list[SpooledMessage]:
        """The messages this node holds, oldest first (all of them with the journal;
        :meth:`list_all` for a shared store)."""
        return self.admin.status()

    async def find(self, message_id: str) -> SpooledMessage:
        """The message ``message_id`` wherever it is (:class:`SpoolError` if none)."""
        return await self.admin.find(message_id)

    async def list_all(self) -> list[SpooledMessage]:
        """Every message on the spool, oldest first (the cluster's, in a shared store)."""
        return await self.admin.list_all()

    async def count_by_status(self) -> dict[str, int]:
        """How many messages the spool holds in each status (the cluster's)."""
        return await self.store.count_by_status()

    async def read_message(self, message_id: str) -> bytes:
        """The message as received; :class:`BodyDamaged` if its body rotted."""
        return await self.admin.read_message(message_id)

    async def inspect_message(self, message_id: str) -> tuple[bytes, BodyDamaged | None]:
        """The message as stored, damaged or not, and what is wrong with it."""
        return await self.admin.inspect_message(message_id)

    async def freeze(self, ids: Iterable[str]) -> None:
        await self.admin.freeze(ids)

    async def send(
        self,
        ids: Iterable[str] | None = None,
        *,
        frozen_only: bool = False,
        retry_intervals: Sequence[RetryInterval] = (),
    ) -> int:
        """Send now (F90); see :meth:`smtpx.spool.admin.Admin.send`."""
        return await self.admin.send(ids, frozen_only=frozen_only, retry_intervals=retry_intervals)

    async def remove(self, ids: Iterable[str]) -> None:
        await self.admin.remove(ids)

    async def recover(self, ids: Iterable[str], *, from_: str = "removed") -> None:
        await self.admin.recover(ids, from_=from_)

    async def purge(self, ids: Iterable[str]) -> None:
        await self.admin.purge(ids)

    async def compact(self) -> int:
        """Copy the oldest sealed segment's live messages forward (see the store)."""
        return await self.store.compact()

    def reconfigure(self, config: SpoolConfig) -> None:
        """Take the settings of ``config`` that can change while the spool runs: retry
        intervals (for mail spooled from now on: each message keeps its own), the
        delivery limits, bounces, delay warnings and the retention of failed mail. Where
        the mail is (directory, fsync, segment size, PostgreSQL), the connection cache's
        settings and the ping interval stay as they were started."""
        kept = dataclasses.replace(
            config,
            directory=self.config.directory,
            fsync=self.config.fsync,
            segment_size=self.config.segment_size,
            postgresql=self.config.postgresql,
            cache=self.config.cache,
            ping_interval=self.config.ping_interval,
        )
        self.config = self.context.config = self.scheduler.config = kept
        self.context.unreachable.clear_all()  # (routes may have changed: try them again)
        self.store.wakeup.set()  # (new limits: the scheduler looks again)

    # -- offline -------------------------------------------------------------------------

    @staticmethod
    def status_from_disk(directory: str | Path) -> list[SpooledMessage]:
        """Read the spool's journal without taking its lock (a live spool may be
        appending: its newest records may be missed, never misread)."""
        return JournalStore.status_from_disk(directory)

    @staticmethod
    def count_from_disk(directory: str | Path) -> int:
        return sum(
            1
            for m in Spool.status_from_disk(directory)
            if m.status in (Status.SEND_NOW, Status.SEND_AT, Status.SENDING, Status.FROZEN)
        )


def _store(config: SpoolConfig, context: SpoolContext) -> Store:
    """The local journal, or the shared PostgreSQL queue (``config.postgresql``)."""
    if config.postgresql is None:
        return JournalStore(config, context.stats)
    from smtpx.spool.pg.store import PgStore  # noqa: PLC0415 - asyncpg only when used

    store = PgStore(config, context.stats, context.clock)
    # Events cross the cluster: ours to the other nodes, theirs onto our bus.
    store.events = context.events
    context.share = store.share_event
    return store
