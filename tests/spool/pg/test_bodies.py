"""Message bodies in chunks: written in the message's transaction, read back checked."""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from smtpx.spool.pg.queue import CHUNK_SIZE, Body, BodyDamaged, NoSuchMessage, PgQueue
from smtpx.spool.pg.schema import migrate
from tests.spool.pg.helpers import Clock, meta

pytestmark = pytest.mark.interop
FIVE_MB = 5 * 1024 * 1024


@pytest.fixture
async def queue(pg_pool: asyncpg.Pool) -> AsyncIterator[PgQueue]:
    await migrate(pg_pool)
    node = PgQueue(pg_pool, "node-a", clock=Clock())
    yield node
    await node.close()


async def read(queue: PgQueue, message_id: str) -> list[bytes]:
    return [chunk async for chunk in queue.read_body(message_id)]


async def test_a_5_mb_body_round_trips_byte_exact(queue: PgQueue, pg_pool: asyncpg.Pool) -> None:
    body = os.urandom(FIVE_MB)
    assert await queue.add(meta(1), body) == Body(FIVE_MB, zlib.crc32(body))
    chunks = await read(queue, "m1")
    assert b"".join(chunks) == body
    assert [len(c) for c in chunks] == [CHUNK_SIZE] * 20
    stored = await pg_pool.fetch("SELECT seq FROM message_chunks ORDER BY seq")
    assert [row["seq"] for row in stored] == list(range(20))


async def test_a_body_from_pieces_of_any_size_is_stored_in_whole_chunks(queue: PgQueue) -> None:
    body = os.urandom(3 * CHUNK_SIZE + 12345)
    cuts = [0, 1, 70_000, 70_001, 600_000, 786_432, len(body)]

    def pieces() -> Iterator[bytes]:
        for start, end in itertools.pairwise(cuts):
            yield body[start:end]

    async def async_pieces() -> AsyncIterator[bytes]:
        for piece in pieces():
            yield piece

    assert await queue.add(meta(1), pieces()) == Body(len(body), zlib.crc32(body))
    assert await queue.add(meta(2), async_pieces()) == Body(len(body), zlib.crc32(body))
    for message_id in ("m1", "m2"):
        chunks = await read(queue, message_id)
        assert b"".join(chunks) == body
        assert [len(c) for c in chunks] == [CHUNK_SIZE] * 3 + [12345]


async def test_an_empty_body_is_a_message_without_chunks(queue: PgQueue) -> None:
    assert await queue.add(meta(1), b"") == Body(0, 0)
    assert await queue.add(meta(2), iter([b"", b""])) == Body(0, 0)
    assert await read(queue, "m1") == []
    assert await read(queue, "m2") == []


async def test_a_body_that_fails_midway_leaves_nothing_behind(
    queue: PgQueue, pg_pool: asyncpg.Pool
) -> None:
    def broken() -> Iterator[bytes]:
        yield b"x" * (5 * CHUNK_SIZE)  # more than one statement's worth of chunks
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        await queue.add(meta(1), broken())
    assert await queue.get("m1") is None
    assert await pg_pool.fetchval("SELECT count(*) FROM message_chunks") == 0
    assert await queue.claim(10, lease=60) == []


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("UPDATE message_chunks SET data = data || '\\x00' WHERE seq = 1", "octets found"),
        (
            "UPDATE message_chunks SET data = overlay(data placing '\\xff' from 5) WHERE seq = 2",
            "CRC32",
        ),
        ("DELETE FROM message_chunks WHERE seq = 1", "chunk 1 is missing"),
        ("DELETE FROM message_chunks WHERE seq = 4", "octets found"),
        ("UPDATE messages SET body_crc32 = 0", "CRC32"),
    ],
)
async def test_a_damaged_body_is_never_passed_off_as_whole(
    queue: PgQueue, pg_pool: asyncpg.Pool, damage: str, problem: str
) -> None:
    await queue.add(meta(1), os.urandom(4 * CHUNK_SIZE + 10))
    await pg_pool.execute(damage)
    with pytest.raises(BodyDamaged, match=problem):
        await read(queue, "m1")


async def test_reading_an_unknown_message_says_so(queue: PgQueue) -> None:
    with pytest.raises(NoSuchMessage, match="m9"):
        await read(queue, "m9")


async def test_a_reader_holds_a_few_chunks_at_a_time(pg_pool: asyncpg.Pool) -> None:
    """Chunks come in queries of ``read_chunks``: memory stays at that, not the body."""
    await migrate(pg_pool)
    queue = PgQueue(pg_pool, "node-a", chunk_size=1000, read_chunks=3)
    body = os.urandom(10_500)
    await queue.add(meta(1), body)
    sizes = [len(chunk) async for chunk in queue.read_body("m1")]
    assert sizes == [1000] * 10 + [500]
    await queue.close()
