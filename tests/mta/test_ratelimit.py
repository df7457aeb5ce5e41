"""Rate limits: the sliding window on a fake clock, the guard's replies, and the counters
shared through a real Redis (redis-server on 127.0.0.1), killed mid-test to show the
node-local fallback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from smtpx.envelope import EnvelopeId
from smtpx.mta.app import Mta
from smtpx.mta.config import RateLimitSettings, RateRule, RedisSettings
from smtpx.mta.ratelimit import Check, LocalCounters, RateLimitGuard, RedisCounters
from smtpx.mta.routing import FakeDns
from smtpx.mta.shared import RETRY_AFTER, connect
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.params import MailParams
from smtpx.server import Reject, Session, Transaction
from tests.interop.test_haproxy import dialogue
from tests.mta.helpers import config


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def session(ip: str = "192.0.2.7", *, user: str | None = None) -> Session:
    found = Session(id="t", local=None, remote=(ip, 1000), listener="smtp 0.0.0.0:25")
    if user is not None:
        found.login(user)
    return found


def transaction(sender: str = "a@Example.COM") -> Transaction:
    return Transaction(id=EnvelopeId.create(), sender=Sender.of(sender), params=MailParams())


def test_the_window_slides() -> None:
    counters, check = LocalCounters(), [Check("client:x:m0:60", 10, 60.0)]
    start = 600.0  # the start of a bucket

    def allowed(at: float) -> int:
        """How many more are let through at ``at`` (counting them)."""
        taken = 0
        while counters.take(check, start + at) is None:
            taken += 1
        return taken

    assert allowed(0) == 10
    assert allowed(59) == 0
    assert allowed(60) == 0  # the previous bucket still counts in full
    assert allowed(66) == 1  # a tenth of it has slid out: 9 + 1
    assert allowed(90) == 4  # half of it: 5 + 1 + 4
    assert allowed(120) == 5  # the last bucket (5) in full
    assert counters.take(check, start + 180, count=False) is None  # only 5 count now
    assert allowed(240) == 10  # nothing in the window


async def test_each_key_and_its_replies() -> None:
    rules = (
        RateRule(by="client", messages=2, window=3600),
        RateRule(by="network", recipients=3, window=60, ipv4_prefix=24),
        RateRule(by="user", messages=1, window=60),
        RateRule(by="sender_domain", recipients=5, window=60),
    )
    clock = Clock()
    guard = RateLimitGuard(RateLimitSettings(rules=rules), LocalCounters(), clock=clock)
    one, other = session("192.0.2.7"), session("192.0.2.8")
    for _ in range(2):
        await guard.mail_from(one, transaction())  # MAIL counts nothing
        await guard.accept_data(one, transaction())
    with pytest.raises(Reject) as refused:
        await guard.mail_from(one, transaction())
    assert str(refused.value.reply) == (
        "450 4.7.1 Rate limit: too many messages from client 192.0.2.7 (2 per 1h00m),"
        " try again later"
    )
    rcpt = Address("x", "example.org")
    await guard.rcpt_to(one, transaction("b@b.test"), rcpt)
    await guard.rcpt_to(other, transaction("b@b.test"), rcpt)
    await guard.rcpt_to(other, transaction("b@b.test"), rcpt)
    with pytest.raises(Reject) as network:
        await guard.rcpt_to(one, transaction("b@b.test"), rcpt)
    assert str(network.value.reply).startswith(
        "452 4.7.1 Rate limit: too many recipients from network 192.0.2.0/24 (3 per 1m00s)"
    )
    clock.now += 120
    user = session("198.51.100.1", user="alice")
    await guard.accept_data(user, transaction())
    with pytest.raises(Reject, match="from user alice"):
        await guard.accept_data(session("203.0.113.1", user="alice"), transaction())
    for n in range(5):
        await guard.rcpt_to(session(f"203.0.{n}.1"), transaction("z@Big.TEST"), rcpt)
    with pytest.raises(Reject, match=r"from domain big\.test"):
        await guard.rcpt_to(session("203.0.99.1"), transaction("y@big.test"), rcpt)
    trusted = session("192.0.2.7")
    trusted.data["trusted"] = True
    await guard.mail_from(trusted, transaction())  # exempt
    await guard.rcpt_to(session("2001:db8::1"), transaction("<>"), rcpt)  # null sender
    assert guard.stats["client messages"] == 1 and guard.stats["network recipients"] == 1


async def test_nodes_share_counts_through_redis_and_fall_back_when_it_dies(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = RedisSettings(url=redis_server.url, timeout=1.0)
    monotonic = Clock(0.0)
    nodes = [RedisCounters(connect(settings), "t:", monotonic=monotonic) for _ in range(2)]
    check = [Check("client:192.0.2.7:m0:3600", 4, 3600.0)]
    now = 3600.0 * 1000
    try:
        for node in (*nodes, *nodes):  # two each: four, shared
            assert await node.hit(check, now, count=True) is None
        # MAIL's early check reads the node's own counts (two of the four): no round trip.
        assert await nodes[0].hit(check, now, count=False) is None
        assert await nodes[1].hit(check, now, count=True) == 0
        redis_server.kill()
        caplog.set_level(logging.WARNING, logger="smtpx.mta.redis")
        # Redis is down: each node counts alone, from what it let through itself (two).
        assert await nodes[0].hit(check, now, count=True) is None
        assert await nodes[0].hit(check, now, count=True) is None
        assert await nodes[0].hit(check, now, count=True) == 0
        assert await nodes[1].hit(check, now, count=True) is None
        assert nodes[0].outage.failures == 1  # then it stopped asking, for RETRY_AFTER
        assert "rate limits on this node alone" in caplog.text
        assert await nodes[1].hit(check, now, count=True) is None
        assert await nodes[1].hit(check, now, count=True) == 0
        # Redis comes back (empty: this one keeps nothing on disk): the nodes share its
        # counts again once RETRY_AFTER has passed; what they counted alone is not in it.
        redis_server.start()
        assert await nodes[0].hit(check, now, count=True) == 0  # not asked yet
        monotonic.now += RETRY_AFTER
        for node in (*nodes, *nodes):
            assert await node.hit(check, now, count=True) is None
        assert await nodes[0].hit(check, now, count=True) == 0
        assert "rate limits shared again" in caplog.text
    finally:
        for node in nodes:
            await node.client.aclose()


async def test_the_mta_limits_a_client_across_sessions(tmp_path: Path, redis_server: Any) -> None:
    cfg = config(
        tmp_path,
        relay={"trusted_networks": ["127.0.0.1/32"]},
        rate_limits={"rules": [{"by": "client", "messages": 2, "window": "1h"}]},
        redis={"url": redis_server.url},
    )
    send = [
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<user@example.org>\r\n",
        b"DATA\r\n",
        b"Subject: x\r\n\r\nx\r\n.\r\n",
    ]
    async with Mta(cfg, dns=FakeDns()) as mta:
        port = mta.server.ports[0]
        first = await dialogue(port, [b"EHLO c\r\n", *send, *send], source="127.0.0.2")
        second = await dialogue(port, [b"EHLO c\r\n", *send[:1]], source="127.0.0.2")
        trusted = await dialogue(port, [b"EHLO c\r\n", *send], source="127.0.0.1")
    assert [r.code for r in first] == [220, 250, 250, 250, 354, 250, 250, 250, 354, 250]
    assert str(second[-1]).startswith("450 4.7.1 Rate limit: too many messages from client 127")
    assert [r.code for r in trusted][-1] == 250
