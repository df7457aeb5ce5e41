"""The report of where tasks wait (a shutdown that does not end says why)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from smtpx.io import tasks as tasks_module
from smtpx.io.tasks import (
    await_chain,
    cancel_and_wait,
    report_while_slow,
    waiting_tasks,
)
from smtpx.testing.clock import run_virtual


async def _innermost(event: asyncio.Event) -> None:
    await event.wait()


async def _middle(event: asyncio.Event) -> None:
    await _innermost(event)


async def _outer(event: asyncio.Event) -> None:
    await _middle(event)


async def test_the_chain_goes_down_to_what_is_awaited() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_outer(event))
    await asyncio.sleep(0)
    chain = await_chain(task)
    names = [part.split(" ")[0] for part in chain.split(" > ")]
    assert names[:4] == ["_outer", "_middle", "_innermost", "Event.wait"], chain
    assert "test_tasks.py:" in chain
    assert names[-1] == "future"  # what Event.wait awaits
    event.set()
    await task


async def test_tasks_waiting_alike_are_counted_once() -> None:
    event = asyncio.Event()
    tasks = [asyncio.create_task(_outer(event)) for _ in range(3)]
    alone = asyncio.create_task(_innermost(event))
    await asyncio.sleep(0)
    lines = waiting_tasks(exclude=asyncio.current_task())
    assert len(lines) == 2
    assert lines[0].startswith("3 x _outer (")
    assert lines[1].startswith("_innermost (")
    event.set()
    await asyncio.gather(*tasks, alone)


async def test_the_list_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three distinct chains (each task starts in another function) and room for two:
    two lines and one that counts the rest."""
    monkeypatch.setattr(tasks_module, "MAX_LINES", 2)
    event = asyncio.Event()
    tasks = [asyncio.create_task(f(event)) for f in (_outer, _middle, _innermost)]
    await asyncio.sleep(0)
    lines = waiting_tasks(exclude=asyncio.current_task())
    assert len(lines) <= tasks_module.MAX_LINES + 1
    assert len(lines) == 3 and lines[-1] == "... and 1 more"
    event.set()
    await asyncio.gather(*tasks)


def test_a_slow_wait_is_reported_each_period(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("smtpx.test.stuck")

    async def scenario() -> None:
        event = asyncio.Event()
        stuck = asyncio.create_task(_outer(event))
        watch = asyncio.create_task(report_while_slow("shutdown", 20, log))
        await asyncio.sleep(45)  # virtual seconds: two reports
        watch.cancel()
        event.set()
        await stuck
        await asyncio.gather(watch, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="smtpx.test.stuck"):
        run_virtual(scenario())
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 2
    assert reports[0].startswith("shutdown still running after 20 s; 2 tasks waiting:")
    assert reports[1].startswith("shutdown still running after 40 s;")
    assert "_outer (test_tasks.py:" in reports[0]
    assert "scenario (test_tasks.py:" in reports[0]  # the task that waits on the others


def test_a_task_that_lost_the_cancel_is_cancelled_again() -> None:
    """The first cancel is swallowed (as Python 3.11's wait_for could): a second one,
    a second later, ends the task; the exception of another task is taken, not logged."""

    async def swallows_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)  # goes on as if nothing happened

    async def fails() -> None:
        raise ValueError("taken")

    async def scenario() -> tuple[float, bool, bool]:
        loop = asyncio.get_running_loop()
        stubborn, failing = asyncio.create_task(swallows_once()), asyncio.create_task(fails())
        await asyncio.sleep(0)
        started = loop.time()
        await cancel_and_wait([stubborn, failing])
        return loop.time() - started, stubborn.cancelled(), failing.done()

    took, cancelled, failed_done = run_virtual(scenario())
    assert cancelled and failed_done
    assert took == pytest.approx(1.0)  # one more period: the second cancel


def test_the_callers_own_cancel_goes_through() -> None:
    stubborn_until = [True]

    async def stubborn() -> None:
        while stubborn_until[0]:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        task = loop.create_task(stubborn())
        closer = loop.create_task(cancel_and_wait([task]))
        await asyncio.sleep(5)  # five cancels lost meanwhile
        closer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closer
        stubborn_until[0] = False
        await cancel_and_wait([task])
        return closer.cancelled()

    assert run_virtual(scenario())
