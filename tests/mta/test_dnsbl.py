"""DNS block and allow lists at connect, against real name servers (the DNS lab: NSD on
127.0.0.1 serving the lists as zones)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.resolver
import pytest

from smtpx.mta.app import Mta
from smtpx.mta.config import DnsblSettings, DnsblZone
from smtpx.mta.dnsbl import DnsblGuard, query_name
from smtpx.mta.routing import FakeDns
from smtpx.server import Reject, Session
from smtpx.testing.clock import run_virtual
from smtpx.testing.dns import DnsLab, Zone
from tests.interop.test_haproxy import dialogue
from tests.mta.helpers import config
from tests.protocol.test_proxy import v2

StartLab = Callable[..., DnsLab]
NASTY = "Blocked\x07 see\thttps://bl.test/q?127.0.0.2 " + "é" + "x" * 300


def nibbles(address: str) -> str:
    return query_name(address, "")[:-1]  # type: ignore[index]


def zones() -> list[Zone]:
    bl = Zone("bl.test")
    bl.add("2.0.0.127", "A", "127.0.0.2").txt("2.0.0.127", "Listed: see https://bl.test/")
    bl.add("3.0.0.127", "A", "127.0.0.10")  # a "policy" listing, weighed by its code
    bl.add("4.0.0.127", "A", "127.0.0.1")  # listing the world: broken
    bl.add("5.0.0.127", "A", "127.255.255.254")  # "you asked through a public resolver"
    bl.add("6.0.0.127", "A", "127.0.0.2")
    bl.add("7.0.0.127", "A", "127.0.0.2").txt("7.0.0.127", NASTY)
    bl.add(nibbles("2001:db8::99"), "A", "127.0.0.2").txt(nibbles("2001:db8::99"), "v6 listed")
    bl2 = Zone("bl2.test").add("2.0.0.127", "A", "127.0.0.4").add("3.0.0.127", "A", "127.0.0.4")
    wl = Zone("wl.test").add("6.0.0.127", "A", "127.0.0.2")  # an allow list
    return [bl, bl2, wl]


SETTINGS = DnsblSettings(
    zones=(
        DnsblZone(zone="bl.test", weight=1.0, codes={"127.0.0.2": 1.0, "127.0.0.10": 0.5}),
        DnsblZone(zone="bl2.test", weight=0.5),
        DnsblZone(zone="wl.test", weight=-5.0),
        DnsblZone(zone="unserved.test", weight=1.0),  # the server refuses: an error
    ),
    threshold=1.0,
)


def session(ip: str, listener: str = "smtp 127.0.0.1:25") -> Session:
    return Session(id="t", local=None, remote=(ip, 1234), listener=listener)


def test_query_names() -> None:
    assert query_name("192.0.2.99", "zen.example") == "99.2.0.192.zen.example"
    assert query_name("::ffff:192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    six = query_name("2001:db8::1", "bl.test")
    assert six == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.test"
    assert query_name("/run/sock", "bl.test") is None


async def test_listings_weights_and_errors(dns_lab: StartLab) -> None:
    guard = DnsblGuard(SETTINGS, dns_lab(*zones()).resolver())

    async def score(ip: str) -> tuple[float, list[str]]:
        found = await guard.check(ip)
        assert found is not None
        errors = [f"{x.zone.zone}: {x.error}" for x in found if x.error]
        return sum(x.weight for x in found), errors

    assert await score("127.0.0.2") == (1.5, ["unserved.test: NoNameservers"])
    assert (await score("127.0.0.3"))[0] == 1.0  # 0.5 by its code + 0.5 from bl2
    assert (await score("127.0.0.8"))[0] == 0.0
    assert (await score("127.0.0.6"))[0] == -4.0  # the allow list outweighs
    assert (await score("127.0.0.4"))[1][0] == "bl.test: error answer 127.0.0.1"
    assert (await score("127.0.0.5"))[1][0] == "bl.test: error answer 127.255.255.254"
    assert guard.stats["listed bl.test"] == 3
    assert guard.stats["error bl.test"] == 2
    assert guard.stats["error unserved.test"] == 6


async def test_554_with_the_lists_text_and_an_allow_list_mark(dns_lab: StartLab) -> None:
    guard = DnsblGuard(SETTINGS, dns_lab(*zones()).resolver())
    with pytest.raises(Reject) as refused:
        await guard.connect(session("127.0.0.2"))
    assert str(refused.value.reply) == (
        "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test, bl2.test:"
        " Listed: see https://bl.test/"
    )
    with pytest.raises(Reject) as nasty:
        await guard.connect(session("127.0.0.7"))
    text = nasty.value.reply.text
    assert text.isascii() and text.isprintable()
    assert text.endswith("x...") and len(text.split("bl.test: ")[1]) == 200
    allowed = session("127.0.0.6")
    await guard.connect(allowed)
    assert allowed.data["dnswl"] is True
    trusted = session("127.0.0.2")
    trusted.data["trusted"] = True
    await guard.connect(trusted)  # our own clients are not checked
    await guard.connect(session("127.0.0.2", "submission 127.0.0.1:587"))  # not on "smtp"
    assert guard.stats["rejected"] == 2


def test_the_lists_together_get_timeout_then_count_as_errors() -> None:
    class Silent(dns.asyncresolver.Resolver):
        async def resolve(self, *args: Any, **kwargs: Any) -> Any:
            if str(args[0]).endswith("slow.test"):
                await asyncio.sleep(3600)
            raise dns.resolver.NXDOMAIN

    settings = DnsblSettings(
        zones=(DnsblZone(zone="slow.test"), DnsblZone(zone="fast.test")), timeout=2.0
    )
    guard = DnsblGuard(settings, Silent(configure=False))

    async def scenario() -> tuple[list[str | None], float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        found = await guard.check("192.0.2.1")
        assert found is not None
        return [x.error for x in found], loop.time() - start

    errors, waited = run_virtual(scenario())
    assert errors == ["timed out", None]
    assert waited == pytest.approx(2.0)


async def test_the_mta_refuses_listed_clients_before_the_greeting(
    tmp_path: Path, dns_lab: StartLab
) -> None:
    lab = dns_lab(*zones())
    cfg = config(
        tmp_path,
        relay={"trusted_networks": ["127.0.0.1/32"]},
        server={"proxied": ["127.0.0.1:0"], "proxy_from": ["127.0.0.1/32"]},
        dnsbl={
            "zones": [
                {"zone": "bl.test", "codes": {"127.0.0.2": 1}},
                {"zone": "wl.test", "weight": -5},
            ]
        },
    )
    async with Mta(cfg, dns=FakeDns(), dns_resolver=lab.resolver()) as mta:
        port = mta.server.ports[0]
        # Through a PROXY header (as HAProxy sends it): the client it names is checked.
        clients = [("127.0.0.2", "127.0.0.1"), ("127.0.0.8", "127.0.0.1"), ("2001:db8::99", "::1")]
        got = [
            await dialogue(port, [b"QUIT\r\n"], source="127.0.0.1", first=v2(ip, to, (1000, 25)))
            for ip, to in clients
        ]
        (guard,) = mta.guards
    assert str(got[0][0]).startswith("554 5.7.1 Service unavailable; client [127.0.0.2] blocked")
    assert len(got[0]) == 1  # and the session is over
    assert [r.code for r in got[1]] == [220, 221]
    assert [str(r) for r in got[2]] == [
        "554 5.7.1 Service unavailable; client [2001:db8::99] blocked using bl.test: v6 listed"
    ]
    assert guard.stats["rejected"] == 2
