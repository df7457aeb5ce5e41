"""The PostgreSQL spool's queue, low level: rows, leases, fenced outcomes, chunked bodies.

No Spool here yet: this is what a Store built on PostgreSQL will call. Several nodes
share one database; any node claims any due message for a lease (``lease`` seconds,
renewed while it works), and settles or forgets it under the lease's fencing token: once
the lease lapsed and another node claimed the message, the first node's outcome is
refused (``False``), so a slow node never overwrites the new owner's. Delivery is at
least once: a node that delivered but died before ``forget`` leaves the message to be
sent again when its lease lapses (as with Stalwart's queue locks).

Times are seconds since the epoch. "Now" is the database's clock, one clock for every
node, unless the queue was given a ``clock`` (tests; a spool on a fake clock).

Every operation is one statement, one round trip (bench/pg_driver.py measured them), and
nothing holds a transaction or a connection while a message is being delivered: claims
commit at once, bodies are read a few chunks per query.

The schema is in :mod:`smtpx.spool.pg.schema`; run :func:`~smtpx.spool.pg.schema.migrate`
first.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from smtpx import compactjson
from smtpx.errors import SMTPXError
from smtpx.spool.pg.schema import DUE_CHANNEL

if TYPE_CHECKING:
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]

__all__ = [
    "CHUNK_SIZE",
    "Body",
    "BodyDamaged",
    "Claim",
    "MessageExists",
    "NoSuchMessage",
    "PgQueue",
    "QueueError",
    "QueuedMessage",
    "connect_pool",
]

CHUNK_SIZE = 256 * 1024  # octets per stored chunk
READ_CHUNKS = 4  # chunks fetched per query when reading a body: ~1 MiB in memory
WAITING = ("send_now", "send_at")
_NOW = "coalesce({}::float8, extract(epoch FROM now())::float8)"
log = logging.getLogger(__name__)


class QueueError(SMTPXError):
    """The PostgreSQL queue could not do what was asked."""


class MessageExists(QueueError):
    def __init__(self, message_id: str) -> None:
        super().__init__(f"message {message_id} is already queued")
        self.message_id = message_id


class NoSuchMessage(QueueError):
    def __init__(self, message_id: str) -> None:
        super().__init__(f"message {message_id} is not queued")
        self.message_id = message_id


class BodyDamaged(QueueError):
    """A stored body no longer matches its length and CRC32 (or is no longer all there)."""

    def __init__(self, message_id: str, problem: str) -> None:
        super().__init__(f"body of message {message_id}: {problem}")
        self.message_id = message_id
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Body:
    length: int
    crc32: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A message this node now holds: deliver it, then settle or forget it with ``token``."""

    id: str
    token: int
    meta: dict[str, Any]
    body: Body
    lease_until: float


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A row of the queue, as an administrator sees it."""

    id: str
    parent_id: str
    spool_date: float
    status: str
    next_attempt: float
    lease_owner: str | None
    lease_until: float | None
    lease_token: int
    message_id: str | None
    meta: dict[str, Any]
    body: Body


async def _no_reset(conn: Connection) -> None:
    """Skip asyncpg's reset query on release (a round trip for every use of the pool):
    the queue's connections never change session state (no SET, LISTEN or session locks;
    an open transaction is still rolled back by asyncpg itself)."""


async def _init(conn: Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_dumps, decoder=compactjson.loads, schema="pg_catalog", format="text"
    )


def _dumps(value: object) -> str:
    data = compactjson.dumps(value)
    # An escape may be a NUL's or a lone surrogate's, which jsonb refuses (rare: a remote
    # reply's text): then once more, cleaned. The usual value is walked by orjson only.
    if b"\\u" in data:
        data = compactjson.dumps(_storable(value))
    return data.decode()


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: object) -> object:
    """``value`` with U+FFFD for what jsonb cannot hold: NUL, and the lone surrogates
    that stand for undecodable octets (``surrogateescape``). Only a remote server's
    reply text (kept in ``failed`` and ``attempts``) can carry them: a diagnostic, where
    a replacement character beats a message that can no longer be settled."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


async def connect_pool(dsn: str, *, size: int = 8, **kwargs: Any) -> Pool:
    """A pool as the queue wants it (jsonb as dicts, no reset query). Size it to a small
    multiple of the cores, not to the deliveries: no connection is held while sending."""
    return await asyncpg.create_pool(
        dsn, min_size=min(2, size), max_size=size, init=_init, reset=_no_reset, **kwargs
    )


_COLUMNS = """id, parent_id, spool_date, status, next_attempt, lease_owner, lease_until,
    lease_token, message_id, meta, body_length, body_crc32"""
_INSERT = """INSERT INTO messages (id, parent_id, spool_date, status, next_attempt,
    message_id, meta, body_length, body_crc32) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""
_ADD = f"""WITH m AS ({_INSERT})
INSERT INTO message_chunks (message_id, seq, data)
SELECT $1, c.n - 1, c.data FROM unnest($10::bytea[]) WITH ORDINALITY AS c(data, n)"""
_ADD_MANY = """WITH m AS (
    INSERT INTO messages (id, parent_id, spool_date, status, next_attempt, message_id, meta,
        body_length, body_crc32)
    SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::float8[],
        $6::text[], $7::jsonb[], $8::bigint[], $9::bigint[])
)
INSERT INTO message_chunks (message_id, seq, data)
SELECT * FROM unnest($10::text[], $11::int[], $12::bytea[])"""
_CHUNKS = """INSERT INTO message_chunks (message_id, seq, data)
SELECT $1, $2 + c.n - 1, c.data FROM unnest($3::bytea[]) WITH ORDINALITY AS c(data, n)"""
# Lapsed leases first (their messages waited longest), then due messages in due order;
# SKIP LOCKED: concurrent claimers each get other rows, never wait for each other.
_CLAIM = f"""WITH stale AS (
    SELECT id FROM messages WHERE status = 'sending' AND lease_until < {_NOW.format("$4")}
    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id FROM messages
    WHERE status IN ('send_now', 'send_at') AND next_attempt <= {_NOW.format("$4")}
    ORDER BY next_attempt, id LIMIT $2 - (SELECT count(*) FROM stale) FOR UPDATE SKIP LOCKED
)
UPDATE messages m SET status = 'sending', lease_owner = $1,
    lease_until = {_NOW.format("$4")} + $3, lease_token = m.lease_token + 1
WHERE m.id IN (SELECT id FROM stale UNION ALL SELECT id FROM due)
RETURNING m.id, m.lease_token, m.meta, m.body_length, m.body_crc32, m.lease_until"""
_HELD = "id = $1 AND lease_token = $2 AND status = 'sending'"
_SETTLE = f"""UPDATE messages SET status = $3, next_attempt = $4, meta = meta || $5::jsonb,
    lease_owner = NULL, lease_until = NULL WHERE {_HELD}"""
_RELEASE = f"""UPDATE messages SET status = meta->>'status', lease_owner = NULL,
    lease_until = NULL WHERE {_HELD} RETURNING next_attempt"""
_FORGET = f"DELETE FROM messages WHERE {_HELD}"
_SETTLE_MANY = """UPDATE messages m SET status = u.status, next_attempt = u.at,
    meta = m.meta || u.change, lease_owner = NULL, lease_until = NULL
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::float8[], $5::jsonb[])
    AS u(id, token, status, at, change)
WHERE m.id = u.id AND m.lease_token = u.token AND m.status = 'sending' RETURNING m.id"""
_FORGET_MANY = """DELETE FROM messages m USING unnest($1::text[], $2::bigint[]) AS u(id, token)
WHERE m.id = u.id AND m.lease_token = u.token AND m.status = 'sending' RETURNING m.id"""
# An operator's change: the token moves on, so a node holding the message is fenced out.
_CHANGE = """UPDATE messages SET status = $2, next_attempt = $3, meta = meta || $4::jsonb,
    lease_owner = NULL, lease_until = NULL, lease_token = lease_token + 1 WHERE id = $1"""
_PURGE = "DELETE FROM messages WHERE id = $1 AND status IN ('removed', 'quarantined')"
_RENEW = f"""UPDATE messages m SET lease_until = {_NOW.format("$3")} + $4
FROM unnest($1::text[], $2::bigint[]) AS l(id, token)
WHERE m.id = l.id AND m.lease_token = l.token AND m.status = 'sending' RETURNING m.id"""
_BODY_START = """SELECT m.body_length, m.body_crc32, c.seq, c.data FROM messages m
LEFT JOIN LATERAL (SELECT seq, data FROM message_chunks WHERE message_id = m.id
                   ORDER BY seq LIMIT $2) c ON true
WHERE m.id = $1 ORDER BY c.seq"""
_BODY_MORE = """SELECT seq, data FROM message_chunks WHERE message_id = $1 AND seq >= $2
ORDER BY seq LIMIT $3"""
_NEXT_DUE = """SELECT least(
    (SELECT min(next_attempt) FROM messages WHERE status IN ('send_now', 'send_at')),
    (SELECT min(lease_until) FROM messages WHERE status = 'sending'))"""


class PgQueue:
    """The queue in one database, as seen by the node ``node``."""

    def __init__(
        self,
        pool: Pool,
        node: str,
        *,
        clock: Callable[[], float] | None = None,
        chunk_size: int = CHUNK_SIZE,
        read_chunks: int = READ_CHUNKS,
    ) -> None:
        if not node:
            raise ValueError("a node needs a name")
        self.pool = pool
        self.node = node
        self.clock = clock
        self.chunk_size = chunk_size
        self.read_chunks = read_chunks
        self._hint_wanted = False
        self._hinting: asyncio.Task[None] | None = None

    def _now(self) -> float | None:
        """Now for the database: None to use its own clock."""
        return None if self.clock is None else self.clock()

    def _local_now(self) -> float:
        """Now here, to judge whether a message is due at once (to wake other nodes)."""
        return time.time() if self.clock is None else self.clock()

    async def close(self) -> None:
        """Wait for the wake-up hint being sent, if any (the pool is the caller's)."""
        if self._hinting is not None:
            await self._hinting

    # -- adding ---------------------------------------------------------------------------

    async def add(
        self, meta: Mapping[str, Any], body: bytes | Iterable[bytes] | AsyncIterable[bytes]
    ) -> Body:
        """Queue a message: ``meta`` as ``SpooledMessage.to_meta()`` gives it (its id,
        parent, date, status, at and msgid fill the columns) and its body, from bytes or
        from chunks of any size, in one transaction: once this returns, it is durable."""
        row = _row_of(meta)
        try:
            if isinstance(body, bytes | bytearray | memoryview):
                stored = await self._add_whole(row, memoryview(body))
            else:
                stored = await self._add_streamed(row, body)
        except asyncpg.UniqueViolationError:
            raise MessageExists(row[0]) from None
        if row[3] in WAITING and row[4] <= self._local_now():
            self._hint()
        return stored

    async def add_many(self, items: list[tuple[Mapping[str, Any], bytes]]) -> list[Body]:
        """Queue several messages whose bodies are in memory, in one statement and one
        commit (what concurrent sessions hand in at the same moment: the queue's group
        commit). All or none: a failure (an id already queued, say) adds none of them."""
        if not items:
            return []
        size = self.chunk_size
        columns: list[list[Any]] = [[] for _ in range(9)]
        chunk_ids: list[str] = []
        chunk_seqs: list[int] = []
        chunk_data: list[bytes] = []
        stored = []
        for meta, body in items:
            row = _row_of(meta)
            view = memoryview(body)
            result = Body(len(body), zlib.crc32(body))
            for column, value in zip(columns, (*row, result.length, result.crc32), strict=True):
                column.append(value)
            for seq, at in enumerate(range(0, len(view), size)):
                chunk_ids.append(row[0])
                chunk_seqs.append(seq)
                chunk_data.append(bytes(view[at : at + size]))
            stored.append(result)
        try:
            await self.pool.execute(_ADD_MANY, *columns, chunk_ids, chunk_seqs, chunk_data)
        except asyncpg.UniqueViolationError:
            raise MessageExists(", ".join(columns[0])) from None
        now = self._local_now()
        if any(s in WAITING and at <= now for s, at in zip(columns[3], columns[4], strict=True)):
            self._hint()
        return stored

    async def _add_whole(self, row: tuple[Any, ...], body: memoryview) -> Body:
        size = self.chunk_size
        chunks = [body[at : at + size] for at in range(0, len(body), size)]
        stored = Body(len(body), zlib.crc32(body))
        await self.pool.execute(_ADD, *row, stored.length, stored.crc32, chunks)
        return stored

    async def _add_streamed(
        self, row: tuple[Any, ...], body: Iterable[bytes] | AsyncIterable[bytes]
    ) -> Body:
        """Chunks first, the row last (its length and CRC known only then; the foreign
        key is checked at commit), a few chunks per statement."""
        length, crc, seq = 0, 0, 0
        async with self.pool.acquire() as conn, conn.transaction():
            async for batch in _rechunk(body, self.chunk_size, self.read_chunks):
                for chunk in batch:
                    length += len(chunk)
                    crc = zlib.crc32(chunk, crc)
                await conn.execute(_CHUNKS, row[0], seq, batch)
                seq += len(batch)
            await conn.execute(_INSERT, *row, length, crc)
        return Body(length, crc)

    # -- claiming and settling ------------------------------------------------------------

    async def claim(self, limit: int, lease: float) -> list[Claim]:
        """Up to ``limit`` due messages (and messages whose lease lapsed), now held by
        this node for ``lease`` seconds; fewer, or none, when others hold the rest. The
        order is roughly due order."""
        if limit < 1 or lease <= 0:
            raise ValueError(f"claim needs a limit of 1 or more and a lease: {limit}, {lease}")
        rows = await self.pool.fetch(_CLAIM, self.node, limit, lease, self._now())
        return [
            Claim(r["id"], r["lease_token"], r["meta"], _body(r), r["lease_until"]) for r in rows
        ]

    async def settle(self, claim: Claim | tuple[str, int], state: Mapping[str, Any]) -> bool:
        """End the attempt: the message takes ``state`` (``state_meta()``: its status,
        next attempt and the rest, merged into its metadata) and the lease ends. False,
        and nothing written, when this node no longer holds the message."""
        message_id, token = _held(claim)
        status, next_attempt = _status_of(state)
        # "v" of state_meta() is an UPDATE record's version: the message keeps its own.
        change = {key: value for key, value in state.items() if key not in ("v", "id")}
        done = await self.pool.execute(_SETTLE, message_id, token, status, next_attempt, change)
        if done != "UPDATE 1":
            return False
        if status in WAITING and next_attempt <= self._local_now():
            self._hint()
        return True

    async def settle_many(
        self, settles: list[tuple[Claim | tuple[str, int], Mapping[str, Any]]]
    ) -> set[str]:
        """:meth:`settle` for several messages in one statement (one commit): the ids
        whose outcome was written (the others: no longer held by this node)."""
        if not settles:
            return set()
        ids, tokens, statuses, times, changes = [], [], [], [], []
        for claim, state in settles:
            message_id, token = _held(claim)
            status, next_attempt = _status_of(state)
            ids.append(message_id)
            tokens.append(token)
            statuses.append(status)
            times.append(next_attempt)
            changes.append({k: v for k, v in state.items() if k not in ("v", "id")})
        rows = await self.pool.fetch(_SETTLE_MANY, ids, tokens, statuses, times, changes)
        done = {row["id"] for row in rows}
        now = self._local_now()
        if any(
            i in done and s in WAITING and t <= now
            for i, s, t in zip(ids, statuses, times, strict=True)
        ):
            self._hint()
        return done

    async def forget_many(self, claims: list[Claim | tuple[str, int]]) -> set[str]:
        """:meth:`forget` for several messages in one statement: the ids deleted."""
        if not claims:
            return set()
        held = [_held(claim) for claim in claims]
        rows = await self.pool.fetch(_FORGET_MANY, [i for i, _ in held], [t for _, t in held])
        return {row["id"] for row in rows}

    async def forget(self, claim: Claim | tuple[str, int]) -> bool:
        """Delete a message (delivered, or bounced) and its body, if this node still holds
        it; False, and nothing deleted, otherwise."""
        message_id, token = _held(claim)
        return await self.pool.execute(_FORGET, message_id, token) == "DELETE 1"

    async def release(self, claim: Claim | tuple[str, int]) -> bool:
        """Give a message back untried (shutting down, say): it waits as it did before the
        claim. False when this node no longer held it."""
        message_id, token = _held(claim)
        next_attempt = await self.pool.fetchval(_RELEASE, message_id, token)
        if next_attempt is None:
            return False
        if next_attempt <= self._local_now():
            self._hint()
        return True

    async def renew(self, claims: Iterable[Claim | tuple[str, int]], lease: float) -> set[str]:
        """Extend the leases still held to ``lease`` seconds from now, in one statement
        (touching no indexed column: a HOT update). The ids of those no longer held: stop
        working on them, another node has them or will."""
        held = dict(_held(claim) for claim in claims)
        if not held:
            return set()
        rows = await self.pool.fetch(_RENEW, list(held), list(held.values()), self._now(), lease)
        return set(held) - {row["id"] for row in rows}

    # -- bodies ---------------------------------------------------------------------------

    async def read_body(self, message_id: str) -> AsyncGenerator[bytes, None]:
        """The body, chunk by chunk, a few chunks per query (no transaction held). Its
        length and CRC32 are checked as it ends: :class:`BodyDamaged` comes after the last
        chunk, so commit to nothing (no final dot) before the iteration has ended."""
        rows = await self.pool.fetch(_BODY_START, message_id, self.read_chunks)
        if not rows:
            raise NoSuchMessage(message_id)
        expected = _body(rows[0])
        check = _Check(message_id)
        batch = [(r["seq"], r["data"]) for r in rows if r["seq"] is not None]
        while batch:
            for seq, data in batch:
                yield check.take(seq, data)
            if len(batch) < self.read_chunks:
                break
            more = await self.pool.fetch(_BODY_MORE, message_id, check.seq, self.read_chunks)
            batch = [(r["seq"], r["data"]) for r in more]
        check.finish(expected)

    # -- admin ----------------------------------------------------------------------------

    async def get(self, message_id: str) -> QueuedMessage | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM messages WHERE id = $1", message_id)
        return None if row is None else _queued(row)

    async def by_parent(self, parent_id: str) -> list[QueuedMessage]:
        """The messages of one batch (one envelope's destinations), by id."""
        query = f"SELECT {_COLUMNS} FROM messages WHERE parent_id = $1 ORDER BY id"
        return [_queued(row) for row in await self.pool.fetch(query, parent_id)]

    async def by_message_id(self, message_id: str) -> list[QueuedMessage]:
        """The messages whose Message-ID field has this value, by id."""
        query = f"SELECT {_COLUMNS} FROM messages WHERE message_id = $1 ORDER BY id"
        return [_queued(row) for row in await self.pool.fetch(query, message_id)]

    async def all(self) -> list[QueuedMessage]:
        """Every queued message, oldest first (an admin query: it reads the table)."""
        query = f"SELECT {_COLUMNS} FROM messages ORDER BY spool_date, id"
        return [_queued(row) for row in await self.pool.fetch(query)]

    async def change(self, message_id: str, state: Mapping[str, Any]) -> bool:
        """An operator's change (freeze, send now, remove, recover) of a message this
        node does not hold: it takes ``state`` whoever holds it; a lease out on it ends
        (that node's outcome will be refused by the fencing token). False if gone."""
        status, next_attempt = _status_of(state)
        change = {key: value for key, value in state.items() if key not in ("v", "id")}
        done = await self.pool.execute(_CHANGE, message_id, status, next_attempt, change)
        if done != "UPDATE 1":
            return False
        if status in WAITING and next_attempt <= self._local_now():
            self._hint()
        return True

    async def purge(self, message_id: str) -> bool:
        """Delete a removed or quarantined message for good; False if there was none."""
        done = await self.pool.execute(_PURGE, message_id)
        return bool(done == "DELETE 1")

    async def count_by_status(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT status, count(*) FROM messages GROUP BY status")
        return {row["status"]: row["count"] for row in rows}

    async def next_due(self) -> float | None:
        """When the next message is due, or a lease lapses (None: nothing waits): how long
        an idle node may sleep, at most, when no wake-up hint comes."""
        due = await self.pool.fetchval(_NEXT_DUE)
        return None if due is None else float(due)

    # -- wake-up hints --------------------------------------------------------------------

    def _hint(self) -> None:
        """NOTIFY idle nodes that messages are due, after the data's commit and in a
        transaction of its own: a NOTIFY inside the writing transaction holds PostgreSQL's
        global notify lock across its WAL flush and serializes every such committer
        (bench/pg_driver.py --notify: 8 adders, 717 adds/s without, 324 with, 597 after).
        Hints asked for while one is being sent make one more, not one each."""
        self._hint_wanted = True
        if self._hinting is None or self._hinting.done():
            self._hinting = asyncio.create_task(self._send_hints())

    async def _send_hints(self) -> None:
        while self._hint_wanted:
            self._hint_wanted = False
            try:
                await self.pool.execute(f"NOTIFY {DUE_CHANNEL}")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("wake-up hint not sent (nodes will poll): %s", exc)


class _Check:
    """Follows a body being read: chunks in order, then its length and CRC."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.seq = 0
        self.length = 0
        self.crc = 0

    def take(self, seq: int, data: bytes) -> bytes:
        if seq != self.seq:
            raise BodyDamaged(self.message_id, f"chunk {self.seq} is missing (found {seq})")
        self.seq += 1
        self.length += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return data

    def finish(self, expected: Body) -> None:
        if self.length != expected.length:
            raise BodyDamaged(
                self.message_id, f"{self.length} octets found, {expected.length} stored"
            )
        if self.crc != expected.crc32:
            raise BodyDamaged(self.message_id, f"CRC32 {self.crc:08x}, {expected.crc32:08x} stored")


async def _rechunk(
    body: Iterable[bytes] | AsyncIterable[bytes], size: int, per_batch: int
) -> AsyncIterator[list[bytes]]:
    """``body``'s octets in chunks of ``size`` (the last one shorter), ``per_batch``
    chunks at a time."""
    pending = bytearray()
    batch: list[bytes] = []
    async for piece in _aiter(body):
        pending += piece
        while len(pending) >= size:
            batch.append(bytes(pending[:size]))
            del pending[:size]
            if len(batch) == per_batch:
                yield batch
                batch = []
    if pending:
        batch.append(bytes(pending))
    if batch:
        yield batch


async def _aiter(body: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, AsyncIterable):
        async for piece in body:
            yield piece
    else:
        for piece in body:
            yield piece


def _row_of(meta: Mapping[str, Any]) -> tuple[Any, ...]:
    """The columns of a new message's row (without its body's length and CRC)."""
    message_id = meta["id"]
    status, next_attempt = _status_of(meta)
    return (
        message_id,
        meta.get("parent", message_id),
        float(meta["date"]),
        status,
        next_attempt,
        meta.get("msgid"),
        dict(meta),
    )


def _status_of(state: Mapping[str, Any]) -> tuple[str, float]:
    status = state["status"]
    if status == "sending":
        raise ValueError("'sending' is the queue's to set (claim), not a stored status")
    return status, float(state.get("at") or 0.0)


def _held(claim: Claim | tuple[str, int]) -> tuple[str, int]:
    return (claim.id, claim.token) if isinstance(claim, Claim) else claim


def _body(row: asyncpg.Record) -> Body:
    return Body(row["body_length"], row["body_crc32"])


def _queued(row: asyncpg.Record) -> QueuedMessage:
    return QueuedMessage(
        id=row["id"],
        parent_id=row["parent_id"],
        spool_date=row["spool_date"],
        status=row["status"],
        next_attempt=row["next_attempt"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
        lease_token=row["lease_token"],
        message_id=row["message_id"],
        meta=row["meta"],
        body=_body(row),
    )
