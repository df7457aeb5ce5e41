"""The supervisor's control plane over two real MTAs in this process (two shards, two
private sockets): ids reach the worker that holds them, errors pass through, nothing is
half done for an unknown id, and a worker that does not answer makes the queue 503."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smtpx.mta.aggregate import Aggregator
from smtpx.mta.app import Mta
from smtpx.mta.workers import shard_dir, worker_config, worker_socket
from smtpx.spool.message import Status
from smtpx.spool.spool import Delivery
from tests.mta.helpers import config, message


class _Pool:
    def __init__(self, mtas: list[Mta]) -> None:
        self.mtas = mtas
        self.pids = [1000 + i for i in range(len(mtas))]  # a restart gives a new one

    def status(self) -> list[dict[str, Any]]:
        return [
            {"worker": i, "pid": pid, "running": True, "restarts": 0}
            for i, pid in enumerate(self.pids)
        ]


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[tuple[Aggregator, list[Mta]]]:
    base = config(tmp_path, server={"workers": 2})
    mtas = [Mta(worker_config(base, i, 2, [0])) for i in range(2)]
    for mta in mtas:
        await mta.start()
        await mta.serve()  # as the supervisor says once every worker is ready
    aggregator = Aggregator(
        _Pool(mtas),
        [worker_socket(base.control.socket, i) for i in range(2)],
        shared_queue=False,
        socket_path=base.control.socket,
    )
    await aggregator.start()
    try:
        yield aggregator, mtas
    finally:
        await aggregator.close()
        for mta in mtas:
            await mta.close()


async def call(aggregator: Aggregator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=str(aggregator.socket_path))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, f"http://smtpx{path}", json=body) as reply,
    ):
        if reply.content_type == "application/json":
            return reply.status, await reply.json()
        return reply.status, await reply.read()


@contextlib.asynccontextmanager
async def event_stream(
    aggregator: Aggregator, query: str = ""
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The supervisor's merged /v1/spool/events, open (a 200)."""
    connector = aiohttp.UnixConnector(path=str(aggregator.socket_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        events = await session.get(f"http://smtpx/v1/spool/events{query}")
        assert events.status == 200
        yield events


async def frozen_ids(mta: Mta, count: int) -> list[str]:
    deliveries = [Delivery(message(n), route="example.net") for n in range(count)]
    return await mta.spool.add(deliveries, frozen=True)


async def test_actions_reach_the_worker_holding_each_id(
    plane: tuple[Aggregator, list[Mta]], tmp_path: Path
) -> None:
    aggregator, mtas = plane
    assert mtas[1].config.spool.dir == shard_dir(tmp_path / "spool", 1)
    first, second = await frozen_ids(mtas[0], 2), await frozen_ids(mtas[1], 1)
    status, listed = await call(aggregator, "GET", "/v1/spool/messages")
    assert status == 200 and {m["id"] for m in listed["messages"]} == {*first, *second}
    assert listed["total"] == 3
    # A limit: each worker's oldest, merged, the oldest of all kept; the total of all.
    status, oldest = await call(aggregator, "GET", "/v1/spool/messages?limit=2")
    assert (status, oldest["total"]) == (200, 3)
    assert oldest["messages"] == listed["messages"][:2]

    # unknown id: 404, and the known ones were not touched
    status, error = await call(aggregator, "POST", "/v1/spool/remove", {"ids": [second[0], "x"]})
    assert (status, error) == (404, {"error": "x: not found"})
    assert mtas[1].spool.get(second[0]).status.value == "frozen"

    status, removed = await call(
        aggregator, "POST", "/v1/spool/remove", {"ids": [second[0], first[0]]}
    )
    assert (status, removed) == (200, {"removed": [second[0], first[0]]})
    # a state the worker refuses: its 409 comes through
    status, error = await call(aggregator, "POST", "/v1/spool/freeze", {"ids": [second[0]]})
    assert status == 409 and "recover it first" in error["error"]
    body = {"ids": [second[0]], "from": "removed"}
    assert (await call(aggregator, "POST", "/v1/spool/recover", body))[0] == 200
    assert mtas[1].spool.get(second[0]).status.value == "frozen"
    assert (await call(aggregator, "POST", "/v1/spool/purge", {"ids": [first[0]]}))[0] == 200
    assert first[0] not in {m.id for m in await mtas[0].spool.list_all()}

    status, released = await call(aggregator, "POST", "/v1/spool/send", {"frozen": True})
    assert (status, released) == (200, {"released": 2})  # one in each shard
    status, raw = await call(aggregator, "GET", f"/v1/spool/messages/{second[0]}?raw=1")
    assert status == 200 and b"Subject: 0" in raw


async def test_metrics_add_up_over_restarts_and_a_silent_worker_is_a_503(
    plane: tuple[Aggregator, list[Mta]],
) -> None:
    aggregator, mtas = plane
    await frozen_ids(mtas[0], 2)
    await frozen_ids(mtas[1], 3)
    mtas[0].server.stats["messages"] += 2
    mtas[1].server.stats["messages"] += 3
    status, metrics = await call(aggregator, "GET", "/metrics")
    assert status == 200
    assert b'smtpx_queue_messages{status="frozen"} 5.0' in metrics
    assert b"\nsmtpx_messages_received_total 5.0\n" in metrics
    assert b'smtpx_workers_up{worker="1"} 1' in metrics
    assert (await call(aggregator, "GET", "/v1/spool/count"))[1]["count"] == 5
    assert (await call(aggregator, "GET", "/healthz"))[0] == 200

    await mtas[1].close()  # its control socket is gone: a worker restarting
    status, health = await call(aggregator, "GET", "/healthz")
    assert status == 503 and health["status"] == "degraded"
    assert [w["healthy"] for w in health["workers"]] == [True, False]
    status, error = await call(aggregator, "GET", "/v1/spool/messages")
    assert status == 503 and "worker 1 does not answer" in error["error"]
    # Metrics still answer, the silent worker as last seen: no counter goes down.
    status, metrics = await call(aggregator, "GET", "/metrics")
    assert status == 200 and b"\nsmtpx_messages_received_total 5.0\n" in metrics

    aggregator.pool.pids[1] = 2001  # type: ignore[attr-defined]
    mtas[1] = Mta(dataclasses.replace(mtas[1].config))  # started again on its shard
    await mtas[1].start()
    await mtas[1].serve()
    assert (await call(aggregator, "GET", "/v1/spool/count"))[1]["count"] == 5
    # Its counters start from zero; the total goes on from its earlier life's.
    mtas[1].server.stats["messages"] += 1
    status, metrics = await call(aggregator, "GET", "/metrics")
    assert status == 200 and b"\nsmtpx_messages_received_total 6.0\n" in metrics
    assert b'smtpx_queue_messages{status="frozen"} 5.0' in metrics  # a gauge: as said now


async def test_the_web_console_sees_both_shards(plane: tuple[Aggregator, list[Mta]]) -> None:
    """The console's page and its JSON come from the supervisor too: the queue's shape
    counts both shards' mail, the rates add up both workers' events."""
    aggregator, mtas = plane
    await frozen_ids(mtas[0], 2)
    await frozen_ids(mtas[1], 3)
    status, page = await call(aggregator, "GET", "/console/")
    assert status == 200 and b"smtpx" in page
    status, shape = await call(aggregator, "GET", "/v1/console/shape")
    assert status == 200 and shape["rows"][0]["total"] == 5
    status, rates = await call(aggregator, "GET", "/v1/console/rates")
    assert status == 200 and sum(m["spooled"] for m in rates["series"]) == 5
    status, _ = await call(aggregator, "GET", "/v1/console/shape?by=nothing")
    assert status == 400


async def test_closing_ends_the_merged_streams_at_once(
    plane: tuple[Aggregator, list[Mta]],
) -> None:
    aggregator, _ = plane
    async with event_stream(aggregator, "?ping=3600") as events:
        await asyncio.wait_for(aggregator.close(), 5)
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await asyncio.wait_for(events.content.read(), 5)


async def test_quarantine_reaches_each_shard(plane: tuple[Aggregator, list[Mta]]) -> None:
    aggregator, mtas = plane
    first, second = await frozen_ids(mtas[0], 1), await frozen_ids(mtas[1], 1)
    status, answer = await call(
        aggregator, "POST", "/v1/spool/quarantine", {"ids": [*second, *first], "reason": "spam"}
    )
    assert status == 200 and answer == {"quarantined": [*second, *first]}
    for mta, ids in ((mtas[0], first), (mtas[1], second)):
        held = await mta.spool.find(ids[0])
        assert held.status is Status.QUARANTINED and "spam" in (held.quarantine_reason or "")
    status, listed = await call(aggregator, "GET", "/v1/spool/messages?status=quarantine")
    assert status == 200 and {m["id"] for m in listed["messages"]} == {*first, *second}
    status, error = await call(aggregator, "POST", "/v1/spool/quarantine", {"ids": first})
    assert status == 400 and "reason" in error["error"]


async def test_the_merged_events_go_on_when_a_worker_restarts(
    plane: tuple[Aggregator, list[Mta]],
) -> None:
    aggregator, mtas = plane
    async with event_stream(aggregator) as events:

        async def worker_of(message_id: str, seconds: float = 10) -> int:
            """The worker of the event line about ``message_id``."""
            while True:
                line = await asyncio.wait_for(events.content.readline(), seconds)
                assert line, "the merged stream ended"
                if message_id in line.decode():
                    return int(json.loads(line)["worker"])

        assert await worker_of((await frozen_ids(mtas[1], 1))[0]) == 1
        await mtas[1].close()  # its stream ends: the supervisor would restart it
        assert await worker_of((await frozen_ids(mtas[0], 1))[0]) == 0  # still open
        aggregator.pool.pids[1] = 2001  # type: ignore[attr-defined]
        mtas[1] = Mta(dataclasses.replace(mtas[1].config))
        await mtas[1].start()
        await mtas[1].serve()
        # Its stream is opened again within moments (what comes before is not seen).
        for _ in range(50):
            with contextlib.suppress(TimeoutError):
                assert await worker_of((await frozen_ids(mtas[1], 1))[0], 0.5) == 1
                break
        else:
            raise AssertionError("worker 1's events never came back")
        events.close()
