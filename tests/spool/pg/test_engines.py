"""One conformance suite for the spool's two stores: every behaviour that is not
journal-specific runs on the local journal and on the shared PostgreSQL queue.

Time is a clock the test moves (``Clock``) on the real event loop (PostgreSQL is on a
real socket: a virtual loop would skip its waits); after moving it the test nudges the
store (``wakeup``), so nothing sleeps for real beyond a few loop turns.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from smtpx.client import ClientConfig
from smtpx.envelope import Envelope, HostPort, RetryInterval
from smtpx.protocol import Rcpt, Reply
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.pg.notify import DueListener
from smtpx.spool.spool import Delivery, Spool, SpoolConfig, SpoolError
from smtpx.spool.types import PostgresSettings
from smtpx.testing import Handler, MemoryNetwork
from tests.spool.pg.helpers import Clock

MX = HostPort("mx.test", 25)


class Refuses(Handler):
    """Refuses r550@ for good and r451@ for now."""

    def rcpt(self, command: Rcpt) -> Reply:
        local = command.recipient.local_part
        if local in ("r550", "r451"):
            code = int(local[1:])
            return Reply.of(code, "refused for the test", f"{code // 100}.1.1")
        return super().rcpt(command)


def mail(n: int, *recipients: str, params: dict[str, str] | None = None) -> Delivery:
    envelope = Envelope.create(
        sender="sender@example.com",
        recipients=list(recipients) or [f"u{n}@example.org"],
        recipient_params=params or {},
        message=f"From: sender@example.com\r\nSubject: {n}\r\n\r\n.body {n}\r\n".encode(),
    )
    return Delivery(envelope, next_hops=(MX,), retry_intervals=(RetryInterval.parse("10m"),))


@pytest.fixture(params=["journal", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., SpoolConfig]:
    """A SpoolConfig factory for this test's engine (the same store across restarts)."""
    return engine_configs(request, tmp_path)


def engine_configs(
    request: pytest.FixtureRequest, tmp_path: Path, **defaults: object
) -> Callable[..., SpoolConfig]:
    """SpoolConfigs for the engine ``request.param`` names ("journal" or "postgresql": a
    fresh schema of this test's own), with ``defaults`` under each call's values."""
    postgresql = None
    if request.param == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        postgresql = PostgresSettings(dsn=dsn, node="node-a", lease=60)

    def config(**values: object) -> SpoolConfig:
        settings: dict[str, object] = {
            "directory": tmp_path / "spool",
            "fsync": FsyncPolicy.NEVER,
            "ping_interval": 1e9,
            "postgresql": postgresql,
            **defaults,
        }
        settings.update(values)
        return SpoolConfig(**settings)  # type: ignore[arg-type]

    return config


class Running:
    def __init__(self, spool: Spool, clock: Clock, network: MemoryNetwork) -> None:
        self.spool, self.clock, self.network = spool, clock, network

    async def advance(self, seconds: float = 0.0) -> None:
        """Move the clock, wake the scheduler, and wait until nothing is due or being
        sent (a few loop turns and database round trips)."""
        self.clock.now += seconds
        self.spool.store.wakeup.set()
        for _ in range(400):
            await asyncio.sleep(0.01)
            if not any(self._busy(m) for m in await self.spool.list_all()):
                return
        raise AssertionError("the spool did not settle down")

    def _busy(self, message: SpooledMessage) -> bool:
        if message.status in (Status.SEND_NOW, Status.SENDING):
            return True
        due = message.next_attempt
        return message.status is Status.SEND_AT and due is not None and due <= self.clock.now


async def running(
    config: SpoolConfig, network: MemoryNetwork, clock: Clock
) -> AsyncIterator[Running]:
    async with Spool(
        config, client_config=ClientConfig.for_testing(), opener=network, clock=clock
    ) as spool:
        yield Running(spool, clock, network)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_message_is_delivered_and_leaves_the_spool(
    engine: Callable[..., SpoolConfig], clock: Clock
) -> None:
    network = MemoryNetwork()
    async for run in running(engine(), network, clock):
        (message_id,) = await run.spool.add([mail(1)])
        await run.advance()
        assert await run.spool.list_all() == []
        with pytest.raises(SpoolError):
            await run.spool.find(message_id)
    (received,) = network.received("mx.test")
    assert received.data.endswith(b"\r\n.body 1\r\n")


async def test_a_refusal_is_retried_then_bounced_and_the_rest_delivered(
    engine: Callable[..., SpoolConfig], clock: Clock
) -> None:
    network = MemoryNetwork(default=Refuses)
    async for run in running(engine(), network, clock):
        (message_id,) = await run.spool.add([mail(1, "ok@example.org", "r451@example.org")])
        await run.advance()
        entry = await run.spool.find(message_id)
        assert entry.status is Status.SEND_AT and entry.recipients == ["r451@example.org"]
        assert entry.next_attempt == pytest.approx(clock.now + 600, abs=1)
        await run.advance(601)  # the last interval: the recipient fails for good
        entry = await run.spool.find(message_id)
        assert entry.status is Status.FROZEN
        assert [r for r, _ in entry.failed] == ["r451@example.org"]
        bounces = [m for m in await run.spool.list_all() if m.sender == "<>"]
        (bounce,) = bounces
        notice = email.message_from_bytes(
            await run.spool.read_message(bounce.id), policy=email.policy.default
        )
        assert "r451@example.org" in notice.as_string()
    assert [len(m.recipients) for m in network.received("mx.test")] == [1]  # ok@ once


async def test_operators_freeze_send_remove_recover_purge(
    engine: Callable[..., SpoolConfig], clock: Clock
) -> None:
    network = MemoryNetwork(down={"mx.test"})
    async for run in running(engine(), network, clock):
        (message_id,) = await run.spool.add([mail(1)], frozen=True)
        spool = run.spool
        assert (await spool.find(message_id)).status is Status.FROZEN
        await spool.remove([message_id])
        assert (await spool.find(message_id)).status is Status.REMOVED
        await spool.recover([message_id])
        assert (await spool.find(message_id)).status is Status.FROZEN
        network.down.clear()
        assert await spool.send([message_id]) == 1
        await run.advance()
        assert await spool.list_all() == []
        (other,) = await spool.add([mail(2)], frozen=True)
        await spool.remove([other])
        await spool.purge([other])
        assert await spool.list_all() == []
    assert len(network.received("mx.test")) == 1


async def test_state_and_dsn_parameters_survive_a_restart(
    engine: Callable[..., SpoolConfig], clock: Clock
) -> None:
    network = MemoryNetwork(down={"mx.test"})
    params = {"a@example.org": "NOTIFY=SUCCESS ORCPT=rfc822;A@x.org"}
    async for run in running(engine(), network, clock):
        (waiting,) = await run.spool.add([mail(1, "a@example.org", params=params)])
        (frozen,) = await run.spool.add([mail(2)], frozen=True)
        await run.advance()
        assert (await run.spool.find(waiting)).status is Status.SEND_AT
    async for run in running(engine(), network, clock):
        entry = await run.spool.find(waiting)
        assert entry.status is Status.SEND_AT and entry.attempt_count == 1
        assert entry.rcpt_params == params
        assert (await run.spool.find(frozen)).status is Status.FROZEN
        network.down.clear()
        await run.advance(601)
        assert [m.id for m in await run.spool.list_all()] == [frozen]
    (received,) = network.received("mx.test")
    (rcpt,) = received.recipients
    assert rcpt.params.notify == ("SUCCESS",)  # passed on to the next hop (it offers DSN)


async def test_a_released_message_goes_without_the_wake_up_hint(
    engine: Callable[..., SpoolConfig], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's own scheduler wakes for an operator's send even when no NOTIFY hint
    arrives (its LISTEN connection still opening, or lost): here it never opens."""

    async def no_listen(*args: object, **kwargs: object) -> DueListener:
        raise OSError("LISTEN refused (test)")

    monkeypatch.setattr(DueListener, "open", no_listen)
    network = MemoryNetwork()
    async for run in running(engine(), network, clock):
        (message_id,) = await run.spool.add([mail(1)], frozen=True)
        await run.advance()
        assert await run.spool.send([message_id]) == 1
        # Not run.advance(): it sets the wake-up itself. Only the store may wake it here.
        for _ in range(400):
            if not await run.spool.list_all():
                break
            await asyncio.sleep(0.01)
        assert await run.spool.list_all() == []
    assert len(network.received("mx.test")) == 1
