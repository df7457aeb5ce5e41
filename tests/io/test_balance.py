"""SessionBalance: the workers' counts of sessions in one shared memory."""

from __future__ import annotations

import os

import pytest

from smtpx.io.balance import SLACK, SessionBalance, make_balance


def _memory(count: int) -> int:
    fd = make_balance(count)
    if fd is None:
        pytest.skip("no memfd on this system (not Linux)")
    return fd


def test_each_worker_sees_the_others_counts_and_takes_while_within_its_slack() -> None:
    fd = _memory(3)
    try:
        views = [SessionBalance(fd, i, 3) for i in range(3)]
        views[0].change(SLACK)
        assert [v.sessions for v in views] == [SLACK, 0, 0]
        assert all(v.takes_more() for v in views)  # at most SLACK over the least busy
        views[0].change(1)
        assert not views[0].takes_more() and views[1].takes_more()
        views[1].change(1)
        views[2].change(1)  # the least busy now has one
        assert views[0].takes_more()
        # Connections taken whose sessions are not counted yet count too.
        assert views[1].takes_more(SLACK) and not views[1].takes_more(SLACK + 1)
        views[0].change(-(SLACK + 1))
        assert views[0].sessions == 0
        again = SessionBalance(fd, 1, 3)  # a restarted worker starts from none
        assert views[1].sessions == 0 and again.sessions == 0
        for view in [*views, again]:
            view.close()
        views[0].close()  # (again: nothing)
        views[0].change(-1)  # a session that ends after its server let go: nothing
        assert views[0].takes_more() and views[0].sessions == 0
    finally:
        os.close(fd)


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
