"""Removing in any state and the retention of failed mail, on both stores: the local
journal and the shared PostgreSQL queue (a clock the test moves; the sweep is called
directly, as its task would)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from smtpx.client import ClientConfig
from smtpx.protocol import Reply
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.spool import Outcome, Spool, SpoolConfig, SpoolError
from smtpx.testing import MemoryNetwork
from tests.spool.pg.helpers import Clock
from tests.spool.pg.test_engines import Refuses, engine_configs, mail, running

DAY = 86_400.0


@pytest.fixture(params=["journal", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., SpoolConfig]:
    return engine_configs(request, tmp_path, bounce=False)


async def test_failed_mail_is_swept_after_the_retention(
    store: Callable[..., SpoolConfig],
) -> None:
    network = MemoryNetwork(default=Refuses)
    clock = Clock()
    async for run in running(store(failed_retention=2 * DAY), network, clock):
        spool = run.spool
        (failed,) = await spool.add([mail(1, "r550@example.org")])
        (frozen,) = await spool.add([mail(2)], frozen=True)
        await run.advance()
        assert (await spool.find(failed)).status is Status.FROZEN
        clock.now += 2 * DAY - 1
        assert await spool.retention.sweep() == 0
        clock.now += 1
        assert await spool.retention.sweep() == 1
        with pytest.raises(SpoolError, match="not found"):
            await spool.find(failed)
        assert [m.id for m in await spool.list_all()] == [frozen]
        assert await spool.retention.sweep() == 0
    async for run in running(store(failed_retention=2 * DAY), network, clock):
        assert [m.id for m in await run.spool.list_all()] == [frozen]  # for good


async def test_removed_while_sending_it_stays_removed(
    store: Callable[..., SpoolConfig],
) -> None:
    network = MemoryNetwork(default=Refuses)
    clock = Clock()
    box: dict[str, Spool] = {}

    async def on_error(message: SpooledMessage, reply: Reply) -> Outcome:
        await box["spool"].remove([message.id])  # while the attempt is under way
        return Outcome.TRY_LATER

    config = store()
    async with Spool(
        config,
        client_config=ClientConfig.for_testing(),
        opener=network,
        clock=clock,
        on_error=on_error,
    ) as spool:
        box["spool"] = spool
        (message_id,) = await spool.add([mail(1, "r451@example.org")])
        for _ in range(200):
            if (await spool.find(message_id)).attempt_count:
                break
            spool.store.wakeup.set()
            await asyncio.sleep(0.01)
        assert (await spool.find(message_id)).status is Status.REMOVED
    async for run in running(config, network, clock):
        (entry,) = await run.spool.list_all()
        assert entry.status is Status.REMOVED  # the attempt's outcome did not undo it
        await run.advance(3600)
        assert len(network.sessions["mx.test"]) == 1
