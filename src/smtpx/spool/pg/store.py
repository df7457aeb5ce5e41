"""The spool's store on a shared PostgreSQL queue: several smtpx nodes, one queue.

Every message lives in the database (:mod:`smtpx.spool.pg.queue`): any node accepts,
any node delivers. A node claims due messages for a lease, renews the leases while it
works on them, and settles or forgets each under its fencing token: a node that stalls
past its lease loses the message to another node, and its outcome is refused. A node
that dies leaves its messages to the others once the leases lapse (at-least-once: what
it had in flight may go out twice).

``messages`` holds what this node has claimed; operators see the whole queue through
:meth:`PgStore.all` and :meth:`PgStore.find`. Bodies are stored as received (not
dot-stuffed) in chunks and read a few chunks at a time; each read checks the length and
CRC32, at the end: a damaged body raises before the client sends its final dot.

What is per node: the scheduler's per-destination limits, the connection cache, and the
claiming: a node claims at most what its workers can take (``max_deliveries`` batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg

from smtpx.content import Spill, SpilledMessage, header_block
from smtpx.io.tasks import cancel_and_wait
from smtpx.server.events import EventBus
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.pg.notify import DueListener, EventListener, NodeEvent, event_payload
from smtpx.spool.pg.queue import BodyDamaged as PgBodyDamaged
from smtpx.spool.pg.queue import PgQueue, QueuedMessage, QueueError, connect_pool
from smtpx.spool.pg.schema import EVENTS_CHANNEL, migrate
from smtpx.spool.records import BodyDamaged, Location, StoreWriteError
from smtpx.spool.replay import JournalProblem
from smtpx.spool.store import HEAD_LIMIT
from smtpx.spool.types import EventKind, PostgresSettings, SpoolConfig, SpoolEvent

__all__ = ["PgStore"]

SPILL_AT = 1 << 20  # octets of a body kept in memory for a local delivery, then a file

CLOSE_TIMEOUT = 10.0  # seconds the writes at close, then the pool's connections, may take

log = logging.getLogger("smtpx.spool")

# What a failing database raises through asyncpg.
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, QueueError, TimeoutError)
RETRY_AFTER = 1.0  # seconds writes are refused at once after a failure
GROUP = 200  # messages added in one statement at most
# A batch of events in one statement (pg_notify writes nothing: no WAL flush).
_NOTIFY_EVENTS = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"


@dataclass(slots=True)
class _Op:
    """One state write of this node: settle or forget (under the token), or an
    operator's change."""

    kind: str  # "settle" | "forget" | "change"
    message_id: str
    token: int | None
    state: dict[str, Any] | None
    future: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PgStore:
    def __init__(
        self, config: SpoolConfig, stats: MutableMapping[str, int], clock: Callable[[], float]
    ) -> None:
        assert config.postgresql is not None
        self.config = config
        self.settings: PostgresSettings = config.postgresql
        self.stats = stats
        self.clock = clock
        self.messages: dict[str, SpooledMessage] = {}  # claimed by this node
        self.problems: list[JournalProblem] = []
        self.on_damaged: Callable[[SpooledMessage, BodyDamaged], Awaitable[None]] | None = None
        self.wakeup = asyncio.Event()
        self._tokens: dict[str, int] = {}  # fencing token of each message held
        self._ops: list[_Op] = []  # state writes waiting for the next group
        self._writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: Any = None
        self._queue: PgQueue | None = None
        self._failing_until = float("-inf")
        self.ready = False  # connected and migrated
        # Where the other nodes' events go (the spool's bus), and this node's on their way.
        self.events: EventBus[SpoolEvent] | None = None
        self._outgoing: list[SpoolEvent] = []
        self._sending: asyncio.Task[None] | None = None
        # Messages waiting to be added together (group commit), and the task adding them.
        self._adding: list[tuple[dict[str, Any], bytes, asyncio.Future[Any]]] = []
        self._adder: asyncio.Task[None] | None = None

    @property
    def queue(self) -> PgQueue:
        if self._queue is None:
            raise StoreWriteError("the PostgreSQL spool is not open")
        return self._queue

    # -- life ---------------------------------------------------------------------------

    async def open(self) -> str:
        """Connect and migrate the schema, then listen for wake-up hints and renew
        leases. A database out of reach is tried again and again in the background (with
        a growing pause, each failure logged); meanwhile the store is not ``ready``: the
        server answers 421, nothing is claimed, writes fail."""
        settings = self.settings
        try:
            await self._connect()
        except DB_ERRORS as exc:
            log.error("spool database %s: cannot connect: %s; trying again", settings.node, exc)
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._connect_until_ready())]
            return f"PostgreSQL queue, node {settings.node}: not reachable yet"
        counts = await self.queue.count_by_status()
        waiting = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        return f"PostgreSQL queue, node {settings.node}: {waiting or 'empty'}"

    async def _connect(self) -> None:
        settings = self.settings
        pool = await connect_pool(settings.dsn, size=settings.pool_size, timeout=10)
        try:
            applied = await migrate(pool)
        except asyncio.CancelledError:
            pool.terminate()  # (a close would wait for a cancelled query's connection)
            raise
        except BaseException:
            await _close_pool(pool)
            raise
        if applied:
            log.info("spool database: schema migrated to version %d", applied[-1])
        self._pool = pool
        self._queue = PgQueue(pool, settings.node, clock=self.clock)
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._listen()),
            loop.create_task(self._renew()),
            loop.create_task(self._hear_events()),
        ]
        self.ready = True
        self.wakeup.set()

    async def _connect_until_ready(self) -> None:
        pause = 1.0
        while not self.ready:
            await asyncio.sleep(pause)
            try:
                await self._connect()
            except DB_ERRORS as exc:
                pause = min(pause * 2, 30.0)
                log.error("spool database: still unreachable (%s); next try in %.0f s", exc, pause)
            else:
                log.warning("spool database: connected (node %s)", self.settings.node)

    async def close(self) -> None:
        """End the background tasks, finish the writes under way and give back what is
        held, within :data:`CLOSE_TIMEOUT` (a database that stopped answering must not
        hold the shutdown: what is not given back returns when its lease lapses, a
        state not written is tried again, delivery being at least once), then close
        the pool (bounded too)."""
        await cancel_and_wait(self._tasks)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._finish()
        except TimeoutError:
            log.error(
                "spool database: writes still under way %gs after closing began: given up "
                "(%d messages held by node %s go to any node once their leases lapse)",
                CLOSE_TIMEOUT,
                len(self._tokens),
                self.settings.node,
            )
        if self._pool is not None:
            await _close_pool(self._pool)

    async def _finish(self) -> None:
        for task in (self._sending, self._writer):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        if self._queue is not None:
            # What this node claimed and did not settle waits for the next claim.
            for message_id, token in list(self._tokens.items()):
                with contextlib.suppress(*DB_ERRORS):
                    await self._queue.release((message_id, token))
                self._tokens.pop(message_id, None)
            await self._queue.close()

    async def _listen(self) -> None:
        """Wake the scheduler when another node says messages are due (best effort: the
        scheduler polls at the next due time anyway)."""

        async def wake(listener: DueListener) -> None:
            while True:
                if await listener.wait(self.settings.lease / 4):
                    self.wakeup.set()

        await _keep_listening("wake-ups", lambda: DueListener.open(self.settings.dsn), wake)

    # -- events across the cluster -------------------------------------------------------

    def share_event(self, event: SpoolEvent) -> None:
        """Tell the other nodes (batched: one statement for what piled up meanwhile)."""
        if not self.ready:
            return
        self._outgoing.append(event)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.get_running_loop().create_task(self._send_events())

    async def _send_events(self) -> None:
        node = self.settings.node
        while self._outgoing:
            batch, self._outgoing = self._outgoing[:500], self._outgoing[500:]
            payloads = [
                event_payload(NodeEvent(node, e.kind.value, e.id, e.detail, e.time, e.reason))
                for e in batch
            ]
            try:
                await self._pool.execute(_NOTIFY_EVENTS, EVENTS_CHANNEL, payloads)
            except DB_ERRORS as exc:
                log.warning("spool database: %d events not shared: %s", len(batch), exc)

    async def _hear_events(self) -> None:
        """Put the other nodes' events on this node's bus (``node`` says whose)."""

        async def hear(listener: EventListener) -> None:
            while True:
                heard = await listener.next(60)
                if heard is not None and heard.node != self.settings.node:
                    self._republish(heard)

        await _keep_listening("events", lambda: EventListener.open(self.settings.dsn), hear)

    def _republish(self, heard: NodeEvent) -> None:
        if self.events is None:
            return
        try:
            kind = EventKind(heard.kind)
        except ValueError:
            return  # a kind a newer smtpx knows
        self.events.publish(
            SpoolEvent(
                heard.time, kind, heard.id, heard.detail, node=heard.node, reason=heard.reason
            )
        )

    async def _renew(self) -> None:
        """Keep the leases of what this node holds; drop what another node took over."""
        lease = self.settings.lease
        while True:
            await asyncio.sleep(lease / 3)
            if not self._tokens:
                continue
            try:
                lost = await self.queue.renew(list(self._tokens.items()), lease)
            except DB_ERRORS as exc:
                log.error("spool database: leases not renewed: %s", exc)
                continue
            for message_id in lost:
                log.warning("spool: lost the lease of %s to another node", message_id)
                self._drop(message_id)

    def refusing(self) -> bool:
        return not self.ready or asyncio.get_running_loop().time() < self._failing_until

    def _failed(self, what: str, exc: BaseException) -> StoreWriteError:
        self._failing_until = asyncio.get_running_loop().time() + RETRY_AFTER
        self.stats["store_errors"] += 1
        log.error("spool database: %s failed: %s", what, exc)
        return StoreWriteError(f"the spool database could not {what}: {exc}")

    # -- what is due --------------------------------------------------------------------

    async def claim_due(self, now: float) -> list[SpooledMessage]:
        """Claim what this node's workers can take (the cluster shares the rest)."""
        room = self.config.max_deliveries * self.config.batch_size - len(self._tokens)
        if room <= 0 or not self.ready:
            return []
        try:
            claims = await self.queue.claim(room, self.settings.lease)
        except DB_ERRORS as exc:
            log.error("spool database: claiming failed: %s", exc)
            return []
        claimed = []
        for claim in claims:
            location = Location(0, 0, claim.body.length, claim.body.crc32)
            entry = SpooledMessage.from_meta(claim.meta, location)
            entry.status = Status.SENDING
            self.messages[entry.id] = entry
            self._tokens[entry.id] = claim.token
            claimed.append(entry)
        return claimed

    async def next_due(self) -> float | None:
        if not self.ready:
            return None  # (woken once connected)
        try:
            return await self.queue.next_due()
        except DB_ERRORS as exc:
            log.error("spool database: next due time unknown: %s", exc)
            return self.clock() + 5.0

    # -- writing ------------------------------------------------------------------------

    async def write(
        self, entries: list[SpooledMessage], contents: list[bytes | SpilledMessage]
    ) -> None:
        """Add the messages. Those in memory join the others handed in at the same
        moment in one statement and one commit (group commit, as the journal's); a
        spilled one is streamed in its own transaction."""
        if self.refusing():
            raise StoreWriteError("the spool database is out of reach, or failed a moment ago")

        async def one(entry: SpooledMessage, content: bytes | SpilledMessage) -> None:
            if isinstance(content, bytes):
                stored = await self._add_grouped(entry.to_meta(), content)
            else:
                stored = await self.queue.add(entry.to_meta(), content.chunks())
            entry.location = Location(0, 0, stored.length, stored.crc32)

        try:
            await asyncio.gather(*(one(e, c) for e, c in zip(entries, contents, strict=True)))
        except DB_ERRORS as exc:
            raise self._failed("store a message", exc) from exc
        self.wakeup.set()

    async def _add_grouped(self, meta: dict[str, Any], body: bytes) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._adding.append((meta, body, future))
        if self._adder is None or self._adder.done():
            self._adder = asyncio.get_running_loop().create_task(self._add_waiting())
        return await future

    async def _add_waiting(self) -> None:
        """Add what waits, in groups of what piled up while the last group committed."""
        while self._adding:
            group, self._adding = self._adding[:GROUP], self._adding[GROUP:]
            try:
                stored = await self.queue.add_many([(meta, body) for meta, body, _ in group])
            except BaseException as exc:
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, future), body in zip(group, stored, strict=True):
                if not future.done():
                    future.set_result(body)

    def update(self, entry: SpooledMessage) -> None:
        """Record ``entry``'s new state: queued now (in order, per message)."""
        self._submit(self._state_op(entry))

    async def update_durably(self, entry: SpooledMessage) -> None:
        future = self._submit(self._state_op(entry))
        await future

    def _state_op(self, entry: SpooledMessage) -> _Op:
        """The write of ``entry``'s state: a settle under the token if this node holds
        it (the lease ends), an operator's change otherwise."""
        token = self._drop(entry.id)
        kind = "change" if token is None else "settle"
        return _Op(kind, entry.id, token, entry.state_meta())

    def forget(self, entry: SpooledMessage) -> None:
        token = self._drop(entry.id)
        if token is not None:
            self._submit(_Op("forget", entry.id, token, None))

    async def purge(self, entry: SpooledMessage) -> bool:
        try:
            return await self.queue.purge(entry.id)
        except DB_ERRORS as exc:
            raise self._failed("purge a message", exc) from exc

    def _drop(self, message_id: str) -> int | None:
        """No longer held here: its token, if it was."""
        self.messages.pop(message_id, None)
        return self._tokens.pop(message_id, None)

    # The state writes of this node go out in groups, one statement per kind for what
    # piled up while the last group was written (a group commit, as for the adds). Per
    # message they keep their order: a message's second write waits for the next group.

    def _submit(self, op: _Op) -> asyncio.Future[bool]:
        self._ops.append(op)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_ops())
        return op.future

    async def _write_ops(self) -> None:
        while self._ops:
            group: list[_Op] = []
            later: list[_Op] = []
            seen: set[str] = set()
            for op in self._ops:
                if op.message_id in seen or len(group) >= GROUP:
                    later.append(op)
                else:
                    group.append(op)
                    seen.add(op.message_id)
            self._ops = later
            await self._write_group(group)

    async def _write_group(self, group: list[_Op]) -> None:
        queue = self.queue
        settles = [op for op in group if op.kind == "settle"]
        forgets = [op for op in group if op.kind == "forget"]
        try:
            done = await queue.settle_many(
                [((o.message_id, o.token or 0), o.state or {}) for o in settles]
            )
            done |= await queue.forget_many([(o.message_id, o.token or 0) for o in forgets])
            for op in group:
                if op.kind == "change" and await queue.change(op.message_id, op.state or {}):
                    done.add(op.message_id)
        except DB_ERRORS as exc:
            failure = self._failed(f"record the state of {len(group)} messages", exc)
            for op in group:
                if not op.future.done():
                    op.future.set_exception(failure)
                    op.future.exception()  # (retrieved: logged above)
            return
        for op in group:
            if op.message_id not in done:
                log.warning(
                    "spool: %s changed meanwhile (another node or an operator)", op.message_id
                )
            if not op.future.done():
                op.future.set_result(op.message_id in done)
        if any(op.kind == "change" and op.message_id in done for op in group):
            # An operator's change may make a message due now. The queue's NOTIFY hint
            # reaches this node too, but not while its LISTEN connection is (re)opening:
            # this node's own scheduler must not depend on it.
            self.wakeup.set()

    # -- bodies -------------------------------------------------------------------------

    async def check(self, entries: list[SpooledMessage]) -> list[BodyDamaged | None]:
        """Nothing up front: every read checks the body as it goes (see :meth:`body`)."""
        return [None] * len(entries)

    async def read(self, entry: SpooledMessage) -> bytes:
        data, damage = await self.inspect(entry)
        if damage is not None:
            raise damage
        return data

    async def inspect(self, entry: SpooledMessage) -> tuple[bytes, BodyDamaged | None]:
        chunks: list[bytes] = []
        try:
            async for chunk in self.queue.read_body(entry.id):
                chunks.append(chunk)
        except PgBodyDamaged as exc:
            return b"".join(chunks), BodyDamaged(entry.id, str(exc))
        return b"".join(chunks), None

    def body(self, entry: SpooledMessage) -> AsyncIterator[bytes]:
        return self._chunks(entry.id)

    async def damage(self, entry: SpooledMessage) -> BodyDamaged | None:
        try:
            async for _ in self._chunks(entry.id):
                pass
        except BodyDamaged as damage:
            return damage
        return None

    async def head(self, entry: SpooledMessage) -> bytes:
        """The first chunks, up to the end of the header section (or ``HEAD_LIMIT``);
        the rest is not fetched, nor checked."""
        start = b""
        with contextlib.suppress(PgBodyDamaged):  # damaged or not: what was read has them
            async with contextlib.aclosing(self.queue.read_body(entry.id)) as chunks:
                async for chunk in chunks:
                    start += chunk
                    if b"\r\n\r\n" in start or len(start) >= HEAD_LIMIT:
                        break
        return header_block(start[:HEAD_LIMIT])

    @contextlib.asynccontextmanager
    async def content(self, entry: SpooledMessage) -> AsyncIterator[bytes | SpilledMessage]:
        """The message fetched from the database, checked: in memory up to ``SPILL_AT``
        octets, past that in an unnamed file (closed after the block), as the server
        keeps what it receives: in the spool's directory, like the server's (a /tmp on
        tmpfs would hold it in memory after all)."""
        directory = Path(self.config.directory)
        spill = Spill(SPILL_AT, str(directory) if directory.is_dir() else None)
        try:
            async for chunk in self._chunks(entry.id):
                spill.add(chunk)
            yield spill.result()
        finally:
            spill.close()

    async def _chunks(self, message_id: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.queue.read_body(message_id):
                yield chunk
        except PgBodyDamaged as exc:
            raise BodyDamaged(message_id, str(exc)) from None

    @contextlib.contextmanager
    def pinned(self, entries: list[SpooledMessage]) -> Iterator[None]:
        yield  # (bodies do not move)

    def collect_segments(self) -> None:
        """(The database reclaims space itself: a delivered message's rows are deleted.)"""

    async def compact(self) -> int:
        return 0

    # -- the whole queue ----------------------------------------------------------------

    async def find(self, message_id: str) -> SpooledMessage | None:
        held = self.messages.get(message_id)
        if held is not None:
            return held
        row = await self.queue.get(message_id)
        return None if row is None else _entry(row)

    async def count_by_status(self) -> dict[str, int]:
        return await self.queue.count_by_status()

    async def all(self) -> list[SpooledMessage]:
        held = self.messages
        return [held.get(row.id) or _entry(row) for row in await self.queue.all()]


def _entry(row: QueuedMessage) -> SpooledMessage:
    """A queued message as the spool sees it (its row's status is the authority)."""
    entry = SpooledMessage.from_meta(row.meta, Location(0, 0, row.body.length, row.body.crc32))
    entry.status = Status(row.status)
    if row.status in ("send_now", "send_at"):
        entry.next_attempt = row.next_attempt or None
    return entry


class _Closing(Protocol):
    async def close(self) -> None: ...


L = TypeVar("L", bound=_Closing)


async def _keep_listening(
    what: str, opening: Callable[[], Awaitable[L]], use: Callable[[L], Awaitable[None]]
) -> None:
    """Keep a LISTEN connection for ``what`` and hand it to ``use``: opened again (every
    5 s while the database is out of reach) whenever it is lost."""
    while True:
        try:
            listener = await opening()
        except DB_ERRORS as exc:
            log.warning("spool database: cannot LISTEN for %s (%s); trying again in 5 s", what, exc)
            await asyncio.sleep(5)
            continue
        try:
            await use(listener)
        except DB_ERRORS as exc:
            log.warning("spool database: LISTEN connection for %s lost: %s", what, exc)
        finally:
            with contextlib.suppress(*DB_ERRORS):
                await listener.close()


async def _close_pool(pool: Any) -> None:
    """Close the pool, waiting at most :data:`CLOSE_TIMEOUT` for its connections to come
    back. One can stay out for good: a query cancelled when its task was (the retention
    sweep at shutdown, say) holds its connection until PostgreSQL confirms the cancel,
    which asyncpg asks for over a new connection; asyncpg's own close would then wait
    forever (it only warns after 60 s). Past the bound the pool is terminated (its
    sockets closed): everything this node wrote was committed before."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await pool.close()
    except TimeoutError:  # (close() was cancelled: asyncpg terminated the pool)
        log.warning(
            "spool database: a connection was still in use %gs after closing began; "
            "the pool was terminated",
            CLOSE_TIMEOUT,
        )
