"""The shared queue's database crashes in the middle of delivery and comes back: the node
goes on, every acknowledged message is delivered, and what was repeated is only what was
in flight (its outcome could not be written while the database was down)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpx.testing import Handler, ScriptedServer
from smtpx.testing.postgres import Cluster
from tests.mta.test_crash import Daemon, delivered, free_port, send_until_stopped, wait_for
from tests.spool.pg.helpers import private_cluster
from tests.spool.pg.test_two_nodes import LEASE, node_config


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of this test's own: it is crashed on purpose."""
    yield from private_cluster()


@pytest.mark.timeout(180)
async def test_a_database_crash_during_delivery_loses_nothing(
    tmp_path: Path, own_cluster: Cluster
) -> None:
    sink_port, port = free_port(), free_port()
    node = Daemon(node_config(tmp_path / "n", "n", port, sink_port, own_cluster.dsn()), port)
    try:
        await node.start()
        acknowledged: set[int] = set()
        await asyncio.gather(
            *(send_until_stopped(port, range(k * 50, k * 50 + 50), acknowledged) for k in range(4))
        )
        assert len(acknowledged) == 200
        async with ScriptedServer(Handler, port=sink_port) as sink:
            while len(delivered(sink)) < 40:
                await asyncio.sleep(0.002)
            await asyncio.to_thread(own_cluster.crash)
            await asyncio.sleep(2)  # deliveries in flight finish; their outcomes fail
            await asyncio.to_thread(own_cluster.start)
            seen = await wait_for(sink, acknowledged, timeout=LEASE * 8)
            assert await node.terminate() == 0
    finally:
        node.cleanup()
    lost = acknowledged - set(seen)
    assert not lost, f"{len(lost)} messages lost: {sorted(lost)[:10]}"
    duplicates = sum(c - 1 for c in seen.values())
    print(f"delivered {len(seen)}, duplicates after the database crash {duplicates}")
    assert duplicates <= 60  # what was in flight or claimed when the database went down
