"""The edge features' configuration ([server] proxied, [dnsbl], [rate_limits], [greylist],
[redis]) and their metrics on the control plane."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from smtpx.errors import ConfigError
from smtpx.mta.app import Mta
from smtpx.mta.config import DnsblZone, MtaConfig, RateRule
from smtpx.mta.greylist import GreylistGuard
from smtpx.mta.ratelimit import LocalCounters, RateLimitGuard, RedisCounters
from smtpx.mta.routing import FakeDns
from smtpx.testing.clock import run_virtual
from tests.interop.test_haproxy import dialogue
from tests.mta.helpers import config


def test_the_sections_load() -> None:
    loaded = MtaConfig.from_toml(
        """
        [server]
        listen = ["0.0.0.0:25", "127.0.0.1:2526"]
        submission = []
        proxied = ["127.0.0.1:2526"]
        proxy_from = ["127.0.0.1/32", "10.0.0.0/8"]
        proxy_timeout = "3s"
        [dnsbl]
        threshold = 2
        [[dnsbl.zones]]
        zone = "zen.example"
        codes = { "127.0.0.2" = 2, "127.0.0.10" = 0.5 }
        [[dnsbl.zones]]
        zone = "wl.example"
        weight = -3
        [[rate_limits.rules]]
        by = "network"
        recipients = 50
        window = "10m"
        ipv6_prefix = 56
        [greylist]
        enabled = true
        delay = "1m"
        [redis]
        url = "redis://127.0.0.1:6379/1"
        """
    )
    proxied, plain = sorted(loaded.listeners(), key=lambda x: not x.proxied)
    assert (proxied.port, proxied.proxied, plain.proxied) == (2526, True, False)
    assert proxied.proxy_from[1] == ipaddress.ip_network("10.0.0.0/8")
    assert loaded.server_config().proxy_timeout == 3.0
    assert loaded.dnsbl.zones == (
        DnsblZone(zone="zen.example", codes={"127.0.0.2": 2.0, "127.0.0.10": 0.5}),
        DnsblZone(zone="wl.example", weight=-3.0),
    )
    assert loaded.rate_limits.rules == (
        RateRule(by="network", recipients=50, window=600.0, ipv6_prefix=56),
    )
    assert (loaded.greylist.enabled, loaded.greylist.delay) == (True, 60.0)
    assert loaded.redis.url == "redis://127.0.0.1:6379/1"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"server": {"proxied": ["127.0.0.1:2600"]}}, "server.proxied[0]: 127.0.0.1:2600: not an"),
        (
            {"server": {"listen": ["127.0.0.1:25"], "proxied": ["127.0.0.1:25"]}},
            "server.proxy_from: proxied listeners need proxy_from",
        ),
        ({"dnsbl": {"zones": [{"weight": 1}]}}, "dnsbl.zones[0].zone: required"),
        (
            {"dnsbl": {"zones": [{"zone": "x.test", "codes": {"2": 1}}]}},
            "dnsbl.zones[0].codes.2: an answer is an IPv4 address",
        ),
        ({"dnsbl": {"threshold": "high"}}, "dnsbl.threshold: expected a number"),
        ({"rate_limits": {"rules": [{"messages": 1}]}}, "rate_limits.rules[0].by: required"),
        ({"rate_limits": {"rules": [{"by": "ip", "messages": 1}]}}, "rate_limits.rules[0].by:"),
        ({"rate_limits": {"rules": [{"by": "user"}]}}, "rate_limits.rules[0]: set messages"),
        (
            {"rate_limits": {"rules": [{"by": "network", "messages": 1, "ipv4_prefix": 33}]}},
            "rate_limits.rules[0].ipv4_prefix: a prefix length of at most 32",
        ),
        ({"greylist": {"delay": "soon"}}, "greylist.delay: not a duration"),
        ({"redis": {"url": "http://x"}}, "redis.url: a redis://"),
    ],
)
def test_errors_name_the_key(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_dict(document)
    assert str(caught.value).startswith(message), str(caught.value)


def test_an_smtps_listener_cannot_be_proxied(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="implicit-TLS listener cannot read a PROXY header"):
        MtaConfig.from_dict(
            {
                "server": {"smtps": ["127.0.0.1:465"], "proxied": ["127.0.0.1:465"]},
                "tls": {"cert_file": str(tmp_path / "c.pem")},
            }
        )


def test_the_guards_follow_the_configuration(tmp_path: Path) -> None:
    none = Mta(config(tmp_path))
    assert none.guards == []
    shared = Mta(
        config(
            tmp_path,
            rate_limits={"rules": [{"by": "client", "messages": 5}]},
            greylist={"enabled": True},
            redis={"url": "redis://127.0.0.1:1/0"},
        )
    )
    limits, greylist = shared.guards
    assert isinstance(limits, RateLimitGuard) and isinstance(limits.counters, RedisCounters)
    assert isinstance(greylist, GreylistGuard)
    alone = Mta(config(tmp_path, rate_limits={"rules": [{"by": "client", "messages": 5}]}))
    (local,) = alone.guards
    assert isinstance(local, RateLimitGuard) and isinstance(local.counters, LocalCounters)


async def test_metrics_of_the_edge(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        relay={"trusted_networks": ["127.0.0.1/32"]},
        server={"listen": ["127.0.0.1:0"], "proxied": ["127.0.0.1:0"], "proxy_from": ["::1"]},
        rate_limits={"rules": [{"by": "client", "messages": 1}]},
        greylist={"enabled": True},
    )
    async with (
        Mta(cfg, dns=FakeDns()) as running,
        TestClient(TestServer(running.control.app)) as api,
    ):
        running.control.token = "secret"
        api.session.headers["Authorization"] = "Bearer secret"
        refused = await dialogue(running.server.ports[0], [], source="127.0.0.2")
        text = await (await api.get("/metrics")).text()
    assert refused[0].code == 421
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("smtpx_proxy_refused_total", ("peer",))] == 1
    assert samples[("smtpx_proxy_refused_total", ("header",))] == 0
    assert samples[("smtpx_rate_limited_total", ("client", "messages"))] == 0
    assert samples[("smtpx_greylist_total", ("deferred",))] == 0
    assert samples[("smtpx_early_talkers_total", ("greeting",))] == 0


def test_greeting_delay_loads() -> None:
    assert MtaConfig.from_dict({}).server.greeting_delay == 0.0
    assert MtaConfig.from_dict({"server": {"greeting_delay": "6s"}}).server.greeting_delay == 6
    with pytest.raises(ConfigError, match=r"server\.greeting_delay: not a duration"):
        MtaConfig.from_dict({"server": {"greeting_delay": "soon"}})
    with pytest.raises(ConfigError, match=r"server\.greeting_delay: must be under 5 minutes"):
        MtaConfig.from_dict({"server": {"greeting_delay": "5m"}})
    assert MtaConfig.from_dict({"server": {"greeting_delay": "0"}}).server.greeting_delay == 0


def test_untrusted_clients_of_listen_wait_for_the_greeting(tmp_path: Path) -> None:
    """``greeting_delay`` on a real MTA (the virtual clock skips the waits): an untrusted
    client is greeted after the pause, a trusted one at once, and one that talks first
    gets 554 and is counted; the LMTP listener never pauses."""
    cfg = config(
        tmp_path,
        server={"greeting_delay": "6s", "lmtp": ["127.0.0.1:0"]},
        relay={"trusted_networks": ["127.0.0.2/32"]},
    )

    async def scenario() -> tuple[list[tuple[list[str], float]], float]:
        loop = asyncio.get_running_loop()
        got: list[tuple[list[str], float]] = []
        async with Mta(cfg, dns=FakeDns()) as running:
            smtp, lmtp = running.server.ports
            for port, source, first in (
                (smtp, "127.0.0.1", b""),
                (smtp, "127.0.0.2", b""),
                (lmtp, "127.0.0.1", b""),
                (smtp, "127.0.0.1", b"EHLO bot.example\r\n"),
            ):
                start = loop.time()
                replies = await dialogue(port, [b"QUIT\r\n"], source=source, first=first)
                got.append(([str(r) for r in replies], loop.time() - start))
            early = running.server.stats["early_talkers_greeting"]
        return got, early

    (untrusted, trusted, lmtp, talker), early = run_virtual(scenario())
    assert untrusted[0] == ["220 mx.test ESMTP smtpx", "221 2.0.0 Bye"]
    assert 6.0 <= untrusted[1] < 6.5
    assert trusted[0] == untrusted[0] and trusted[1] < 0.5
    assert lmtp[0][0].startswith("220 ") and lmtp[1] < 0.5
    assert talker[0] == ["554 mx.test Protocol error: talked before the greeting"]
    assert talker[1] < 0.5
    assert early == 1


async def test_untrusted_clients_of_listen_must_wait_for_their_replies(tmp_path: Path) -> None:
    """``reject_unauth_pipelining``: EHLO with MAIL in one packet from an untrusted
    client gets 554 and the end; the same from a trusted client is served."""
    cfg = config(
        tmp_path,
        server={"reject_unauth_pipelining": True},
        relay={"trusted_networks": ["127.0.0.2/32"]},
    )
    hasty = [b"EHLO bot.example\r\nMAIL FROM:<a@example.com>\r\n", b"QUIT\r\n"]
    async with Mta(cfg, dns=FakeDns()) as running:
        port = running.server.ports[0]
        untrusted = await dialogue(port, hasty, source="127.0.0.1")
        trusted = await dialogue(port, hasty, source="127.0.0.2")
        counted = running.server.stats["early_talkers_pipelining"]
    assert [str(r) for r in untrusted[1:]] == [
        "554 5.5.0 Protocol error: improper use of SMTP command pipelining"
    ]
    assert [r.code for r in trusted] == [220, 250, 250]  # greeting, EHLO, then MAIL's
    assert counted == 1
    assert MtaConfig.from_dict({}).server.reject_unauth_pipelining is False
