"""asyncpg vs psycopg 3 for the PostgreSQL spool's operations, on a real local server.

    .venv/bin/pip install 'psycopg[binary]' psycopg-pool   # once: dev has asyncpg only
    .venv/bin/python bench/pg_driver.py [--messages 2000] [--size 8192] [--rounds 3]
                                        [--concurrency 8] [--rt-messages 32] [--dsn DSN]
    .venv/bin/python bench/pg_driver.py --notify

Starts a private cluster (tests/spool/pg/cluster.py: fsync ON) unless ``--dsn`` is
given, applies the spool's schema (smtpx.spool.pg.schema) and runs, for each driver and
way of talking, the queue's operations over N messages:

  add      metadata row + body in 256 KiB chunks (message_chunks), one transaction:
           "1 statement" (a CTE, the chunks as one bytea[]), "transaction" (BEGIN,
           INSERT, executemany, COMMIT) or psycopg's "pipeline" (the same, pipelined)
  claim    batches of 16 due messages: UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
           SKIP LOCKED LIMIT 16) RETURNING
  settle   a status update fenced by the lease token
  read     the body streamed back, 4 chunks per query, CRC checked
  forget   the delete of the delivered message (chunks go by cascade)

Reported: ops/s with ``--concurrency`` workers sharing a pool of as many connections
(median of the rounds, drivers alternating), the client's CPU time per operation, and
round trips per operation, measured on the wire: the same operations at concurrency 1
through a proxy that counts turns (each time the client sends after the server spoke,
it had waited for an answer; a pipelined batch is one turn).

``--notify`` instead compares, for asyncpg's one-statement add at the given concurrency,
no NOTIFY, a NOTIFY inside the writing transaction, and one sent after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import statistics
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import psycopg_pool
from psycopg.types.json import Jsonb

from smtpx.spool.pg.schema import MIGRATIONS
from smtpx.testing.postgres import Cluster, start_cluster

CHUNK = 256 * 1024
READ_BATCH = 4
CLAIM_BATCH = 16
LEASE = 300.0

COLUMNS = (
    "id, parent_id, spool_date, status, next_attempt, message_id, meta, body_length, body_crc32"
)
VALUES = "VALUES ($1, $1, $2, 'send_now', 0, $3, $4, $5, $6)"
INSERT_MESSAGE = f"INSERT INTO messages ({COLUMNS}) {VALUES}"
INSERT_CHUNK = "INSERT INTO message_chunks (message_id, seq, data) VALUES ($1, $2, $3)"
ADD_ONE = f"""
WITH m AS (INSERT INTO messages ({COLUMNS}) {VALUES})
INSERT INTO message_chunks (message_id, seq, data)
SELECT $1, c.n - 1, c.data FROM unnest($7::bytea[]) WITH ORDINALITY AS c(data, n)"""
CLAIM = """
UPDATE messages m SET status = 'sending', lease_owner = $1, lease_until = $2 + $3,
       lease_token = m.lease_token + 1
WHERE m.id IN (SELECT id FROM messages
               WHERE status IN ('send_now', 'send_at') AND next_attempt <= $2
               ORDER BY next_attempt, id LIMIT $4 FOR UPDATE SKIP LOCKED)
RETURNING m.id, m.lease_token, m.meta, m.body_length, m.body_crc32"""
SETTLE = """
UPDATE messages SET status = 'send_at', next_attempt = $3, lease_owner = NULL,
       lease_until = NULL, meta = meta || $4
WHERE id = $1 AND lease_token = $2 AND status = 'sending'"""
FORGET = "DELETE FROM messages WHERE id = $1 AND lease_token = $2"
BODY_HEAD = "SELECT body_length, body_crc32 FROM messages WHERE id = $1"
BODY_CHUNKS = """
SELECT seq, data FROM message_chunks WHERE message_id = $1 AND seq >= $2
ORDER BY seq LIMIT $3"""


def psycopg_sql(text: str) -> str:
    """``$n`` placeholders as psycopg's ``%(pn)b``: every parameter sent in binary."""
    return re.sub(r"\$(\d+)", r"%(p\1)b", text)


def named(args: Sequence[object]) -> dict[str, object]:
    return {f"p{n}": value for n, value in enumerate(args, 1)}


@dataclass(frozen=True)
class Message:
    id: str
    meta: dict[str, Any]
    chunks: list[bytes]
    length: int
    crc: int


class Driver(Protocol):
    name: str

    async def add(self, message: Message) -> None: ...
    async def claim(self, now: float, limit: int) -> list[tuple[str, int]]: ...
    async def settle(self, message_id: str, token: int) -> bool: ...
    async def read(self, message_id: str) -> int: ...
    async def forget(self, message_id: str, token: int) -> bool: ...
    async def close(self) -> None: ...


async def _json_codec(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """No reset query on release (asyncpg's default costs a round trip per use): these
    connections never change session state (no LISTEN, SET or session locks)."""


class Asyncpg:
    """asyncpg, a pool; ``one``: add as one statement (chunks as a bytea[]), else a
    transaction of an INSERT and an ``executemany`` of the chunks."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], one: bool) -> None:
        self.pool = pool
        self.one = one
        self.name = "asyncpg " + ("1 statement" if one else "transaction")

    @classmethod
    async def open(cls, dsn: str, size: int, one: bool) -> Asyncpg:
        pool = await asyncpg.create_pool(
            dsn, min_size=size, max_size=size, init=_json_codec, reset=_keep_session
        )
        return cls(pool, one)

    async def add(self, message: Message) -> None:
        at, msgid = time.time(), f"<{message.id}@b>"
        head = (message.id, at, msgid, message.meta, message.length, message.crc)
        async with self.pool.acquire() as conn:
            if self.one:
                await conn.execute(ADD_ONE, *head, message.chunks)
                return
            async with conn.transaction():
                await conn.execute(INSERT_MESSAGE, *head)
                await conn.executemany(
                    INSERT_CHUNK, [(message.id, n, c) for n, c in enumerate(message.chunks)]
                )

    async def claim(self, now: float, limit: int) -> list[tuple[str, int]]:
        rows = await self.pool.fetch(CLAIM, "bench", now, LEASE, limit)
        return [(row["id"], row["lease_token"]) for row in rows]

    async def settle(self, message_id: str, token: int) -> bool:
        status = await self.pool.execute(SETTLE, message_id, token, 1e12, {"warned": True})
        return status == "UPDATE 1"

    async def read(self, message_id: str) -> int:
        async with self.pool.acquire() as conn:
            head = await conn.fetchrow(BODY_HEAD, message_id)
            assert head is not None
            seq, crc, length = 0, 0, 0
            while True:
                rows = await conn.fetch(BODY_CHUNKS, message_id, seq, READ_BATCH)
                for row in rows:
                    crc = zlib.crc32(row["data"], crc)
                    length += len(row["data"])
                seq += len(rows)
                if len(rows) < READ_BATCH:
                    break
        assert (length, crc) == (head["body_length"], head["body_crc32"])
        return length

    async def forget(self, message_id: str, token: int) -> bool:
        return await self.pool.execute(FORGET, message_id, token) == "DELETE 1"

    async def close(self) -> None:
        await self.pool.close()


class Psycopg:
    """psycopg 3 with psycopg_pool, autocommit connections; ``pipeline``: add in pipeline
    mode (BEGIN, INSERT, the chunks, COMMIT sent at once), else one statement."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], pipeline: bool) -> None:
        self.pool = pool
        self.pipeline = pipeline
        self.name = "psycopg " + ("pipeline" if pipeline else "1 statement")

    @classmethod
    async def open(cls, dsn: str, size: int, pipeline: bool) -> Psycopg:
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            dsn, min_size=size, max_size=size, open=False, kwargs={"autocommit": True}
        )
        await pool.open(wait=True)
        return cls(pool, pipeline)

    async def add(self, message: Message) -> None:
        meta = Jsonb(message.meta)
        head = (message.id, time.time(), f"<{message.id}@b>", meta, message.length, message.crc)
        async with self.pool.connection() as conn:
            if not self.pipeline:
                await conn.execute(_ADD_ONE, named((*head, message.chunks)))
                return
            async with conn.pipeline(), conn.cursor() as cur:
                await cur.execute("BEGIN")
                await cur.execute(_INSERT_MESSAGE, named(head))
                await cur.executemany(
                    _INSERT_CHUNK,
                    [named((message.id, n, c)) for n, c in enumerate(message.chunks)],
                )
                await cur.execute("COMMIT")

    async def claim(self, now: float, limit: int) -> list[tuple[str, int]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CLAIM, named(("bench", now, LEASE, limit)))
            return [(row[0], row[1]) for row in await cur.fetchall()]

    async def settle(self, message_id: str, token: int) -> bool:
        change = Jsonb({"warned": True})
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SETTLE, named((message_id, token, 1e12, change)))
            return bool(cur.rowcount == 1)

    async def read(self, message_id: str) -> int:
        async with self.pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(_BODY_HEAD, named((message_id,)))
            head = await cur.fetchone()
            assert head is not None
            seq, crc, length = 0, 0, 0
            while True:
                await cur.execute(_BODY_CHUNKS, named((message_id, seq, READ_BATCH)))
                rows = await cur.fetchall()
                for _, data in rows:
                    crc = zlib.crc32(data, crc)
                    length += len(data)
                seq += len(rows)
                if len(rows) < READ_BATCH:
                    break
        assert (length, crc) == (head[0], head[1])
        return length

    async def forget(self, message_id: str, token: int) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_FORGET, named((message_id, token)))
            return bool(cur.rowcount == 1)

    async def close(self) -> None:
        await self.pool.close()


_INSERT_MESSAGE, _INSERT_CHUNK, _ADD_ONE = map(psycopg_sql, (INSERT_MESSAGE, INSERT_CHUNK, ADD_ONE))
_CLAIM, _SETTLE, _FORGET = map(psycopg_sql, (CLAIM, SETTLE, FORGET))
_BODY_HEAD, _BODY_CHUNKS = map(psycopg_sql, (BODY_HEAD, BODY_CHUNKS))

OPENERS: dict[str, Callable[[str, int], Awaitable[Driver]]] = {
    "asyncpg 1 statement": lambda dsn, size: Asyncpg.open(dsn, size, one=True),
    "asyncpg transaction": lambda dsn, size: Asyncpg.open(dsn, size, one=False),
    "psycopg 1 statement": lambda dsn, size: Psycopg.open(dsn, size, pipeline=False),
    "psycopg pipeline": lambda dsn, size: Psycopg.open(dsn, size, pipeline=True),
}
PHASES = ("add", "claim", "settle", "read", "forget")


def messages(count: int, size: int, tag: str) -> list[Message]:
    found = []
    for n in range(count):
        body = os.urandom(size)
        meta = {"v": 1, "id": f"{tag}{n}", "sender": "<a@b.example>", "rcpts": ["<c@d.example>"]}
        chunks = [body[i : i + CHUNK] for i in range(0, size, CHUNK)] or [b""]
        found.append(Message(f"{tag}{n}", meta, chunks, size, zlib.crc32(body)))
    return found


async def in_parallel(workers: int, jobs: Sequence[Callable[[], Awaitable[object]]]) -> None:
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            await queue.pop()()

    await asyncio.gather(*(worker() for _ in range(workers)))


async def phases(
    driver: Driver, batch: list[Message], workers: int, mark: Callable[[], object] = time.time
) -> dict[str, tuple[float, float]]:
    """(seconds, client CPU seconds) each phase took over ``batch``; ``mark`` is called
    after each phase."""
    took: dict[str, tuple[float, float]] = {}
    tokens: dict[str, int] = {}

    async def claim_all() -> None:
        while claimed := await driver.claim(time.time(), CLAIM_BATCH):
            tokens.update(claimed)

    async def settle(m: Message) -> None:
        assert await driver.settle(m.id, tokens[m.id])

    async def read(m: Message) -> None:
        assert await driver.read(m.id) == m.length

    async def forget(m: Message) -> None:
        assert await driver.forget(m.id, tokens[m.id])

    async def claimers() -> None:
        await asyncio.gather(*(claim_all() for _ in range(workers)))

    each: dict[str, Callable[[Message], Awaitable[object]]] = {
        "add": driver.add,
        "settle": settle,
        "read": read,
        "forget": forget,
    }
    for name in PHASES:
        start, cpu = time.perf_counter(), time.process_time()
        if name == "claim":
            await claimers()
        else:
            await in_parallel(workers, [functools.partial(each[name], m) for m in batch])
        took[name] = (time.perf_counter() - start, time.process_time() - cpu)
        mark()
    assert sorted(tokens) == sorted(m.id for m in batch)
    return took


class TurnCounter:
    """A 127.0.0.1 proxy to the server that counts turns: each time a client sends after
    the server last spoke, it had waited for an answer (a pipelined batch is one turn)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.turns = 0
        self.server: asyncio.Server | None = None
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        spoke = [False]  # the server spoke since the client last sent
        self.links.append((writer, up_writer))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                self._pipe(reader, up_writer, spoke, True),
                self._pipe(up_reader, writer, spoke, False),
            )

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, spoke: list[bool], up: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(1 << 16):
                if up and spoke[0]:
                    self.turns += 1
                spoke[0] = not up
                dst.write(data)
                await dst.drain()
        dst.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for client, upstream in self.links:
            client.close()
            upstream.close()
        await asyncio.sleep(0)


def with_port(dsn: str, port: int) -> str:
    return re.sub(r"@([^:/]+):\d+/", rf"@\1:{port}/", dsn)


async def round_trips(name: str, dsn: str, port: int, count: int, size: int) -> dict[str, float]:
    """Turns per operation at concurrency 1 (after a first pass over a few messages, so
    that statements are prepared, as they are in a running node)."""
    counter = TurnCounter(port)
    driver = await OPENERS[name](with_port(dsn, await counter.start()), 1)
    marks: list[int] = []
    try:
        await phases(driver, messages(8, size, "w"), 1)
        marks.append(counter.turns)
        await phases(driver, messages(count, size, "t"), 1, lambda: marks.append(counter.turns))
    finally:
        await driver.close()
        await counter.close()
    per = dict.fromkeys(PHASES, count) | {"claim": count // CLAIM_BATCH + 1}
    return {p: (marks[n + 1] - marks[n]) / per[p] for n, p in enumerate(PHASES)}


async def compare(dsn: str, port: int, args: argparse.Namespace) -> None:
    n = args.messages
    print(
        f"{n} messages of {args.size} octets, {args.concurrency} workers, median of "
        f"{args.rounds} rounds (drivers alternate); round trips over {args.rt_messages} messages"
    )
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {name: [] for name in OPENERS}
    for rnd in range(args.rounds):
        for name, opener in OPENERS.items():
            driver = await opener(dsn, args.concurrency)
            try:
                batch = messages(n, args.size, f"r{rnd}{name[:3]}{name[-4:]}")
                runs[name].append(await phases(driver, batch, args.concurrency))
            finally:
                await driver.close()
    print(f"{'':24}" + "".join(f"{p:>10}" for p in PHASES))
    for name in OPENERS:
        rate = {p: statistics.median(n / run[p][0] for run in runs[name]) for p in PHASES}
        cpu = {p: statistics.median(run[p][1] / n * 1e6 for run in runs[name]) for p in PHASES}
        waits = await round_trips(name, dsn, port, args.rt_messages, args.size)
        print(f"{name:24}" + "".join(f"{rate[p]:>10,.0f}" for p in PHASES) + "  ops/s")
        print(f"{'':24}" + "".join(f"{cpu[p]:>10,.0f}" for p in PHASES) + "  client CPU us/op")
        print(f"{'':24}" + "".join(f"{waits[p]:>10.2f}" for p in PHASES) + "  round trips/op")
    print("(claim: ops/s are messages claimed in batches of 16; round trips are per claim call)")


NOTIFY_IN = ADD_ONE.replace(
    "INSERT INTO message_chunks (message_id, seq, data)\nSELECT",
    ", c AS (INSERT INTO message_chunks (message_id, seq, data)\nSELECT",
).replace("AS c(data, n)", "AS c(data, n))\nSELECT pg_notify('smtpx_queue', '')")


async def notify_costs(dsn: str, args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(
        dsn, min_size=args.concurrency, max_size=args.concurrency, init=_json_codec
    )

    async def add(m: Message, how: str) -> None:
        head = (m.id, time.time(), f"<{m.id}@b>", m.meta, m.length, m.crc, m.chunks)
        async with pool.acquire() as conn:
            await conn.execute(NOTIFY_IN if how == "inside" else ADD_ONE, *head)
            if how == "after":
                await conn.execute("NOTIFY smtpx_queue")

    listener = await asyncpg.connect(dsn)
    heard: list[str] = []
    await listener.add_listener("smtpx_queue", lambda *a: heard.append(a[3]))
    try:
        for rnd in range(args.rounds):
            for how in ("none", "inside", "after"):
                batch = messages(args.messages, args.size, f"{how}{rnd}-")
                start = time.perf_counter()
                await in_parallel(args.concurrency, [functools.partial(add, m, how) for m in batch])
                took = time.perf_counter() - start
                print(f"round {rnd} NOTIFY {how:6}: {args.messages / took:8,.0f} adds/s")
                await pool.execute("TRUNCATE messages, message_chunks")
    finally:
        await listener.close()
        await pool.close()
    print(f"(the listener heard {len(heard)} notifications)")


async def main(args: argparse.Namespace) -> None:
    cluster: Cluster | None = None
    dsn = args.dsn
    if dsn is None:
        cluster = start_cluster()
        cluster.sql("CREATE DATABASE bench")
        dsn = cluster.dsn("bench")
    try:
        setup = await asyncpg.connect(dsn)
        await setup.execute("\n".join(m.sql for m in MIGRATIONS))
        await setup.close()
        port = urlsplit(dsn).port or 5432
        if args.notify:
            await notify_costs(dsn, args)
        else:
            await compare(dsn, port, args)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rt-messages", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--notify", action="store_true")
    parser.add_argument("--dsn")
    asyncio.run(main(parser.parse_args()))
