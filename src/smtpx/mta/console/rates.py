"""Throughput and deferral reasons over time: a small ring of per-minute counters, fed by
the spool's events (the web console draws it; ``GET /v1/console/rates``).

Nothing here reads a clock: each event brings its time, and :meth:`Rates.as_json` is
given ``now``. :class:`RatesFeed` is the spool's listener: two events a message, so this
module is in the compiled build (docs/performance.md). Memory is bounded:
:data:`MINUTES` minutes are kept, and at most :data:`REASONS_PER_MINUTE` distinct
deferral reasons a minute (the rest count as :data:`OTHER`).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smtpx.spool.types import EventKind, SpoolEvent
from smtpx.spool.unreachable import SUSPENDED

__all__ = [
    "COUNTED",
    "MINUTES",
    "OTHER",
    "REASONS_PER_MINUTE",
    "Rates",
    "RatesFeed",
    "merge_rates",
    "reason_of",
]

MINUTES = 60
REASONS_PER_MINUTE = 20
REASON_LENGTH = 120
OTHER = "(other reasons)"

# What each counter counts: the events that feed it.
COUNTED = {
    EventKind.SPOOLED: "spooled",
    EventKind.DELIVERED: "delivered",
    EventKind.DELAYED: "deferred",
    EventKind.DELAYED_RATE_LIMITED: "deferred",
    EventKind.BOUNCED: "bounced",
}
SERIES = ("spooled", "delivered", "deferred", "bounced")


@dataclass(slots=True, init=False)
class _Minute:
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def __init__(self) -> None:  # (written out: the dataclass's runs interpreted, compiled)
        self.counts = Counter()
        self.reasons = Counter()


@functools.lru_cache(maxsize=256)  # (deferrals repeat the same few errors)
def reason_of(error: str | None) -> str:
    """A deferral reason as the console groups it: the last attempt's error on one line,
    cut to :data:`REASON_LENGTH` characters; ``unknown`` when there is none. Mail deferred
    without an attempt while its destination is suspended counts under the error that
    suspended it."""
    text = re.sub(r"\s+", " ", error or "").strip().removeprefix(SUSPENDED)
    if not text:
        return "unknown"
    return text if len(text) <= REASON_LENGTH else text[: REASON_LENGTH - 1] + "…"


class Rates:
    """The last :data:`MINUTES` minutes of spool activity, a counter set per minute."""

    def __init__(self, minutes: int = MINUTES) -> None:
        self.minutes = minutes
        self._ring: dict[int, _Minute] = {}
        self._newest: int | None = None  # the newest minute counted

    def count(self, kind: EventKind, when: float, reason: str | None = None) -> None:
        """Count one event of ``kind`` at ``when`` (a deferral with its ``reason``);
        events of other kinds, and older than the ring, are not counted."""
        name = COUNTED.get(kind)
        minute = int(when // 60)
        newest = minute if self._newest is None else self._newest
        if name is None or minute <= newest - self.minutes:
            return
        cell = self._ring.get(minute)
        if cell is None:
            cell = self._ring[minute] = _Minute()
        cell.counts[name] += 1
        if name == "deferred":
            text = reason_of(reason)
            if text not in cell.reasons and len(cell.reasons) >= REASONS_PER_MINUTE:
                text = OTHER
            cell.reasons[text] += 1
        if minute > newest or self._newest is None:  # (a new minute: drop what fell out)
            self._newest = minute
            for old in [m for m in self._ring if m <= minute - self.minutes]:
                del self._ring[old]

    def as_json(self, now: float) -> dict[str, Any]:
        """The ring up to ``now``: ``series``, one entry per minute, oldest first (minutes
        without events count zero), and ``reasons``: each deferral reason's total and its
        count per minute, the most frequent first."""
        last = int(now // 60)
        minutes = range(last - self.minutes + 1, last + 1)
        empty = _Minute()
        cells = [self._ring.get(m, empty) for m in minutes]
        series = [
            {"start": m * 60, **{name: cell.counts[name] for name in SERIES}}
            for m, cell in zip(minutes, cells, strict=True)
        ]
        totals: Counter[str] = Counter()
        for cell in cells:
            totals.update(cell.reasons)
        reasons = [
            {"reason": text, "total": total, "by_minute": [cell.reasons[text] for cell in cells]}
            for text, total in sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        ]
        return {"minute_seconds": 60, "series": series, "reasons": reasons}


class RatesFeed:
    """Counts the spool's events into ``rates`` as they are published (a listener: no
    queue, no task woken per event). A deferral whose event does not say why (an older
    node's) goes to ``look_up``, which counts it once its reason is known."""

    def __init__(self, rates: Rates, look_up: Callable[[SpoolEvent], None]) -> None:
        self.rates = rates
        self.look_up = look_up

    def count(self, event: SpoolEvent) -> None:
        name = COUNTED.get(event.kind)
        if name is None:
            return
        if name != "deferred":
            self.rates.count(event.kind, event.time)
        elif event.reason:
            self.rates.count(event.kind, event.time, event.reason)
        else:
            self.look_up(event)


def merge_rates(parts: list[dict[str, Any]], minutes: int = MINUTES) -> dict[str, Any]:
    """Several processes' :meth:`Rates.as_json` answers as one (the workers of one
    supervisor): counts added minute by minute, matched by each minute's start, the last
    ``minutes`` kept; reasons added up by their text."""
    counts: dict[int, Counter[str]] = {}
    reasons: dict[str, Counter[int]] = {}
    for part in parts:
        starts = [entry["start"] for entry in part["series"]]
        for entry in part["series"]:
            counts.setdefault(entry["start"], Counter()).update(
                {name: entry[name] for name in SERIES}
            )
        for reason in part["reasons"]:
            by_start = reasons.setdefault(reason["reason"], Counter())
            by_start.update(dict(zip(starts, reason["by_minute"], strict=True)))
    kept = sorted(counts)[-minutes:]
    series = [{"start": start, **{name: counts[start][name] for name in SERIES}} for start in kept]
    totals = {text: sum(by[s] for s in kept) for text, by in reasons.items()}
    merged = [
        {"reason": text, "total": total, "by_minute": [reasons[text][s] for s in kept]}
        for text, total in sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        if total
    ]
    return {"minute_seconds": 60, "series": series, "reasons": merged}
