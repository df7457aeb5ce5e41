"""Migrations: applied once, in order, safely from several nodes at once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from smtpx.spool.pg.schema import MIGRATION_LOCK, MIGRATIONS, SchemaTooNew, migrate

pytestmark = pytest.mark.interop


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


async def test_migrate_creates_the_schema_then_is_a_no_op(pg_pool: asyncpg.Pool) -> None:
    assert await migrate(pg_pool) == [m.version for m in MIGRATIONS]
    assert await migrate(pg_pool) == []
    rows = await pg_pool.fetch("SELECT version, description FROM schema_version")
    assert [(r["version"], r["description"]) for r in rows] == [
        (m.version, m.description) for m in MIGRATIONS
    ]
    tables = await pg_pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
    )
    assert [t["tablename"] for t in tables] == ["message_chunks", "messages", "schema_version"]


async def test_the_hot_queue_settings_are_in_place(pg_pool: asyncpg.Pool) -> None:
    await migrate(pg_pool)
    options = await pg_pool.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'messages'::regclass"
    )
    assert "fillfactor=70" in options
    indexes = {
        row["indexname"]: row["indexdef"]
        for row in await pg_pool.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        )
    }
    assert "WHERE (status = ANY" in indexes["messages_due"]
    assert "(next_attempt, id)" in indexes["messages_due"]
    # Nothing indexes the lease's expiry or owner: a renewal stays a HOT update.
    mine = [d for n, d in indexes.items() if n.startswith("messages")]
    assert not [d for d in mine if "lease_until" in d or "lease_owner" in d]
    storage = await pg_pool.fetchval(
        "SELECT attstorage::text FROM pg_attribute "
        "WHERE attrelid = 'message_chunks'::regclass AND attname = 'data'"
    )
    assert storage == "e"  # EXTERNAL: out of line, not compressed


async def test_two_nodes_migrating_at_once_apply_each_migration_once(pg_dsn: str) -> None:
    """Both wait on the advisory lock held here, then race the moment it is released."""
    holder, first, second = [await asyncpg.connect(pg_dsn) for _ in range(3)]
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            racing = asyncio.gather(migrate(first), migrate(second))
            await _until_waiting_for_a_lock(holder, 2)
        results = await asyncio.wait_for(racing, 30)
        assert sorted(results) == [[], [m.version for m in MIGRATIONS]]
        assert await holder.fetchval("SELECT count(*) FROM schema_version") == len(MIGRATIONS)
    finally:
        for conn in (holder, first, second):
            await conn.close()


async def test_a_database_from_a_newer_smtpx_is_refused(pg_pool: asyncpg.Pool) -> None:
    await migrate(pg_pool)
    await pg_pool.execute("INSERT INTO schema_version (version, description) VALUES (99, 'x')")
    with pytest.raises(SchemaTooNew, match="version 99") as caught:
        await migrate(pg_pool)
    assert (caught.value.found, caught.value.known) == (99, MIGRATIONS[-1].version)


async def test_a_failing_migration_leaves_the_earlier_ones_applied(pg_pool: asyncpg.Pool) -> None:
    broken = (*MIGRATIONS, type(MIGRATIONS[0])(len(MIGRATIONS) + 1, "broken", "SELECT 1/0"))
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(pg_pool, broken)
    assert await pg_pool.fetchval("SELECT max(version) FROM schema_version") == len(MIGRATIONS)
    assert await migrate(pg_pool) == []


async def _until_waiting_for_a_lock(conn: asyncpg.Connection, sessions: int) -> None:
    """Until ``sessions`` other sessions wait for a lock (a real server: bounded polling)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    for _ in range(500):
        if await conn.fetchval(query) >= sessions:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{sessions} sessions never waited for the migration lock")
