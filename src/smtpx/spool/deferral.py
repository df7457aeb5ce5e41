"""A message deferred: its next attempt scheduled (the next retry interval, with jitter)
and the deferral announced (a mail log line, an event).

Delivery defers after an attempt; intake defers at once the mail for a destination found
unreachable (:mod:`smtpx.spool.unreachable`), each message of it, which is why this is
apart from the delivery engine and in the compiled build (docs/performance.md).
"""

from __future__ import annotations

import functools
import random

from smtpx.envelope import RetryInterval
from smtpx.spool.context import SpoolContext
from smtpx.spool.message import SpooledMessage, Status, destination_key
from smtpx.spool.types import EventKind
from smtpx.units import iso_time

__all__ = ["defer_untried", "report_deferred", "schedule_retry"]

# Intervals are stored as text; a few distinct ones recur (RetryInterval is immutable).
_parse_interval = functools.lru_cache(maxsize=256)(RetryInterval.parse)


def schedule_retry(
    entry: SpooledMessage, now: float, rng: random.Random, not_before: float = 0.0
) -> None:
    """``entry`` waits for its next retry interval (which it uses up), and at least until
    ``not_before``."""
    interval = _parse_interval(entry.retry_intervals.pop(0))
    entry.next_attempt = max(now + interval.to_span(rng), not_before)
    entry.status = Status.SEND_AT


def defer_untried(
    context: SpoolContext, entry: SpooledMessage, now: float, rng: random.Random
) -> None:
    """At intake, before ``entry`` is stored: when its destination is suspended and it
    has a retry interval, it waits for that interval as after a failed attempt (one
    record, no claim, no connection; its status says so)."""
    unreachable = context.unreachable
    if not entry.retry_intervals or not unreachable:  # (nothing suspended: the norm)
        return
    suspension = unreachable.suspended(destination_key(entry))
    if suspension is not None:
        entry.record_attempt(now, suspension.reason)
        schedule_retry(entry, now, rng, suspension.until)


def report_deferred(
    context: SpoolContext,
    entry: SpooledMessage,
    recipients: list[str],
    remote: str | None,
    error: str | None,
    *,
    rate_limited: bool = False,
) -> None:
    """Count, log and announce that ``entry`` waits for its next attempt."""
    assert entry.next_attempt is not None
    context.stats["deferred"] += 1
    until = iso_time(entry.next_attempt)
    reply = entry.last_attempt[1] if entry.last_attempt else error
    context.log(entry).info(
        "deferred",
        session_marker="deferred",
        spool_id=entry.id,
        recipients=recipients,
        relay=remote,
        reply=reply,
        next_attempt=until,
    )
    kind = EventKind.DELAYED_RATE_LIMITED if rate_limited else EventKind.DELAYED
    context.emit(kind, entry, f"until {until}", reply or "")
