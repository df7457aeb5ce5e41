"""What an operator asks of the queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from smtpx.spool.message import Status
from smtpx.spool.pg.queue import PgQueue
from smtpx.spool.pg.schema import migrate
from tests.spool.pg.helpers import EPOCH, Clock, meta

pytestmark = pytest.mark.interop


@pytest.fixture
async def queue(pg_pool: asyncpg.Pool) -> AsyncIterator[PgQueue]:
    await migrate(pg_pool)
    node = PgQueue(pg_pool, "node-a", clock=Clock())
    yield node
    await node.close()


async def test_messages_are_found_by_id_batch_and_message_id(queue: PgQueue) -> None:
    await queue.add(meta("a1", parent="a1", message_id="<x@example.com>"), b"x")
    await queue.add(meta("a2", parent="a1", message_id="<x@example.com>"), b"xy")
    await queue.add(meta("b1", message_id="<y@example.com>"), b"xyz")
    found = await queue.get("ma2")
    assert found is not None
    assert (found.parent_id, found.message_id, found.body.length) == ("a1", "<x@example.com>", 2)
    assert await queue.get("nothing") is None
    assert [m.id for m in await queue.by_parent("a1")] == ["ma1", "ma2"]
    assert [m.id for m in await queue.by_message_id("<x@example.com>")] == ["ma1", "ma2"]
    assert [m.id for m in await queue.by_message_id("<y@example.com>")] == ["mb1"]
    assert await queue.by_message_id("<z@example.com>") == []


async def test_messages_are_counted_by_status(queue: PgQueue) -> None:
    assert await queue.count_by_status() == {}
    for n, status in enumerate([Status.SEND_NOW, Status.SEND_NOW, Status.FROZEN]):
        await queue.add(meta(n, status=status), b"x")
    await queue.add(meta(3, status=Status.SEND_AT, at=EPOCH + 60), b"x")
    await queue.claim(1, lease=60)
    assert await queue.count_by_status() == {
        "send_now": 1,
        "sending": 1,
        "send_at": 1,
        "frozen": 1,
    }


async def test_next_due_is_the_earliest_attempt_or_lapsing_lease(queue: PgQueue) -> None:
    assert await queue.next_due() is None
    await queue.add(meta(1, status=Status.SEND_AT, at=EPOCH + 600), b"x")
    await queue.add(meta(2, status=Status.SEND_AT, at=EPOCH), b"x")
    await queue.add(meta(3, status=Status.FROZEN, at=EPOCH - 100), b"x")
    assert await queue.next_due() == EPOCH
    await queue.claim(1, lease=30)
    assert await queue.next_due() == EPOCH + 30  # the lease of m2 lapses then
