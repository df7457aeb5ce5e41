"""Removing mail in any state: a message being sent stays removed whatever its attempt
brings, and what an attempt had not sent yet is not sent at all."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from smtpx.auth import Credentials
from smtpx.client import Client
from smtpx.envelope import HostPort
from smtpx.protocol import Reply
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.spool import EventKind, Outcome, Presend, Spool, SpoolConfig
from smtpx.testing import MemoryNetwork
from tests.spool.helpers import EPOCH, delivery, make_spool, settle, virtual
from tests.spool.test_spool import refusing


def test_removed_during_its_attempt_a_deferral_leaves_it_removed(tmp_path: Path) -> None:
    network = MemoryNetwork(default=refusing({"r1@example.org": 451}))
    box: dict[str, Spool] = {}

    async def on_error(message: SpooledMessage, reply: Reply) -> Outcome:
        assert message.status is Status.SENDING
        await box["spool"].remove([message.id])  # the operator, while the reply is judged
        return Outcome.TRY_LATER

    async def scenario() -> str:
        async with make_spool(tmp_path, network, on_error=on_error, bounce=False) as spool:
            box["spool"] = spool
            (message_id,) = await spool.add([delivery(1, retry=["1m", "1m"])])
            await settle()
            entry = spool.get(message_id)
            assert entry.status is Status.REMOVED and entry.attempt_count == 1
            await settle(3600)
            assert len(network.sessions["mx.test"]) == 1  # never tried again
        return message_id

    message_id = virtual(scenario)
    (after,) = Spool.status_from_disk(tmp_path)  # and so it is on disk
    assert (after.id, after.status) == (message_id, Status.REMOVED)


def test_removed_during_its_attempt_a_failure_leaves_it_removed_not_frozen(
    tmp_path: Path,
) -> None:
    network = MemoryNetwork(default=refusing({"r1@example.org": 550}))
    box: dict[str, Spool] = {}

    async def on_error(message: SpooledMessage, reply: Reply) -> Outcome:
        await box["spool"].remove([message.id])
        return Outcome.FAIL_PERMANENTLY

    async def scenario() -> None:
        async with make_spool(tmp_path, network, on_error=on_error, bounce=False) as spool:
            box["spool"] = spool
            (message_id,) = await spool.add([delivery(1)])
            await settle()
            entry = spool.get(message_id)
            assert entry.status is Status.REMOVED
            assert [r for r, _ in entry.failed] == ["r1@example.org"]

    virtual(scenario)


def test_removed_before_it_went_out_it_is_not_sent(tmp_path: Path) -> None:
    network = MemoryNetwork()
    box: dict[str, Spool] = {}

    async def presend(message: SpooledMessage) -> Presend:
        await box["spool"].remove([message.id])  # removed once claimed, before routing
        return Presend.send_now()

    async def scenario() -> None:
        async with make_spool(tmp_path, network, presend=presend) as spool:
            box["spool"] = spool
            (message_id,) = await spool.add([delivery(1)])
            await settle()
            assert spool.get(message_id).status is Status.REMOVED
        assert "mx.test" not in network.sessions

    virtual(scenario)


def test_removed_while_its_connection_opens_it_is_not_sent(tmp_path: Path) -> None:
    network = MemoryNetwork()

    async def scenario() -> None:
        opened, release = asyncio.Event(), asyncio.Event()

        async def opener(address: HostPort, credentials: Credentials | None) -> Client:
            opened.set()
            await release.wait()
            return await network(address, credentials)

        loop = asyncio.get_running_loop()
        config = SpoolConfig(directory=tmp_path, fsync=FsyncPolicy.NEVER, ping_interval=1e9)
        async with Spool(config, clock=lambda: EPOCH + loop.time(), opener=opener) as spool:
            events = spool.events.subscribe()
            first, second = await spool.add([delivery(1), delivery(2)])
            await opened.wait()
            assert spool.get(first).status is Status.SENDING
            await spool.remove([first])
            release.set()
            await settle()
            assert spool.get(first).status is Status.REMOVED
            assert spool.get(first).attempt_count == 0  # no attempt was made with it
            assert second not in spool.messages  # delivered
            seen = [events.queue.get_nowait() for _ in range(events.queue.qsize())]
            assert [e.kind for e in seen if e.id == first] == [
                EventKind.SPOOLED,
                EventKind.REMOVED,
            ]
        (received,) = network.received("mx.test")
        assert b"body 2" in received.data

    virtual(scenario)


def test_a_deferral_event_says_when_in_iso_8601(tmp_path: Path) -> None:
    network = MemoryNetwork(down={"mx.test"})

    async def scenario() -> None:
        async with make_spool(tmp_path, network) as spool:
            events = spool.events.subscribe()
            await spool.add([delivery(1, retry=["1h"])])
            await settle()
            details = [events.queue.get_nowait() for _ in range(events.queue.qsize())]
            (delayed,) = [e for e in details if e.kind is EventKind.DELAYED]
            assert re.fullmatch(r"until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", delayed.detail)

    virtual(scenario)
