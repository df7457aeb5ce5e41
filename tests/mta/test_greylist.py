"""Greylisting: triplets on a fake clock, in memory and in a real Redis (redis-server on
127.0.0.1, killed mid-test), and through the MTA."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from smtpx.envelope import EnvelopeId
from smtpx.mta.app import Mta
from smtpx.mta.config import GreylistSettings, RedisSettings
from smtpx.mta.greylist import GreylistGuard, MemoryTriplets, RedisTriplets, triplet
from smtpx.mta.routing import FakeDns
from smtpx.mta.shared import RETRY_AFTER, connect
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.params import MailParams
from smtpx.server import Reject, Session, Transaction
from tests.interop.test_haproxy import dialogue
from tests.mta.helpers import config, maildir, wait_until

SETTINGS = GreylistSettings(enabled=True, delay=300, retry_window=3600, expire=86400)
ALICE = Address("alice", "example.org")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def session(ip: str = "192.0.2.7") -> Session:
    return Session(id="t", local=None, remote=(ip, 1000), listener="smtp 0.0.0.0:25")


def transaction(sender: str = "bob@sender.test") -> Transaction:
    return Transaction(id=EnvelopeId.create(), sender=Sender.of(sender), params=MailParams())


async def outcome(guard: GreylistGuard, ip: str = "192.0.2.7", to: Address = ALICE) -> str:
    try:
        await guard.rcpt_to(session(ip), transaction(), to)
    except Reject as refused:
        return str(refused.reply)
    return "ok"


def test_triplets_group_clients_by_network() -> None:
    assert (
        triplet(SETTINGS, "192.0.2.7", "B@X.test", "A@y.TEST") == "192.0.2.0/24 b@x.test a@y.test"
    )
    assert triplet(SETTINGS, "2001:db8:1:2::7", "", "a@y") == "2001:db8:1:2::/64  a@y"
    assert triplet(SETTINGS, "::ffff:192.0.2.7", "b", "a") == "192.0.2.0/24 b a"
    assert triplet(SETTINGS, "unix", "b", "a") is None


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        yield MemoryTriplets(SETTINGS)
        return
    redis = request.getfixturevalue("redis_server")
    client = connect(RedisSettings(url=redis.url))
    yield RedisTriplets(SETTINGS, client, "t:")
    await client.aclose()


async def test_the_first_attempt_waits_a_retry_after_the_delay_passes(store: Any) -> None:
    clock = Clock()
    guard = GreylistGuard(SETTINGS, store, clock=clock)
    assert await outcome(guard) == "451 4.7.1 Greylisted, try again in 300 seconds"
    clock.now += 100
    assert await outcome(guard) == "451 4.7.1 Greylisted, try again in 200 seconds"
    assert await outcome(guard, to=Address("carol", "example.org")) == (
        "451 4.7.1 Greylisted, try again in 300 seconds"  # another triplet
    )
    clock.now += 200
    assert await outcome(guard, "192.0.2.99") == "ok"  # the same /24 retried
    assert await outcome(guard) == "ok"
    clock.now += 80000  # passed triplets are remembered for expire, renewed by each use
    assert await outcome(guard) == "ok"
    assert await outcome(guard, "198.51.100.7") == "451 4.7.1 Greylisted, try again in 300 seconds"
    assert (guard.stats["deferred"], guard.stats["passed"], guard.stats["known"]) == (4, 1, 2)
    if isinstance(store, MemoryTriplets):
        clock.now += 3601  # a retry too late starts over
        assert (
            await outcome(guard, "198.51.100.7") == "451 4.7.1 Greylisted, try again in 300 seconds"
        )
        clock.now += 86401
        assert (await outcome(guard, "192.0.2.7")).startswith("451")
    else:
        key = "t:grey:*"
        ttls = [await store.client.ttl(name) for name in await store.client.keys(key)]
        assert sorted(ttls)[-1] == 86400  # passed: expire
        assert sorted(ttls)[0] <= 3600  # waiting: retry_window from first sight


async def test_who_is_never_greylisted() -> None:
    guard = GreylistGuard(SETTINGS, MemoryTriplets(SETTINGS), clock=Clock())
    own = session()
    own.data["trusted"] = True
    allowed = session()
    allowed.data["dnswl"] = True
    submitting = session()
    submitting.login("alice")
    other = Session(id="t", local=None, remote=("192.0.2.7", 1), listener="submission [::]:587")
    for each in (own, allowed, submitting, other):
        await guard.rcpt_to(each, transaction(), ALICE)
    assert guard.stats["deferred"] == 0


async def test_when_redis_is_down_mail_passes(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(RedisSettings(url=redis_server.url))
    monotonic = Clock(0.0)
    guard = GreylistGuard(SETTINGS, RedisTriplets(SETTINGS, client, "t:"), monotonic=monotonic)
    try:
        assert (await outcome(guard)).startswith("451")
        redis_server.kill()
        assert await outcome(guard) == "ok"
        assert await outcome(guard, to=Address("new", "example.org")) == "ok"
        assert guard.stats["skipped"] == 2 and guard.outage.failures == 1
        assert "greylisting on this node alone" in caplog.text
        redis_server.start()
        monotonic.now += RETRY_AFTER
        assert (await outcome(guard)).startswith("451")  # a fresh Redis: greylisted again
    finally:
        await client.aclose()


async def test_the_mta_greylists_at_rcpt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, relay={"trusted_networks": ["127.0.0.1/32"]}, greylist={"enabled": True})
    send = [
        b"EHLO c\r\n",
        b"MAIL FROM:<bob@sender.test>\r\n",
        b"RCPT TO:<user@example.org>\r\n",
        b"DATA\r\n",
        b"Subject: x\r\n\r\nx\r\n.\r\n",
    ]
    caplog.set_level(logging.INFO)
    async with Mta(cfg, dns=FakeDns()) as mta:
        port = mta.server.ports[0]
        first = await dialogue(port, send[:4], source="127.0.0.2")
        (guard,) = mta.guards
        assert isinstance(guard, GreylistGuard)
        guard.clock = lambda: time.time() + 301  # the sender's retry, 5 minutes later
        retry = await dialogue(port, send, source="127.0.0.2")
        await wait_until(lambda: maildir(tmp_path, "user@example.org"))
    assert [str(r) for r in first[2:]] == [
        "250 2.1.0 Ok",
        "451 4.7.1 Greylisted, try again in 300 seconds",
        "554 5.5.1 No valid recipients",
    ]
    assert [r.code for r in retry] == [220, 250, 250, 250, 354, 250]
