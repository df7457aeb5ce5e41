"""The control plane through aiohttp's test client, over its unix socket, and over TCP with
a bearer token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from smtpx.client import connect
from smtpx.envelope import Envelope
from smtpx.mta import control as control_module
from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from smtpx.spool.types import EventKind, SpoolEvent
from tests.mta.helpers import PLAIN, config, message, queue_waiting


@pytest.fixture
async def mta(tmp_path: Path) -> AsyncIterator[Mta]:
    # Mail for example.net goes nowhere (port 9 is closed): it waits in the spool.
    cfg = config(
        tmp_path,
        routing={"routes": {"example.net": ["127.0.0.1:9"]}},
        spool={"retry_intervals": ["1h"]},
    )
    async with Mta(cfg, dns=FakeDns()) as running:
        await queue_waiting(running, 3)
        yield running


@pytest.fixture
async def api(mta: Mta) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(mta.control.app)) as client:
        # The test client speaks TCP: present the token the plane would demand.
        mta.control.token = "secret"
        client.session.headers["Authorization"] = "Bearer secret"
        yield client


async def test_health_and_listing(api: TestClient[Any, Any]) -> None:
    health = await (await api.get("/healthz")).json()
    assert health["status"] == "ok"
    listing = await (await api.get("/v1/spool/messages")).json()
    assert len(listing["messages"]) == 4
    first = listing["messages"][0]
    assert first["status"] == "send_at" and first["queue"] == "active"
    assert first["attempts"] and "body" not in json.dumps(first).lower().replace("body_", "")


async def test_a_listing_can_be_limited_to_the_oldest(api: TestClient[Any, Any]) -> None:
    everything = await (await api.get("/v1/spool/messages")).json()
    assert everything["total"] == len(everything["messages"]) == 4
    oldest = await (await api.get("/v1/spool/messages", params={"limit": "2"})).json()
    assert oldest == {"messages": everything["messages"][:2], "total": 4}
    for wrong in ("0", "-1", "x", "1.5"):
        response = await api.get("/v1/spool/messages", params={"limit": wrong})
        assert response.status == 400
        assert (await response.json())["error"].startswith("limit: a whole number from 1")


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("", 4),
        ("?sender=boss", 1),
        ("?sender=^<a@", 3),
        ("?recipient=u1@", 1),
        ("?next_hop=example\\.net", 4),
        ("?status=active", 4),
        ("?status=frozen", 0),
        ("?younger=1h", 4),
        ("?older=1h", 0),
        ("?sender=boss&recipient=u1", 0),
    ],
)
async def test_filters(api: TestClient[Any, Any], query: str, count: int) -> None:
    result = await (await api.get("/v1/spool/count" + query)).json()
    assert result["count"] == count


@pytest.mark.parametrize(
    ("select", "count"),
    [
        ("envelope_sender /^boss@corp\\.example$/", 1),  # a bare address, no <>
        ("exists_header Subject /^[12]$/", 2),  # read from the stored message
        ("exists_envelope_recipient /^u1@/ or exists_header subject /^9$/", 2),
        ("not all_headers Message-ID /@t>$/", 0),
        ("all_envelope_recipients /@example\\.net$/ and true", 4),
    ],
)
async def test_the_select_filter(api: TestClient[Any, Any], select: str, count: int) -> None:
    result = await (await api.get("/v1/spool/count", params={"select": select})).json()
    assert result["count"] == count
    both = {"select": select, "status": "frozen"}  # ANDed with the other filters
    assert (await (await api.get("/v1/spool/count", params=both)).json())["count"] == 0


async def test_a_bad_selector_is_400(api: TestClient[Any, Any]) -> None:
    for select in ("envelope_sender", "exists_header Subject /(/", "not " * 200 + "true"):
        response = await api.get("/v1/spool/messages", params={"select": select})
        assert response.status == 400
        assert (await response.json())["error"].startswith("select: selector, at character")


async def test_the_id_filter_takes_any_id_a_message_goes_by(
    api: TestClient[Any, Any], mta: Mta
) -> None:
    spooled = mta.spool.status()[1]
    assert spooled.message_id == "<1@t>"
    for key in (spooled.id, spooled.parent_id, "<1@t>", "1@t", " <1@t> "):
        listing = await (await api.get("/v1/spool/messages", params={"id": key})).json()
        assert [m["id"] for m in listing["messages"]] == [spooled.id], key
        assert listing["messages"][0]["message_id"] == "<1@t>"
    for key in ("nope", "<1@t", "1@T", "<>"):
        listing = await (await api.get("/v1/spool/messages", params={"id": key})).json()
        assert listing["messages"] == [], key


async def test_bad_filters_are_400(api: TestClient[Any, Any]) -> None:
    for query in ("?status=bogus", "?older=5q", "?sender=("):
        response = await api.get("/v1/spool/messages" + query)
        assert response.status == 400
        assert "error" in await response.json()


async def test_filters_too_complex_for_re_are_400(api: TestClient[Any, Any]) -> None:
    for query in ("?sender=" + "(" * 5000, "?recipient=a{99999999999}"):
        response = await api.get("/v1/spool/count" + query)
        assert response.status == 400
        assert "too complex" in (await response.json())["error"]


async def test_a_non_utf8_authorization_header_is_401_not_500(api: TestClient[Any, Any]) -> None:
    # aiohttp's client will not send such bytes: speak HTTP over a raw socket.
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    for token in (b"Bearer \xff\xfe", b"Bearer secret\xc3"):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nAuthorization: " + token + b"\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 401 "), status
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(
            int(line.split(b":")[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        assert b"bearer token" in await reader.readexactly(length)
    writer.close()


async def test_deeply_nested_json_is_400(api: TestClient[Any, Any]) -> None:
    for body in (b"[" * 100_000, b'{"ids": ' + b"[" * 100_000):
        response = await api.post("/v1/spool/freeze", data=body)
        assert response.status == 400
        assert "error" in await response.json()


async def test_show_headers_and_raw(api: TestClient[Any, Any], mta: Mta) -> None:
    message_id = mta.spool.status()[0].id
    shown = await (await api.get(f"/v1/spool/messages/{message_id}")).json()
    names = [name for name, _ in shown["headers"]]
    assert names[0] == "Received" and "Subject" in names
    raw = await (await api.get(f"/v1/spool/messages/{message_id}?raw=1")).read()
    assert raw.startswith(b"Received: from ") and raw.endswith(b"body 0\r\n")
    missing = await api.get("/v1/spool/messages/nope")
    assert missing.status == 404


async def test_a_large_message_is_shown_and_streamed_whole(
    api: TestClient[Any, Any], mta: Mta
) -> None:
    """3 MB with a dot at the start of every other line: the view lists its fields
    (read from its head), the raw download (streamed a chunk at a time) is the message."""
    body = b"".join(b".%07d dotted line\r\nplain line\r\n" % n for n in range(110_000))
    envelope = Envelope.create(
        sender="big@corp.example",
        recipients=["x@example.net"],
        message=b"From: big@corp.example\r\nSubject: large\r\n\r\n" + body,
    )
    async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
        assert (await client.send(envelope)).ok
    (entry,) = [m for m in mta.spool.status() if m.sender == "<big@corp.example>"]
    shown = await (await api.get(f"/v1/spool/messages/{entry.id}")).json()
    assert ["Subject", "large"] in shown["headers"] and "damaged" not in shown
    response = await api.get(f"/v1/spool/messages/{entry.id}?raw=1")
    assert response.headers["Content-Type"] == "message/rfc822"
    assert response.headers.get("Transfer-Encoding") == "chunked"  # streamed, not whole
    raw = await response.read()
    assert len(raw) > 3_000_000
    assert raw.startswith(b"Received: from ") and raw.endswith(b"\r\n\r\n" + body)


async def test_freeze_send_remove_recover(api: TestClient[Any, Any], mta: Mta) -> None:
    message_id = mta.spool.status()[0].id
    missing = await api.post("/v1/spool/remove", json={"ids": ["00000000000nosuc"]})
    assert missing.status == 404
    assert (await api.post("/v1/spool/freeze", json={"ids": [message_id]})).status == 200
    frozen = await (await api.get("/v1/spool/count?status=frozen")).json()
    assert frozen["count"] == 1
    assert (await api.post("/v1/spool/remove", json={"ids": [message_id]})).status == 200
    assert (await (await api.get("/v1/spool/count?status=removed")).json())["count"] == 1
    refused = await api.post("/v1/spool/send", json={"ids": [message_id]})
    assert refused.status == 409 and "recover it first" in (await refused.json())["error"]
    recovered = await api.post("/v1/spool/recover", json={"ids": [message_id], "from": "removed"})
    assert recovered.status == 200
    sent = await (
        await api.post("/v1/spool/send", json={"frozen": True, "retry_intervals": ["2h"]})
    ).json()
    assert sent == {"released": 1}
    assert mta.spool.get(message_id).retry_intervals[0] == "2h"
    bad = await api.post("/v1/spool/send", json={"ids": [message_id], "all": True})
    assert bad.status == 400


async def test_purge(api: TestClient[Any, Any], mta: Mta) -> None:
    message_id = mta.spool.status()[0].id
    assert (await api.post("/v1/spool/purge", json={"ids": [message_id]})).status == 409
    await api.post("/v1/spool/freeze", json={"ids": [message_id]})
    await api.post("/v1/spool/remove", json={"ids": [message_id]})
    purged = await api.post("/v1/spool/purge", json={"ids": [message_id]})
    assert await purged.json() == {"purged": [message_id]}
    assert (await api.get(f"/v1/spool/messages/{message_id}")).status == 404


async def test_events_stream_with_pings(
    api: TestClient[Any, Any], mta: Mta, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control_module, "PING_SECONDS", 0.05)
    message_id = mta.spool.status()[0].id
    response = await api.get("/v1/spool/events")
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    await api.post("/v1/spool/freeze", json={"ids": [message_id]})
    kinds: list[tuple[str, str]] = []
    while len(kinds) < 2:
        line = await asyncio.wait_for(response.content.readline(), 5)
        event = json.loads(line)
        kinds.append((event["kind"], event["id"]))
    assert ("frozen", message_id) in kinds
    line = await asyncio.wait_for(response.content.readline(), 5)
    assert json.loads(line)["kind"] in ("ping", "frozen")
    response.close()


@pytest.mark.parametrize("ping", ["1e-300", "0", "0.05", "-1", "3601", "nan", "inf", "abc", ""])
async def test_events_ping_is_checked_before_streaming(
    api: TestClient[Any, Any], ping: str
) -> None:
    response = await api.get("/v1/spool/events", params={"ping": ping})
    assert response.status == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert "ping: a number of seconds from 0.1 to 3600" in (await response.json())["error"]


async def test_events_ping_within_bounds_streams(api: TestClient[Any, Any], mta: Mta) -> None:
    response = await api.get("/v1/spool/events", params={"ping": "3600"})
    assert response.status == 200
    message_id = mta.spool.status()[0].id
    await api.post("/v1/spool/freeze", json={"ids": [message_id]})
    line = await asyncio.wait_for(response.content.readline(), 5)
    assert json.loads(line) | {"time": 0} == {
        "time": 0,
        "kind": "frozen",
        "id": message_id,
        "detail": json.loads(line)["detail"],
        "queue": "frozen",
    }
    response.close()


async def test_following_a_queue(api: TestClient[Any, Any], mta: Mta) -> None:
    """What F102's queue reader gave: the messages in a queue, then each new one."""
    ids = [m.id for m in mta.spool.status()]
    await api.post("/v1/spool/freeze", json={"ids": ids[:1]})
    query = {"queue": "frozen", "existing": "1", "ping": "3600"}
    response = await api.get("/v1/spool/events", params=query)

    async def line() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(await asyncio.wait_for(response.content.readline(), 5))
        return found

    listed = await line()
    assert (listed["kind"], listed["id"], listed["queue"]) == ("listed", ids[0], "frozen")
    await api.post("/v1/spool/send", json={"ids": ids[:1]})  # leaves frozen: not shown
    await api.post("/v1/spool/freeze", json={"ids": ids[1:2]})
    frozen = await line()
    assert (frozen["kind"], frozen["id"], frozen["queue"]) == ("frozen", ids[1], "frozen")
    response.close()

    by_kind = await api.get("/v1/spool/events", params={"kind": "removed,unfrozen", "ping": "3600"})
    await api.post("/v1/spool/freeze", json={"ids": ids[2:3]})  # not this kind
    await api.post("/v1/spool/send", json={"ids": ids[1:2]})
    unfrozen = json.loads(await asyncio.wait_for(by_kind.content.readline(), 5))
    assert (unfrozen["kind"], unfrozen["id"], unfrozen["queue"]) == ("unfrozen", ids[1], "active")
    by_kind.close()


@pytest.mark.parametrize("query", [{"kind": "spooled,nope"}, {"queue": "elsewhere"}])
async def test_bad_event_filters_are_400(api: TestClient[Any, Any], query: dict[str, str]) -> None:
    response = await api.get("/v1/spool/events", params=query)
    assert response.status == 400
    assert next(iter(query)) in (await response.json())["error"]


async def test_the_error_stream(api: TestClient[Any, Any], mta: Mta) -> None:
    before = logging.getLogger("smtpx.test.control")
    before.error("logged before anyone watched: %s", "kept")
    response = await api.get("/v1/errors", params={"recent": "1", "ping": "0.1"})
    assert response.headers["Content-Type"].startswith("application/x-ndjson")

    async def line() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(await asyncio.wait_for(response.content.readline(), 5))
        return found

    first = await line()
    assert first["message"] == "logged before anyone watched: kept" and first["kind"] == "error"
    before.warning("not an error: not streamed")
    try:
        raise ValueError("boom")
    except ValueError:
        before.exception("it failed")
    await asyncio.to_thread(before.critical, "from a thread")
    second, third = await line(), await line()
    assert (second["message"], second["level"], second["seq"]) == (
        "it failed",
        "error",
        first["seq"] + 1,
    )
    assert "ValueError: boom" in second["exception"]
    assert (third["message"], third["level"]) == ("from a thread", "critical")
    heartbeat = await line()
    assert heartbeat["kind"] == "heartbeat" and heartbeat["seq"] == third["seq"]
    response.close()
    for query in ({"recent": "x"}, {"ping": "0"}):
        assert (await api.get("/v1/errors", params=query)).status == 400


async def test_the_envelope_cache_and_process_streams(api: TestClient[Any, Any], mta: Mta) -> None:
    received = await api.get("/v1/server/envelopes", params={"ping": "3600"})
    async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
        assert (await client.send(message(7, to="z@example.net"))).ok
    line = json.loads(await asyncio.wait_for(received.content.readline(), 5))
    assert (line["kind"], line["sender"], line["recipients"]) == (
        "envelope",
        "<a@example.com>",
        ["z@example.net"],
    )
    assert line["size"] > 0 and line["id"]
    received.close()

    cache = await api.get("/v1/cache/stream", params={"interval": "0.1"})
    first = json.loads(await asyncio.wait_for(cache.content.readline(), 5))
    second = json.loads(await asyncio.wait_for(cache.content.readline(), 5))
    assert first["kind"] == second["kind"] == "cache" and second["time"] > first["time"]
    assert set(first) >= {"open", "opened", "reused", "destinations"}
    cache.close()
    assert (await api.get("/v1/cache/stream", params={"interval": "0"})).status == 400

    process = await (await api.get("/v1/process")).json()
    assert process["pid"] == os.getpid() and process["rss_bytes"] > 0
    assert process["asyncio_tasks"] >= 1 and len(process["gc_counts"]) == 3


async def test_cache_and_server(api: TestClient[Any, Any]) -> None:
    cache = await (await api.get("/v1/cache")).json()
    assert set(cache) == {"open", "opened", "reused", "destinations"}
    server = await (await api.get("/v1/server")).json()
    assert server["stats"]["messages"] == 4 and server["hostname"] == "mx.test"
    assert server["listeners"][0]["port"] > 0


async def test_metrics_parse(api: TestClient[Any, Any]) -> None:
    text = await (await api.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    received = families["smtpx_messages_received"].samples
    assert [s.value for s in received if s.name.endswith("_total")] == [4.0]
    queue = {s.labels["status"]: s.value for s in families["smtpx_queue_messages"].samples}
    assert queue["send_at"] == 4.0 and queue["frozen"] == 0.0
    assert "smtpx_delivery_latency_seconds" in families
    assert "smtpx_sessions_active" in families and "smtpx_tls_handshakes" in families


async def test_each_delivery_is_timed_into_the_latency_histogram(
    api: TestClient[Any, Any], mta: Mta
) -> None:
    def observed(text: str) -> tuple[float, float]:
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = families["smtpx_delivery_latency_seconds"].samples
        count = next(s.value for s in samples if s.name.endswith("_count"))
        total = next(s.value for s in samples if s.name.endswith("_sum"))
        return count, total

    before = observed(await (await api.get("/metrics")).text())
    now = time.time()
    events = mta.spool.events
    events.publish(SpoolEvent(now, EventKind.DELIVERED, "x", spool_date=now - 2.5))
    events.publish(SpoolEvent(now, EventKind.DELAYED, "y", spool_date=now - 9.0))  # not timed
    count, total = observed(await (await api.get("/metrics")).text())
    assert count == before[0] + 1
    assert total == pytest.approx(before[1] + 2.5)


async def test_metrics_count_per_client_refusals_and_deadline_hangups(tmp_path: Path) -> None:
    # Loopback is a trusted network, exempt by default: take the exemption away.
    cfg = config(tmp_path, server={"exempt_trusted_networks": False, "max_sessions_per_client": 1})
    async with (
        Mta(cfg, dns=FakeDns()) as running,
        TestClient(TestServer(running.control.app)) as api,
    ):
        running.control.token = "secret"
        api.session.headers["Authorization"] = "Bearer secret"
        port = running.server.ports[0]
        first = await asyncio.open_connection("127.0.0.1", port)
        assert (await first[0].readline()).startswith(b"220 ")
        second = await asyncio.open_connection("127.0.0.1", port)
        assert (await second[0].readline()).startswith(b"421 4.7.0 Too many concurrent sessions")
        for _, writer in (first, second):
            writer.close()
        # The sessions' tests make these count for real; here: they reach /metrics.
        running.server.stats["timeouts_slow_data"] += 2
        running.server.stats["timeouts_command"] += 1
        running.server.stats["timeouts_unread_replies"] += 3
        text = await (await api.get("/metrics")).text()
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("smtpx_connections_limited_total", ("sessions_per_client",))] == 1
    assert samples[("smtpx_connections_limited_total", ("rate_per_client",))] == 0
    assert samples[("smtpx_session_timeouts_total", ("slow_data",))] == 2
    assert samples[("smtpx_session_timeouts_total", ("command",))] == 1
    assert samples[("smtpx_session_timeouts_total", ("data",))] == 0
    assert samples[("smtpx_session_timeouts_total", ("unread_replies",))] == 3
    assert samples[("smtpx_connections_refused_total", ())] == 0  # the listener cap's own


async def test_tls_reload_without_tls_is_400(api: TestClient[Any, Any]) -> None:
    response = await api.post("/v1/tls/reload")
    assert response.status == 400


async def test_unix_socket_is_private(mta: Mta) -> None:
    path = mta.control.socket_path
    assert path is not None and path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    connector = aiohttp.UnixConnector(path=str(path))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://smtpx/v1/spool/count") as response,
    ):
        assert (await response.json())["count"] == 4  # no token needed on the socket


async def test_tcp_needs_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    cfg = config(tmp_path, control={"http": "127.0.0.1:0", "token_file": str(token_file)})
    async with Mta(cfg, dns=FakeDns()) as running:
        port = running.control.http_port
        url = f"http://127.0.0.1:{port}/v1/spool/count"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 401
            async with session.get(url, headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401
            async with session.get(url, headers={"Authorization": "Bearer s3cret"}) as response:
                assert response.status == 200


async def test_closing_ends_open_streams_at_once(mta: Mta) -> None:
    """A client following the events or the errors (pinged once an hour) does not hold
    the shutdown until its next write: closing ends the streams, and the plane is gone."""
    connector = aiohttp.UnixConnector(path=str(mta.control.socket_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        events = await session.get("http://control/v1/spool/events?ping=3600")
        errors = await session.get("http://control/v1/errors?ping=3600")
        assert events.status == errors.status == 200
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(mta.control.close(), 5)
        assert asyncio.get_running_loop().time() - started < 2
        for stream in (events, errors):  # cut: the reader sees the end, never a hang
            with contextlib.suppress(aiohttp.ClientPayloadError):
                await asyncio.wait_for(stream.content.read(), 5)
        assert mta.control.socket_path is not None and not mta.control.socket_path.exists()
