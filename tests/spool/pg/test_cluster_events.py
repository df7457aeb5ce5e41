"""Spool events cross the cluster: what happens on one node reaches the event stream of
every node (LISTEN/NOTIFY), marked with the node it happened on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from smtpx.envelope import Envelope, HostPort, RetryInterval
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.spool import Delivery, EventKind, Spool, SpoolConfig
from smtpx.spool.types import PostgresSettings, SpoolEvent
from smtpx.testing import MemoryNetwork


def node(tmp_path: Path, name: str, dsn: str) -> Spool:
    config = SpoolConfig(
        directory=tmp_path / name,
        fsync=FsyncPolicy.NEVER,
        ping_interval=1e9,
        postgresql=PostgresSettings(dsn=dsn, node=name, lease=60),
    )
    return Spool(config, opener=MemoryNetwork(down={"mx.test"}))


async def test_an_event_on_one_node_reaches_the_other(tmp_path: Path, pg_dsn: str) -> None:
    envelope = Envelope.create(
        sender="a@example.com", recipients=["b@example.net"], message=b"Subject: x\r\n\r\nx\r\n"
    )
    async with node(tmp_path, "a", pg_dsn) as a, node(tmp_path, "b", pg_dsn) as b:
        with b.events.subscribe() as heard:
            await asyncio.sleep(0.2)  # b is listening
            (message_id,) = await a.add(
                [Delivery(envelope, next_hops=(HostPort("mx.test", 25),))], frozen=True
            )
            await a.freeze([message_id])
            event = await asyncio.wait_for(heard.__anext__(), 10)
    assert (event.kind, event.id, event.node) == (EventKind.SPOOLED, message_id, "a")


async def test_a_deferral_reaches_the_other_node_with_its_reason(
    tmp_path: Path, pg_dsn: str
) -> None:
    """The console counts deferrals by reason: another node's carry it, so the console
    needs no query per deferral (an older node's events are looked up, as before)."""
    envelope = Envelope.create(
        sender="a@example.com", recipients=["b@example.net"], message=b"Subject: x\r\n\r\nx\r\n"
    )
    async with node(tmp_path, "a", pg_dsn) as a, node(tmp_path, "b", pg_dsn) as b:
        with a.events.subscribe() as here, b.events.subscribe() as heard:
            await asyncio.sleep(0.2)  # b is listening
            (message_id,) = await a.add(
                [
                    Delivery(
                        envelope,
                        next_hops=(HostPort("mx.test", 25),),
                        retry_intervals=(RetryInterval.parse("1h"),),
                    )
                ]
            )

            async def delayed(events: AsyncIterator[SpoolEvent]) -> SpoolEvent:
                async for event in events:
                    if event.kind is EventKind.DELAYED and event.id == message_id:
                        return event
                raise AssertionError("no deferral")

            local = await asyncio.wait_for(delayed(here), 10)
            remote = await asyncio.wait_for(delayed(heard), 10)
    assert local.reason and remote.reason == local.reason
    # Either node may claim the message: the one that deferred it says so with no node
    # name, the other names it.
    assert (local.node, remote.node) in {("", "a"), ("b", "")}
