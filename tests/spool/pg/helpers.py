"""What the PostgreSQL queue tests share: a settable clock and spool-shaped metadata."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.records import Location
from smtpx.testing.postgres import Cluster, MissingPostgres, start_cluster
from tests.conftest import _missing

EPOCH = 1_800_000_000.0


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(
    n: int | str,
    *,
    status: Status = Status.SEND_NOW,
    at: float | None = None,
    parent: str | None = None,
    message_id: str | None = None,
) -> SpooledMessage:
    """A spooled message as the journal spool makes them (the body is stored apart)."""
    name = str(n)
    return SpooledMessage(
        id=f"m{name}",
        parent_id=parent or f"m{name}",
        spool_date=EPOCH - 60,
        status=status,
        sender="<sender@example.com>",
        recipients=[f"r{name}@example.org"],
        location=Location(0, 0, 0),
        next_attempt=at,
        next_hops=("mx.example.org:25",),
        retry_intervals=["5m", "1h"],
        message_id=message_id or f"<{name}@example.com>",
        rcpt_params={f"r{name}@example.org": "NOTIFY=FAILURE"},
    )


def meta(n: int | str, **kw: Any) -> dict[str, Any]:
    return entry(n, **kw).to_meta()


def private_cluster() -> Iterator[Cluster]:
    """Start a private cluster, hand it out, stop it (skip or fail when PostgreSQL is missing)."""
    try:
        cluster = start_cluster()
    except MissingPostgres as exc:
        _missing(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()
