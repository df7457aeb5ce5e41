"""A destination found unreachable is suspended for a while (smtpx.spool.unreachable), on
both engines: its new mail is spooled deferred without a connection, its mail coming back
from a retry wait is deferred again without one (once per suspension, using up an
interval), a message's last attempt is always made, mail an operator releases is tried,
and a session that opens lifts the suspension."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from smtpx.envelope import RetryInterval
from smtpx.spool.message import Status
from smtpx.spool.spool import Delivery, SpoolConfig
from smtpx.spool.unreachable import LIMIT, SUSPENDED, Unreachable
from smtpx.testing import MemoryNetwork
from tests.spool.pg.helpers import Clock
from tests.spool.pg.test_engines import engine_configs, mail, running

MINUTE = 60.0


@pytest.fixture(params=["journal", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., SpoolConfig]:
    return engine_configs(request, tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def retrying(n: int, *intervals: str) -> Delivery:
    delivery = mail(n)
    return Delivery(
        delivery.envelope,
        next_hops=delivery.next_hops,
        retry_intervals=tuple(RetryInterval.parse(i) for i in intervals),
    )


async def test_new_mail_for_an_unreachable_destination_is_spooled_deferred(
    engine: Callable[..., SpoolConfig], clock: Clock
) -> None:
    network = MemoryNetwork(down={"mx.test"})
    # No unreachable_backoff: the suspension lasts the spool's first retry interval (1m).
    async for run in running(engine(), network, clock):
        (first,) = await run.spool.add([mail(1)])
        await run.advance()
        assert network.refused["mx.test"] == 1
        (second,) = await run.spool.add([mail(2)])
        entry = await run.spool.find(second)
        assert entry.status is Status.SEND_AT  # never due now: no claim, no attempt
        assert entry.next_attempt == pytest.approx(clock.now + 600, abs=1)  # its interval
        assert entry.retry_intervals == [] and entry.attempt_count == 1
        reason = entry.last_attempt[1] if entry.last_attempt else ""
        assert reason.startswith(SUSPENDED + "no next hop could be reached")
        await run.advance()
        assert network.refused["mx.test"] == 1
        assert run.spool.stats["deferred"] == 2
        # The suspension ends with the first retry interval: new mail is tried again.
        network.down.clear()
        await run.advance(MINUTE + 1)
        await run.spool.add([mail(3)])
        await run.advance()
        assert [m.id for m in await run.spool.list_all()] == [first, second]
        await run.advance(600)  # the two deferred ones come due and go
        assert await run.spool.list_all() == []
    assert sorted(m.data.split(b".body ")[1] for m in network.received("mx.test")) == [
        b"1\r\n",
        b"2\r\n",
        b"3\r\n",
    ]


async def test_mail_due_while_suspended_is_deferred_once_without_a_connection(
    engine: Callable[..., SpoolConfig], clock: Clock
) -> None:
    network = MemoryNetwork(down={"mx.test"})
    async for run in running(engine(unreachable_backoff=MINUTE), network, clock):
        (early,) = await run.spool.add([retrying(1, "5s", "5s", "5s")])
        await run.advance()
        assert network.refused["mx.test"] == 1
        suspended_until = clock.now + MINUTE
        await run.advance(5)  # due again within the suspension: deferred, no connection
        entry = await run.spool.find(early)
        assert network.refused["mx.test"] == 1
        assert entry.status is Status.SEND_AT
        assert entry.next_attempt == pytest.approx(suspended_until)  # not before its end
        assert entry.retry_intervals == ["5s"] and entry.attempt_count == 2
        await run.advance(suspended_until - clock.now)  # the suspension is over: tried
        assert network.refused["mx.test"] == 2
        # The last attempt is always made, suspended or not.
        await run.advance(5)
        entry = await run.spool.find(early)
        assert network.refused["mx.test"] == 3
        assert entry.status is Status.FROZEN and entry.recipients == []


async def test_an_operator_s_send_is_tried_and_a_session_lifts_the_suspension(
    engine: Callable[..., SpoolConfig], clock: Clock
) -> None:
    network = MemoryNetwork(down={"mx.test"})
    async for run in running(engine(unreachable_backoff=3600), network, clock):
        await run.spool.add([mail(1)])
        await run.advance()
        (waiting,) = await run.spool.add([mail(2)])
        assert (await run.spool.find(waiting)).status is Status.SEND_AT
        assert network.refused["mx.test"] == 1
        network.down.clear()
        assert await run.spool.send([waiting]) == 1
        await run.advance()
        assert len(network.received("mx.test")) == 1  # tried at once, and delivered
        await run.spool.add([mail(3)])  # the session lifted the suspension
        await run.advance()
        assert len(network.received("mx.test")) == 2


async def test_no_suspension_with_a_zero_backoff(
    engine: Callable[..., SpoolConfig], clock: Clock
) -> None:
    network = MemoryNetwork(down={"mx.test"})
    async for run in running(engine(unreachable_backoff=0.0), network, clock):
        for n in range(3):
            await run.spool.add([mail(n)])
            await run.advance()
        assert network.refused["mx.test"] == 3  # each message tried


def test_the_memory_expires_forgets_and_stays_bounded() -> None:
    clock = Clock()
    backoff = [30.0]
    down = Unreachable(clock, lambda: backoff[0])
    down.mark("route:a", "refused")
    suspension = down.suspended("route:a")
    assert suspension is not None and suspension.until == clock.now + 30
    assert suspension.reason == SUSPENDED + "refused"
    clock.now += 30
    assert down.suspended("route:a") is None and len(down) == 0
    backoff[0] = 0.0  # (a reload turned it off)
    down.mark("route:a", "refused")
    assert down.suspended("route:a") is None
    backoff[0] = 30.0
    for n in range(LIMIT):
        down.mark(f"route:{n}", "refused")
    down.mark("route:one-more", "refused")  # full of live entries: not remembered
    assert down.suspended("route:one-more") is None and len(down) == LIMIT
    clock.now += 31
    down.mark("route:one-more", "refused")  # the expired ones make room
    assert down.suspended("route:one-more") is not None and len(down) == 1
    down.clear("route:one-more")
    assert down.suspended("route:one-more") is None
