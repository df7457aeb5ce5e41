"""A listener told to stop stops, even when a notification arrives in the same turn.

On Python 3.11, ``asyncio.wait_for`` returned the result of what it awaited when that
finished in the turn the cancel came: the cancel was lost and the store's listening
loop went on, so a node's shutdown waited for it for good (a CI run saw ``smtpx
serve`` on PostgreSQL still running 30 s after SIGTERM). No database needed: the
listeners are fed the way asyncpg's callbacks feed them.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from smtpx.spool.pg.notify import DueListener, EventListener, NodeEvent, event_payload

NO_CONNECTION = cast(Any, object())  # the waits never touch it


async def test_a_hint_in_the_turn_of_the_cancel_does_not_keep_the_wait() -> None:
    listener = DueListener(NO_CONNECTION)
    waiting = asyncio.create_task(listener.wait(60))
    await asyncio.sleep(0)
    listener._notified(None, 1, "due", "")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_an_event_in_the_turn_of_the_cancel_does_not_keep_the_wait() -> None:
    listener = EventListener(NO_CONNECTION)
    waiting = asyncio.create_task(listener.next(60))
    await asyncio.sleep(0)
    payload = event_payload(NodeEvent("b", "delivered", "id1", "", 1.0))
    listener._notified(None, 1, "events", payload)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await listener.next(0) == NodeEvent("b", "delivered", "id1", "", 1.0)  # kept


async def test_the_waits_still_time_out_and_still_report_hints() -> None:
    listener = DueListener(NO_CONNECTION)
    assert await listener.wait(0.001) is False
    listener._notified(None, 1, "due", "")
    assert await listener.wait(60) is True
    events = EventListener(NO_CONNECTION)
    assert await events.next(0.001) is None
