"""The web console's server side (smtpx.mta.console): its page without the token, its JSON
endpoints with it, the cross-origin refusal, and the per-minute rates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from smtpx.mta.app import Mta
from smtpx.mta.console.rates import (
    MINUTES,
    OTHER,
    REASONS_PER_MINUTE,
    Rates,
    merge_rates,
    reason_of,
)
from smtpx.mta.routing import FakeDns
from smtpx.spool.types import EventKind, SpoolEvent
from smtpx.spool.unreachable import SUSPENDED
from tests.mta.helpers import config, queue_waiting

TOKEN = "c0nsole-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def mta(tmp_path: Path) -> AsyncIterator[Mta]:
    """An MTA with its control plane on 127.0.0.1 (token) and its socket; three messages
    for example.net (port 9: closed, so they wait), one from boss@corp.example."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cfg = config(
        tmp_path,
        routing={"routes": {"example.net": ["127.0.0.1:9"]}},
        spool={"retry_intervals": ["1h"]},
        control={"http": "127.0.0.1:0", "token_file": str(token_file)},
    )
    async with Mta(cfg, dns=FakeDns()) as running:
        await queue_waiting(running, 2)
        yield running


@pytest.fixture
async def http(mta: Mta) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{mta.control.http_port}"


async def test_the_page_needs_no_token_and_keeps_to_itself(
    http: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = http
    async with session.get(base + "/console", allow_redirects=False) as response:
        assert response.status == 302 and response.headers["Location"] == "/console/"
    for path, kind, marker in [
        ("/console/", "text/html", "<title>smtpx console</title>"),
        ("/console/app.js", "text/javascript", "sessionStorage"),
        ("/console/app.css", "text/css", "--delivered"),
    ]:
        async with session.get(base + path) as response:
            assert response.status == 200, path
            assert response.content_type == kind
            assert marker in await response.text()
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert "Set-Cookie" not in response.headers
    # Only the page: its data stays behind the token.
    for path in ("/v1/console/shape", "/v1/console/rates", "/console/nope", "/v1/server"):
        async with session.get(base + path) as response:
            assert response.status == 401, path
        async with session.get(base + path, headers={"Authorization": "Bearer no"}) as response:
            assert response.status == 401, path


async def test_the_shape_is_the_cli_s(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(base + "/v1/console/shape", headers=AUTH) as response:
        shape = await response.json()
    assert shape["buckets"][0] == "5m" and len(shape["buckets"]) == 10
    assert [(r["domain"], r["total"], r["by_age"][0]) for r in shape["rows"]] == [
        ("TOTAL", 3, 3),
        ("example.net", 3, 3),
    ]
    by_sender = {"by": "sender"}
    async with session.get(base + "/v1/console/shape", params=by_sender, headers=AUTH) as response:
        rows = (await response.json())["rows"]
    assert [(r["domain"], r["total"]) for r in rows] == [
        ("TOTAL", 3),
        ("example.com", 2),
        ("corp.example", 1),
    ]
    filtered = {"sender": "boss", "status": "active"}  # the list's filters apply
    async with session.get(base + "/v1/console/shape", params=filtered, headers=AUTH) as response:
        assert (await response.json())["rows"][0]["total"] == 1
    async with session.get(
        base + "/v1/console/shape", params={"by": "size"}, headers=AUTH
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "by: one of recipient, sender"


async def test_the_rates_count_the_spool_s_events(
    http: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = http
    async with session.get(base + "/v1/console/rates", headers=AUTH) as response:
        rates = await response.json()
    assert len(rates["series"]) == 60 and rates["minute_seconds"] == 60
    starts = [m["start"] for m in rates["series"]]
    assert starts == sorted(starts) and starts[1] - starts[0] == 60
    totals = {k: sum(m[k] for m in rates["series"]) for k in ("spooled", "deferred", "delivered")}
    assert totals == {"spooled": 3, "deferred": 3, "delivered": 0}
    [reason] = rates["reasons"]
    assert reason["total"] == 3 and sum(reason["by_minute"]) == 3
    assert "127.0.0.1" in reason["reason"] or "refused" in reason["reason"].lower()


async def test_a_deferral_without_its_reason_is_counted_with_the_one_looked_up(
    http: tuple[aiohttp.ClientSession, str], mta: Mta
) -> None:
    """An older node's deferral events carry no reason: the console looks up the
    message's last attempt (in a task of its own) and counts the deferral with it."""
    session, base = http
    message = mta.spool.status()[0]
    assert message.last_attempt is not None
    mta.spool.events.publish(
        SpoolEvent(time.time(), EventKind.DELAYED, message.id, spool_date=message.spool_date)
    )
    for _ in range(100):  # the lookup's task runs on the loop
        async with session.get(base + "/v1/console/rates", headers=AUTH) as response:
            rates = await response.json()
        if sum(m["deferred"] for m in rates["series"]) == 4:
            break
        await asyncio.sleep(0.01)
    assert sum(m["deferred"] for m in rates["series"]) == 4  # the fixture's three, and it
    [reason] = rates["reasons"]
    assert reason["total"] == 4


async def test_a_cross_origin_browser_may_not_act(
    http: tuple[aiohttp.ClientSession, str], mta: Mta
) -> None:
    session, base = http
    victim = mta.spool.status()[0].id
    body = {"ids": [victim]}
    refused = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another port, another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    for headers in refused:
        async with session.post(
            base + "/v1/spool/freeze", json=body, headers={**AUTH, **headers}
        ) as response:
            assert response.status == 403, headers
            assert "another origin" in (await response.json())["error"]
    assert mta.spool.status()[0].status.value != "frozen"
    # The same origin (the console's own requests), and clients that are not browsers.
    same = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
    async with session.post(
        base + "/v1/spool/freeze", json=body, headers={**AUTH, **same}
    ) as response:
        assert response.status == 200
    async with session.post(base + "/v1/spool/send", json=body, headers=AUTH) as response:
        assert response.status == 200
    # A cross-origin GET is let through to the guard (the browser will not let the other
    # site read the answer; reading changes nothing).
    async with session.get(
        base + "/v1/spool/count", headers={**AUTH, "Origin": "http://evil.example"}
    ) as response:
        assert response.status == 200


async def test_the_socket_needs_no_token_but_refuses_other_origins(mta: Mta) -> None:
    """``ssh -L 8080:/run/smtpx/control.sock`` puts the socket on a TCP port with no token:
    a page on another site still cannot act through it."""
    path = mta.control.socket_path
    assert path is not None
    victim = mta.spool.status()[0].id
    connector = aiohttp.UnixConnector(path=str(path))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get("http://smtpx/v1/console/rates") as response:
            assert response.status == 200
        async with session.get("http://smtpx/console/") as response:
            assert response.status == 200
        async with session.post(
            "http://smtpx/v1/spool/remove",
            json={"ids": [victim]},
            headers={"Origin": "http://evil.example"},
        ) as response:
            assert response.status == 403
    assert mta.spool.status()[0].queue == "active"


# -- the ring, on its own -------------------------------------------------------------------

T0 = 1_800_000_000.0  # a minute boundary


def test_rates_keep_an_hour_minute_by_minute() -> None:
    rates = Rates()
    rates.count(EventKind.SPOOLED, T0 + 1)
    rates.count(EventKind.DELIVERED, T0 + 59)
    rates.count(EventKind.DELAYED, T0 + 60, "451 4.3.0 try\r\n  later")
    rates.count(EventKind.DELAYED_RATE_LIMITED, T0 + 61, None)
    rates.count(EventKind.BOUNCED, T0 + 130)
    rates.count(EventKind.FROZEN, T0 + 130)  # not a rate
    shown = rates.as_json(T0 + 150)
    series = shown["series"]
    assert len(series) == 60 and series[-1]["start"] == T0 + 120
    assert series[-3] == {
        "start": T0,
        "spooled": 1,
        "delivered": 1,
        "deferred": 0,
        "bounced": 0,
    }
    assert (series[-2]["deferred"], series[-1]["bounced"]) == (2, 1)
    assert [(r["reason"], r["total"], r["by_minute"][-2]) for r in shown["reasons"]] == [
        ("451 4.3.0 try later", 1, 1),
        ("unknown", 1, 1),
    ]
    # An hour on, the first minutes have left the ring (and are forgotten, not just hidden).
    rates.count(EventKind.SPOOLED, T0 + 3600 + 61)
    later = rates.as_json(T0 + 3600 + 61)
    assert sum(m["spooled"] for m in later["series"]) == 1
    assert [r["reason"] for r in later["reasons"]] == []
    assert len(rates._ring) == 2
    rates.count(EventKind.DELIVERED, T0)  # older than the ring: not counted
    assert sum(m["delivered"] for m in rates.as_json(T0 + 3600 + 61)["series"]) == 0


def test_rates_bound_the_reasons_they_keep() -> None:
    rates = Rates()
    for n in range(REASONS_PER_MINUTE + 5):
        rates.count(EventKind.DELAYED, T0, f"451 host{n} busy")
    rates.count(EventKind.DELAYED, T0, "451 host0 busy")  # a known one still counts as itself
    reasons = {r["reason"]: r["total"] for r in rates.as_json(T0)["reasons"]}
    assert len(reasons) == REASONS_PER_MINUTE + 1
    assert (reasons[OTHER], reasons["451 host0 busy"]) == (5, 2)


def test_a_reason_is_one_line_and_short() -> None:
    assert reason_of(None) == reason_of("  ") == "unknown"
    assert reason_of("421 4.4.2\n  closing") == "421 4.4.2 closing"
    # Deferred without an attempt while suspended: counted under the error itself.
    assert reason_of(SUSPENDED + "connection refused") == "connection refused"
    long = reason_of("x" * 500)
    assert len(long) == 120 and long.endswith("…")


def test_merged_rates_add_up_minute_by_minute() -> None:
    """Two workers' rings, one a minute ahead of the other (asked across a minute's
    turn): counts meet at the same minute, reasons add up, the window stays an hour."""
    one, two = Rates(), Rates()
    one.count(EventKind.SPOOLED, 600.0)
    one.count(EventKind.DELAYED, 610.0, "421 busy")
    two.count(EventKind.SPOOLED, 605.0)
    two.count(EventKind.DELAYED, 670.0, "421 busy")
    two.count(EventKind.DELAYED, 671.0, "550 other")
    merged = merge_rates([one.as_json(620.0), two.as_json(680.0)])
    assert len(merged["series"]) == MINUTES
    by_start = {m["start"]: m for m in merged["series"]}
    assert by_start[600]["spooled"] == 2 and by_start[600]["deferred"] == 1
    assert by_start[660]["deferred"] == 2
    assert [(r["reason"], r["total"]) for r in merged["reasons"]] == [
        ("421 busy", 2),
        ("550 other", 1),
    ]
    busy = merged["reasons"][0]["by_minute"]
    assert busy[-2:] == [1, 1] and sum(busy) == 2
