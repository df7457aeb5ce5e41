"""``[server] workers = 2`` on the shared PostgreSQL queue: both workers take mail, the
queue is one (the supervisor lists each message once, not once a worker), and each
message is delivered exactly once, by whichever worker claims it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smtpx.testing import Handler, ScriptedServer
from tests.mta.test_crash import free_port, send_until_stopped, wait_for
from tests.mta.workers_helpers import Supervised, wait_all_tried, workers_config


@pytest.mark.timeout(180)
async def test_two_workers_share_the_postgresql_queue(tmp_path: Path, pg_dsn: str) -> None:
    sink_port = free_port()  # nothing listens yet: the mail waits in the queue
    spool = f'backend = "postgresql"\n[spool.postgresql]\ndsn = "{pg_dsn}"\nnode = "mx"\n'
    config, port = workers_config(tmp_path, workers=2, sink=sink_port, retry="1h", spool=spool)
    daemon = Supervised(config)
    try:
        await daemon.start()
        acknowledged: set[int] = set()
        await asyncio.gather(
            *(send_until_stopped(port, range(k * 2, k * 2 + 2), acknowledged) for k in range(20))
        )
        assert len(acknowledged) == 40
        workers = await daemon.workers()
        took = [worker["stats"]["messages"] for worker in workers]
        assert sum(took) == 40 and min(took) > 0, took
        queued = (await daemon.get("/v1/spool/messages"))["messages"]
        assert len(queued) == 40  # one queue: each message listed once
        assert (await daemon.get("/v1/spool/count"))["count"] == 40
        metrics = await daemon.get("/metrics")
        assert "smtpx_messages_received_total 40.0" in metrics
        await wait_all_tried(daemon, 40)  # a message still in its first attempt is not released
        async with ScriptedServer(Handler, port=sink_port) as sink:
            status, released = await daemon.request("POST", "/v1/spool/send", {"all": True})
            assert status == 200 and released["released"] == 40
            seen = await wait_for(sink, acknowledged)
            assert await daemon.terminate() == 0
    finally:
        daemon.cleanup()
    assert set(seen) == acknowledged and max(seen.values()) == 1
