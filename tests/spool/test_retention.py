"""Failed mail leaves the spool after ``failed_retention`` (on virtual time; hours rather
than the default week keep the tests fast: the connection cache ticks every second)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from smtpx.spool.message import Status
from smtpx.spool.retention import SWEEP_EVERY
from smtpx.spool.spool import EventKind, Spool, SpoolConfig
from smtpx.testing import MemoryNetwork
from tests.spool.helpers import delivery, make_spool, settle, virtual
from tests.spool.test_spool import refusing

DAY = 86_400.0
HOUR = 3600.0
SWEEP = HOUR / 4  # a retention of an hour is swept every quarter of it


def test_the_default_is_a_week_swept_hourly() -> None:
    assert SpoolConfig().failed_retention == 7 * DAY and SWEEP_EVERY == HOUR


def test_failed_mail_is_removed_and_purged_after_the_retention(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpx.mail")
    network = MemoryNetwork(default=refusing({"r1@example.org": 550, "r3@example.org": 451}))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, bounce=False, failed_retention=HOUR) as spool:
            events = spool.events.subscribe()
            failed, frozen, waiting = await spool.add(
                [delivery(1), delivery(2), delivery(3, retry=["30d"])]
            )
            await spool.freeze([frozen])  # an operator's: nothing failed, never swept
            await settle()
            assert spool.get(failed).status is Status.FROZEN  # 550: failed for good
            assert spool.get(waiting).status is Status.SEND_AT
            await settle(HOUR - SWEEP - 1)
            assert failed in spool.messages  # not yet
            await settle(SWEEP + 2)
            assert failed not in spool.messages
            assert set(spool.messages) == {frozen, waiting}
            seen = [events.queue.get_nowait() for _ in range(events.queue.qsize())]
            removed = [e for e in seen if e.id == failed and e.kind is EventKind.REMOVED]
            assert [e.detail for e in removed] == ["failed 1h00m ago (spool.failed_retention = 1h)"]
            assert [e.kind for e in seen if e.id == failed][-1] is EventKind.PURGED
            assert spool.stats["failed_retention_purged"] == 1
        assert {m.id for m in Spool.status_from_disk(tmp_path)} == {frozen, waiting}
        (line,) = [r for r in caplog.records if r.getMessage() == "purged"]
        assert line.mail["recipients"] == ["r1@example.org"]  # type: ignore[attr-defined]

    virtual(scenario)


def test_expired_mail_counts_from_its_last_attempt_and_never_keeps_it(
    tmp_path: Path,
) -> None:
    network = MemoryNetwork(down={"mx.test"})

    async def scenario() -> None:
        async with make_spool(tmp_path, network, bounce=False, failed_retention=HOUR) as spool:
            (expired,) = await spool.add([delivery(1, retry=["2h"])])
            await settle(2 * HOUR + 1)  # out of retries: 5.4.7, frozen
            entry = spool.get(expired)
            assert entry.status is Status.FROZEN and "5.4.7" in entry.failed[0][1]
            await settle(HOUR - SWEEP - 1)  # an hour after the last attempt, not arrival
            assert expired in spool.messages
            await settle(SWEEP + 2)
            assert expired not in spool.messages
        async with make_spool(tmp_path, network, bounce=False, failed_retention=None) as spool:
            (kept,) = await spool.add([delivery(2, retry=[])])
            await settle(3 * HOUR)
            assert spool.get(kept).status is Status.FROZEN

    virtual(scenario)


def test_mail_sent_again_is_not_swept(tmp_path: Path) -> None:
    network = MemoryNetwork(default=refusing({"r1@example.org": 550}))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, bounce=False, failed_retention=HOUR) as spool:
            (message_id,) = await spool.add([delivery(1, retry=["3h"])])
            await settle()
            network.default = refusing({"r1@example.org": 451})
            await spool.send([message_id], retry_intervals=[])  # the failed recipient again
            await settle(2 * HOUR)  # waiting again: not failed mail
            assert spool.get(message_id).status is Status.SEND_AT

    virtual(scenario)


def test_closing_waits_for_a_statement_under_way_and_sweeps_no_further(tmp_path: Path) -> None:
    """At shutdown the sweep and the claimer end by themselves at their next wait (on
    PostgreSQL a statement cancelled halfway costs a cancel request and holds its
    connection until the server confirms): a drop under way finishes, the next is not
    started, and neither task is cancelled."""
    network = MemoryNetwork(default=refusing({"r1@example.org": 550, "r2@example.org": 550}))

    async def scenario() -> None:
        spool = make_spool(tmp_path, network, bounce=False, failed_retention=HOUR)
        await spool.start()
        await spool.add([delivery(1), delivery(2)])
        await settle()
        sweeping, claimer = spool._sweeping, spool.scheduler._claimer
        assert sweeping is not None and claimer is not None
        started, finish = asyncio.Event(), asyncio.Event()
        dropped: list[str] = []
        drop = spool.retention._drop

        async def slow_drop(message_id: str, now: float, retention: float) -> bool:
            started.set()
            await finish.wait()  # a statement under way
            dropped.append(message_id)
            return await drop(message_id, now, retention)

        spool.retention._drop = slow_drop  # type: ignore[method-assign]
        await settle(HOUR)  # the sweep begins with the first
        assert started.is_set()
        closing = asyncio.ensure_future(spool.kill_and_flush())
        await settle(1)
        assert not closing.done()  # waiting for the statement
        finish.set()
        await closing
        assert len(dropped) == 1  # and not the second
        assert not sweeping.cancelled() and not claimer.cancelled()

    virtual(scenario)
