"""LISTEN/NOTIFY: the wake-up hints idle nodes wait for, and spool events across nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from smtpx.spool.message import Status
from smtpx.spool.pg.notify import (
    MAX_PAYLOAD,
    MAX_REASON,
    DueListener,
    EventListener,
    NodeEvent,
    event_payload,
    publish,
)
from smtpx.spool.pg.queue import PgQueue, QueueError
from smtpx.spool.pg.schema import EVENTS_CHANNEL, migrate
from tests.spool.pg.helpers import EPOCH, Clock, meta

pytestmark = pytest.mark.interop


@pytest.fixture
async def queue(pg_pool: asyncpg.Pool) -> AsyncIterator[PgQueue]:
    await migrate(pg_pool)
    node = PgQueue(pg_pool, "node-a", clock=Clock())
    yield node
    await node.close()


async def test_an_idle_node_wakes_when_a_message_is_due(
    queue: PgQueue, pg_pool: asyncpg.Pool, pg_dsn: str
) -> None:
    async with await DueListener.open(pg_dsn) as listener:
        assert not await listener.wait(0)  # nothing yet: poll
        await queue.add(meta(1, status=Status.SEND_AT, at=EPOCH + 60), b"x")  # not due
        await queue.close()
        assert not await listener.wait(0)
        other = PgQueue(pg_pool, "node-b", clock=Clock())
        await other.add(meta(2), b"x")
        assert await asyncio.wait_for(listener.wait(30), 30)
        assert not await listener.wait(0)  # one hint, one wake-up
        [claim] = await other.claim(1, lease=60)
        assert await other.release(claim)
        assert await listener.wait(30)  # given back: due again
        await other.close()


async def test_hints_asked_for_meanwhile_are_sent_as_one(
    queue: PgQueue, pg_pool: asyncpg.Pool, pg_dsn: str
) -> None:
    """With one connection of the pool free, 20 adds take turns on it; the first asks for
    a hint, the hint waits its turn behind the other 19, which ask for one each: two
    NOTIFYs go out (the first, and one for everything asked meanwhile), not twenty."""
    heard: list[str] = []
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.add_listener("smtpx_queue", lambda *args: heard.append(args[3]))
        async with pg_pool.acquire(), pg_pool.acquire(), pg_pool.acquire():
            await asyncio.gather(*(queue.add(meta(n), b"x") for n in range(20)))
            await queue.close()
        await conn.execute("SELECT 1")  # notifications arrive with the connection's traffic
        assert heard == ["", ""]
    finally:
        await conn.close()


async def test_a_lost_listening_connection_is_reported(pg_dsn: str, pg_pool: asyncpg.Pool) -> None:
    listener = await DueListener.open(pg_dsn)
    assert await pg_pool.fetchval("SELECT pg_terminate_backend($1)", listener.conn.get_server_pid())
    with pytest.raises(QueueError, match="LISTEN smtpx_queue connection"):
        await asyncio.wait_for(listener.wait(30), 30)
    await listener.close()


EVENT = NodeEvent("node-a", "delivered", "m1", "250 2.0.0 ok", EPOCH)


async def test_events_reach_every_listening_node(pg_dsn: str, pg_pool: asyncpg.Pool) -> None:
    async with await EventListener.open(pg_dsn) as one, await EventListener.open(pg_dsn) as two:
        assert await one.next(0) is None
        await publish(pg_pool, EVENT)
        await publish(pg_pool, NodeEvent("node-b", "frozen", "m2", "by request", EPOCH + 1))
        for listener in (one, two):
            assert await asyncio.wait_for(listener.next(30), 30) == EVENT
            second = await asyncio.wait_for(listener.next(30), 30)
            assert second is not None
            assert (second.node, second.kind, second.id) == ("node-b", "frozen", "m2")
        await pg_pool.execute("SELECT pg_notify($1, 'not ours')", EVENTS_CHANNEL)
        await pg_pool.execute("SELECT pg_notify($1, '[1, 2]')", EVENTS_CHANNEL)
        await pg_pool.execute('SELECT pg_notify($1, \'{"node": "x"}\')', EVENTS_CHANNEL)
        await publish(pg_pool, EVENT)
        assert await asyncio.wait_for(one.next(30), 30) == EVENT  # the strangers were skipped
        # A newer node's event with a key this one does not know still arrives, and an
        # older node's without a reason.
        newer = json.dumps({**dataclasses.asdict(EVENT), "reason": "451 busy", "shiny": 1})
        await pg_pool.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, newer)
        assert await asyncio.wait_for(one.next(30), 30) == dataclasses.replace(
            EVENT, reason="451 busy"
        )
        older = {k: v for k, v in dataclasses.asdict(EVENT).items() if k != "reason"}
        await pg_pool.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, json.dumps(older))
        assert await asyncio.wait_for(one.next(30), 30) == EVENT


async def test_a_long_detail_is_cut_to_fit_a_notification(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    long = NodeEvent("node-a", "bounced", "m1", "é" * 9000, EPOCH, reason="4" * 5000)
    assert len(event_payload(long).encode()) <= MAX_PAYLOAD
    async with await EventListener.open(pg_dsn) as listener:
        await publish(pg_pool, long)
        got = await asyncio.wait_for(listener.next(30), 30)
        assert got is not None
        assert got.detail.endswith("...")
        assert long.detail.startswith(got.detail[:-3])
        assert len(got.detail) > 3000
        assert got.reason == "4" * MAX_REASON + "..."


async def test_a_slow_reader_keeps_the_newest_events(pg_dsn: str, pg_pool: asyncpg.Pool) -> None:
    conn = await asyncpg.connect(pg_dsn)
    listener = EventListener(conn, keep=3)
    await conn.add_listener(EVENTS_CHANNEL, listener._notified)
    try:
        for n in range(5):
            await publish(pg_pool, NodeEvent("node-a", "delayed", f"m{n}", "", EPOCH))
        await conn.execute("SELECT 1")  # notifications arrive with the connection's traffic
        got = [await listener.next(0) for _ in range(4)]
        assert [e.id if e else None for e in got] == ["m2", "m3", "m4", None]
        assert listener.dropped == 2
    finally:
        await listener.close()


async def test_events_before_a_lost_connection_are_still_read(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    listener = await EventListener.open(pg_dsn)
    await publish(pg_pool, EVENT)
    await listener.conn.execute("SELECT 1")
    assert await pg_pool.fetchval("SELECT pg_terminate_backend($1)", listener.conn.get_server_pid())
    assert await asyncio.wait_for(listener.next(30), 30) == EVENT
    with pytest.raises(QueueError, match="LISTEN smtpx_events connection"):
        await asyncio.wait_for(listener.next(30), 30)
    await listener.close()
