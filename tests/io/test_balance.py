"""SessionBalance: the workers' counts of sessions in one shared memory."""

from __future__ import annotations

import asyncio
import os

import pytest

from smtpx.io.balance import BEAT_EVERY, SLACK, STALE, Beats, SessionBalance, make_balance
from smtpx.testing import run_virtual


def _memory(count: int) -> int:
    fd = make_balance(count)
    if fd is None:
        pytest.skip("no memfd on this system (not Linux)")
    return fd


def test_each_worker_sees_the_others_counts_and_takes_while_within_its_slack() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fd = _memory(3)
        try:
            views = [SessionBalance(fd, i, 3, clock=loop.time) for i in range(3)]
            for view in views:
                view.start_beating(loop)
            views[0].change(SLACK)
            assert [v.sessions for v in views] == [SLACK, 0, 0]
            assert all(v.takes_more() for v in views)  # at most SLACK over the least busy
            views[0].change(1)
            assert not views[0].takes_more() and views[1].takes_more()
            await asyncio.sleep(10 * STALE)  # (the beats go on: the same after a while)
            assert not views[0].takes_more()
            views[1].change(1)
            views[2].change(1)  # the least busy now has one
            assert views[0].takes_more()
            # Connections taken whose sessions are not counted yet count too.
            assert views[1].takes_more(SLACK) and not views[1].takes_more(SLACK + 1)
            views[0].change(-(SLACK + 1))
            assert views[0].sessions == 0
            again = SessionBalance(fd, 1, 3, clock=loop.time)  # a restarted worker: none
            assert views[1].sessions == 0 and again.sessions == 0
            for view in [*views, again]:
                view.close()
            views[0].close()  # (again: nothing)
            views[0].change(-1)  # a session that ends after its server let go: nothing
            assert views[0].takes_more() and views[0].sessions == 0
        finally:
            os.close(fd)

    run_virtual(main())


def test_a_worker_that_does_not_beat_is_left_out() -> None:
    # A worker whose loop stopped turning (hung, or stopped by a signal) keeps the count
    # it had: the others no longer wait for it once its beat is STALE seconds old; and a
    # worker that is not serving yet (or any more) counts for nothing from the start.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stuck = asyncio.new_event_loop()  # (never run: its timers never fire)
        fd = _memory(3)
        try:
            busy, hung, idle = (SessionBalance(fd, i, 3, clock=loop.time) for i in range(3))
            busy.start_beating(loop)
            hung.start_beating(stuck)
            busy.change(SLACK + 1)
            idle.change(SLACK + 1)  # (not beating: not serving yet)
            assert not busy.takes_more()  # hung has none, and its beat is fresh
            await asyncio.sleep(STALE - BEAT_EVERY)
            assert not busy.takes_more()
            await asyncio.sleep(BEAT_EVERY + 0.01)
            assert busy.takes_more()  # hung is left out; idle was never counted
            idle.start_beating(loop)  # idle serves now, as busy as busy: still takes
            assert busy.takes_more()
            idle.change(-(SLACK + 1))
            assert not busy.takes_more()  # one over idle's none and the SLACK
            idle.close()  # idle stops serving: left out at once
            assert busy.takes_more()
            for view in (busy, hung):
                view.close()
        finally:
            os.close(fd)
            stuck.close()

    run_virtual(main())


def test_a_single_worker_always_takes_and_a_bad_index_is_refused() -> None:
    fd = _memory(1)
    try:
        alone = SessionBalance(fd, 0, 1)
        alone.change(50)
        assert alone.takes_more()
        alone.close()
        with pytest.raises(ValueError, match="worker 1 of 1"):
            SessionBalance(fd, 1, 1)
    finally:
        os.close(fd)


def test_the_supervisor_finds_the_workers_whose_loop_stood_still() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stuck = asyncio.new_event_loop()  # (never run: a beat is stamped once, then stands)
        fd = _memory(3)
        try:
            hung, alive, idle = (SessionBalance(fd, i, 3, clock=loop.time) for i in range(3))
            beats = Beats(fd, 3, clock=loop.time)
            hung.start_beating(stuck)
            alive.start_beating(loop)  # idle does not serve: never "stalled"
            assert beats.stalled(60.0) == []
            await asyncio.sleep(59.0)
            assert beats.stalled(60.0) == []
            await asyncio.sleep(2.0)
            assert beats.stalled(60.0) == [0]  # its loop stood still 61 s; alive's turned
            beats.clear(0)  # killed: not found again; its next run beats anew
            assert beats.stalled(60.0) == []
            alive.close()  # one that stops serving is not stalled either
            await asyncio.sleep(100.0)
            assert beats.stalled(60.0) == []
            beats.close()
            for view in (hung, idle):
                view.close()
        finally:
            os.close(fd)
            stuck.close()

    run_virtual(main())
