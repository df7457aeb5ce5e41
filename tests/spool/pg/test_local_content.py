"""A local delivery from the PostgreSQL queue: the body fetched checked, kept in memory
up to ``SPILL_AT`` octets and past that in an unnamed file, closed afterwards."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from smtpx.content import SpillClosed, SpilledMessage
from smtpx.spool.pg import store as pg_store
from smtpx.spool.pg.store import PgStore
from smtpx.spool.records import BodyDamaged
from smtpx.spool.types import PostgresSettings, SpoolConfig
from tests.spool.pg.helpers import entry, meta

pytestmark = pytest.mark.interop


class Counted:
    """A pool that counts the queries of ``fetch``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.queries: list[str] = []

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        self.queries.append(query)
        return await self.pool.fetch(query, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.pool, name)


@pytest.fixture
async def store(tmp_path: Path, pg_dsn: str) -> AsyncIterator[PgStore]:
    settings = PostgresSettings(dsn=pg_dsn, node="n1")
    (tmp_path / "spool").mkdir()
    pg = PgStore(SpoolConfig(directory=tmp_path / "spool", postgresql=settings), {}, time.time)
    await pg.open()
    yield pg
    await pg.close()


async def test_a_small_body_comes_in_memory_a_large_one_in_a_file(
    store: PgStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_store, "SPILL_AT", 1000)
    small, large = b"Subject: s\r\n\r\nhi\r\n", os.urandom(300_000)
    await store.queue.add(meta(1), small)
    await store.queue.add(meta(2), large)
    async with store.content(entry(1)) as content:
        assert content == small and isinstance(content, bytes)
    async with store.content(entry(2)) as content:
        assert isinstance(content, SpilledMessage)
        assert b"".join(content.chunks(4096)) == large
        # In the spool's directory, as the server's spill files (not a tmpfs /tmp).
        where = os.readlink(f"/proc/self/fd/{content.file.fd}")
        assert where.startswith(f"{store.config.directory}/"), where
    with pytest.raises(SpillClosed):  # the file is closed once the delivery is over
        content.read()


async def test_a_damaged_body_is_refused_before_any_of_it_is_given(
    store: PgStore, pg_pool: asyncpg.Pool
) -> None:
    await store.queue.add(meta(1), os.urandom(100_000))
    await pg_pool.execute("UPDATE messages SET body_crc32 = 0")
    with pytest.raises(BodyDamaged, match="CRC32"):
        async with store.content(entry(1)):
            pytest.fail("a damaged body was handed on")


async def test_the_head_is_fetched_without_the_body(
    store: PgStore, pg_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first chunk is fetched (one query of one chunk, of the 13 the body
    has): a body damaged further on still gives its header section."""
    head = b"From: a@example.com\r\nSubject: heads\r\n\r\n"
    await store.queue.add(meta(1), head + os.urandom(3 << 20))
    await pg_pool.execute("UPDATE message_chunks SET data = '' WHERE seq = 5")  # further on
    counted = Counted(store.queue.pool)
    monkeypatch.setattr(store.queue, "read_chunks", 1)
    monkeypatch.setattr(store.queue, "pool", counted)
    assert await store.head(entry(1)) == head
    assert len(counted.queries) == 1
    await store.queue.add(meta(2), b"Subject: no body")
    assert await store.head(entry(2)) == b"Subject: no body"


async def test_damage_is_found_a_chunk_at_a_time(store: PgStore, pg_pool: asyncpg.Pool) -> None:
    await store.queue.add(meta(1), os.urandom(1 << 20))
    await store.queue.add(meta(2), os.urandom(1 << 20))
    await pg_pool.execute(
        "UPDATE message_chunks SET data = data || '\\x00' WHERE message_id = 'm2' AND seq = 1"
    )
    assert await store.damage(entry(1)) is None
    found = await store.damage(entry(2))
    assert isinstance(found, BodyDamaged) and "octets found" in str(found)
