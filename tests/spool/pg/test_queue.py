"""Claims, leases and fenced outcomes against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.pg.queue import CHUNK_SIZE, MessageExists, PgQueue, connect_pool
from smtpx.spool.pg.schema import migrate
from smtpx.spool.records import Location
from tests.spool.pg.helpers import EPOCH, Clock, entry, meta

pytestmark = pytest.mark.interop


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def queue(pg_pool: asyncpg.Pool, clock: Clock) -> AsyncIterator[PgQueue]:
    await migrate(pg_pool)
    node = PgQueue(pg_pool, "node-a", clock=clock)
    yield node
    await node.close()


async def test_a_message_goes_in_and_comes_out_as_the_spool_wrote_it(queue: PgQueue) -> None:
    original = entry(1)
    stored = await queue.add(original.to_meta(), b"Subject: 1\r\n\r\nbody\r\n")
    [claim] = await queue.claim(10, lease=60)
    assert claim.id == "m1"
    assert claim.token == 1
    assert claim.meta == original.to_meta()
    assert claim.body == stored
    assert claim.lease_until == EPOCH + 60
    again = SpooledMessage.from_meta(claim.meta, Location(0, 0, stored.length))
    assert again.info() == original.info()
    assert again.params_of("r1@example.org").notify == original.params_of("r1@example.org").notify
    row = await queue.get("m1")
    assert row is not None
    assert (row.status, row.lease_owner, row.lease_token) == ("sending", "node-a", 1)


async def test_only_due_messages_are_claimed(queue: PgQueue, clock: Clock) -> None:
    await queue.add(meta(1, status=Status.SEND_AT, at=EPOCH + 300), b"later")
    await queue.add(meta(2, status=Status.FROZEN), b"frozen")
    assert await queue.claim(10, lease=60) == []
    assert await queue.next_due() == EPOCH + 300
    clock.now += 300
    assert [c.id for c in await queue.claim(10, lease=60)] == ["m1"]


async def test_claims_come_in_due_order_up_to_the_limit(queue: PgQueue) -> None:
    for n, delay in enumerate([30, 10, 20, 0]):
        await queue.add(meta(n, status=Status.SEND_AT, at=EPOCH - delay), b"x")
    first = await queue.claim(2, lease=60)
    assert sorted(c.id for c in first) == ["m0", "m2"]  # due 30 s and 20 s ago
    assert sorted(c.id for c in await queue.claim(5, lease=60)) == ["m1", "m3"]


async def test_two_claimers_never_get_the_same_message(pg_dsn: str, clock: Clock) -> None:
    pools = [await connect_pool(pg_dsn, size=3) for _ in range(2)]
    try:
        await migrate(pools[0])
        nodes = [PgQueue(pool, f"node-{n}", clock=clock) for n, pool in enumerate(pools)]
        await asyncio.gather(*(nodes[0].add(meta(n), b"x") for n in range(120)))
        got: dict[str, list[str]] = {"node-0": [], "node-1": []}

        async def claim_until_empty(node: PgQueue) -> None:
            while claims := await node.claim(3, lease=60):
                got[node.node].extend(c.id for c in claims)

        await asyncio.gather(*(claim_until_empty(node) for node in nodes for _ in range(3)))
        every = got["node-0"] + got["node-1"]
        assert sorted(every) == sorted(f"m{n}" for n in range(120))  # each exactly once
        assert got["node-0"] and got["node-1"]  # both really took part
        for node in nodes:
            await node.close()
    finally:
        for pool in pools:
            await pool.close()


async def test_a_lapsed_lease_passes_on_and_fences_out_the_first_node(
    queue: PgQueue, pg_pool: asyncpg.Pool, clock: Clock
) -> None:
    other = PgQueue(pg_pool, "node-b", clock=clock)
    await queue.add(meta(1), b"x")
    [mine] = await queue.claim(10, lease=30)
    clock.now += 29
    assert await other.claim(10, lease=30) == []  # still held
    clock.now += 2
    [theirs] = await other.claim(10, lease=30)
    assert (theirs.id, theirs.token, mine.token) == ("m1", 2, 1)
    # The first node wakes up and tries to record its outcome: refused, every way.
    assert await queue.renew([mine], lease=30) == {"m1"}
    assert not await queue.settle(mine, {"status": "frozen", "at": None})
    assert not await queue.forget(mine)
    assert not await queue.release(mine)
    # The new owner's outcome stands.
    assert await other.settle(theirs, {"status": "send_at", "at": EPOCH + 999, "warned": True})
    row = await queue.get("m1")
    assert row is not None
    assert (row.status, row.next_attempt, row.lease_owner, row.lease_until) == (
        "send_at",
        EPOCH + 999,
        None,
        None,
    )
    assert row.meta["warned"] is True


async def test_settle_merges_the_new_state_and_ends_the_lease(queue: PgQueue) -> None:
    original = entry(1)
    await queue.add(original.to_meta(), b"x")
    [claim] = await queue.claim(1, lease=60)
    original.record_attempt(EPOCH, "451 4.4.1 try later")
    original.status = Status.SEND_AT
    original.next_attempt = EPOCH + 300
    assert await queue.settle(claim, original.state_meta())
    row = await queue.get("m1")
    assert row is not None
    assert row.meta == original.to_meta()
    assert (row.status, row.next_attempt, row.lease_owner) == ("send_at", EPOCH + 300, None)
    assert not await queue.settle(claim, original.state_meta())  # settled already


async def test_a_reply_text_jsonb_cannot_hold_is_kept_readable(queue: PgQueue) -> None:
    """A remote server's reply with NUL or undecodable octets must not wedge a message."""
    await queue.add(meta(1), b"x")
    [claim] = await queue.claim(1, lease=60)
    text = "550 bad\x00 reply \udcff"
    assert await queue.settle(claim, {"status": "frozen", "attempts": [[EPOCH, text]]})
    row = await queue.get("m1")
    assert row is not None
    assert row.meta["attempts"] == [[EPOCH, "550 bad\ufffd reply \ufffd"]]


async def test_forget_removes_the_message_and_its_body(
    queue: PgQueue, pg_pool: asyncpg.Pool
) -> None:
    await queue.add(meta(1), b"x" * 600_000)
    [claim] = await queue.claim(1, lease=60)
    assert await queue.forget(claim)
    assert await queue.get("m1") is None
    assert await pg_pool.fetchval("SELECT count(*) FROM message_chunks") == 0
    assert not await queue.forget(claim)


async def test_release_puts_a_message_back_as_it_was(queue: PgQueue, clock: Clock) -> None:
    await queue.add(meta(1, status=Status.SEND_AT, at=EPOCH), b"x")
    [claim] = await queue.claim(1, lease=60)
    assert await queue.release(claim)
    row = await queue.get("m1")
    assert row is not None
    assert (row.status, row.next_attempt, row.lease_owner) == ("send_at", EPOCH, None)
    assert not await queue.settle(claim, {"status": "frozen"})  # no longer held
    [again] = await queue.claim(1, lease=60)
    assert again.token == claim.token + 1


async def test_renewing_extends_only_the_leases_still_held(
    queue: PgQueue, pg_pool: asyncpg.Pool, clock: Clock
) -> None:
    for n in range(3):
        await queue.add(meta(n), b"x")
    claims = await queue.claim(3, lease=30)
    assert await queue.forget(claims[2])
    clock.now += 20
    assert await queue.renew(claims, lease=30) == {claims[2].id}
    for claim in claims[:2]:
        row = await queue.get(claim.id)
        assert row is not None
        assert row.lease_until == EPOCH + 50
    assert await queue.renew([], lease=30) == set()


async def test_renewals_are_hot_updates(pg_dsn: str, clock: Clock) -> None:
    """A renewal changes no indexed column, and fillfactor 70 leaves room on the page:
    200 leases renewed 5 times, 869 of 1000 updates HOT (55 at fillfactor 100; 20 times:
    97% against 15%, and a table a sixth of the size). One connection, so its statistics
    can be flushed on demand and read back."""
    pool = await connect_pool(pg_dsn, size=1)
    try:
        await migrate(pool)
        queue = PgQueue(pool, "node-a", clock=clock)
        for n in range(200):
            await queue.add(meta(n), b"x")
        claims = await queue.claim(200, lease=30)
        before = await _updates(pool)
        for _ in range(5):
            clock.now += 10
            assert await queue.renew(claims, lease=30) == set()
        updates, hot = (a - b for a, b in zip(await _updates(pool), before, strict=True))
        assert updates == 1000
        assert hot >= 800  # 869 here; 55 at fillfactor 100
        await queue.close()
    finally:
        await pool.close()


async def _updates(pool: asyncpg.Pool) -> tuple[int, int]:
    await pool.execute("SELECT pg_stat_force_next_flush()")  # flushed once it goes idle
    row = await pool.fetchrow(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE relid = 'messages'::regclass"
    )
    assert row is not None
    return row[0], row[1]


async def test_the_same_id_twice_is_refused(queue: PgQueue) -> None:
    await queue.add(meta(1), b"x")
    with pytest.raises(MessageExists, match="m1"):
        await queue.add(meta(1), b"y")
    with pytest.raises(MessageExists):
        await queue.add(meta(1), [b"y"])


async def test_sending_is_not_a_status_to_store(queue: PgQueue) -> None:
    with pytest.raises(ValueError, match="sending"):
        await queue.add(meta(1) | {"status": "sending"}, b"x")


@pytest.mark.parametrize(("limit", "lease"), [(0, 60), (-1, 60), (1, 0)])
async def test_a_claim_of_nothing_or_for_no_time_is_a_mistake(
    queue: PgQueue, limit: int, lease: float
) -> None:
    with pytest.raises(ValueError, match="claim needs"):
        await queue.claim(limit, lease)


async def test_add_many_adds_all_in_one_commit_or_none(pg_pool: asyncpg.Pool) -> None:
    await migrate(pg_pool)
    queue = PgQueue(pg_pool, "n1", clock=Clock())
    bodies = [b"x" * 10, b"y" * (CHUNK_SIZE + 5), b""]
    stored = await queue.add_many(
        [(meta(n), body) for n, body in zip((1, 2, 3), bodies, strict=True)]
    )
    assert [s.length for s in stored] == [10, CHUNK_SIZE + 5, 0]
    for n, body in zip((1, 2, 3), bodies, strict=True):
        assert b"".join([c async for c in queue.read_body(f"m{n}")]) == body
    with pytest.raises(MessageExists):
        await queue.add_many([(meta(4), b"new"), (meta(1), b"again")])
    assert await queue.get("m4") is None  # none of the failed batch was added
