"""A spool monitor: :mod:`smtpx.spool.fsck` run again and again, reporting the problems
that persist (F103, async_smtp's ``Multispool.Monitor.Daemon``).

Each check gives a list of problems. A problem (its kind and where) seen in
``alert_after`` checks in a row starts an alert; once a later check no longer finds it,
the alert ends. One bad check (a segment caught while it is being written, a message
due a moment ago) therefore alerts nobody. ``smtpx spool fsck --watch`` prints the
alerts; the daemon runs one with ``[spool] monitor_every`` and exports the alerting
problems as the ``smtpx_spool_problems`` gauge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from smtpx.spool.fsck import Problem
from smtpx.units import iso_time

__all__ = ["Alert", "Monitor"]

log = logging.getLogger("smtpx.spool.monitor")

Key = tuple[str, str]  # (kind, where): a problem's description may change between checks


@dataclass(frozen=True, slots=True)
class Alert:
    """A problem that has persisted (``start``) or has gone (``end``), at ``time``."""

    event: Literal["start", "end"]
    time: float
    problem: Problem

    def to_json(self) -> dict[str, object]:
        problem = self.problem
        return {
            "event": self.event,
            "time": self.time,
            "kind": problem.kind,
            "where": problem.where,
            "description": problem.description,
        }

    def __str__(self) -> str:
        return f"{iso_time(self.time)} {self.event} {self.problem}"


@dataclass
class Monitor:
    """Counts how many checks in a row found each problem; :meth:`observe` turns a
    check's findings into alerts."""

    alert_after: int = 2
    seen: dict[Key, int] = field(default_factory=dict)
    alerting: dict[Key, Problem] = field(default_factory=dict)
    checks: int = 0

    def __post_init__(self) -> None:
        if self.alert_after < 1:
            raise ValueError("alert_after must be at least 1 check")

    def observe(self, problems: Iterable[Problem], now: float) -> list[Alert]:
        """The alerts that one check's ``problems`` start and end."""
        self.checks += 1
        found = {(p.kind, p.where): p for p in problems}
        gone = [key for key in self.alerting if key not in found]
        alerts = [Alert("end", now, self.alerting.pop(key)) for key in gone]
        self.seen = {key: self.seen.get(key, 0) + 1 for key in found}
        for key, problem in found.items():
            if key in self.alerting:
                self.alerting[key] = problem  # the newest description
            elif self.seen[key] >= self.alert_after:
                self.alerting[key] = problem
                alerts.append(Alert("start", now, problem))
        return alerts

    def by_kind(self) -> dict[str, int]:
        """How many problems of each kind are alerting now."""
        counts: dict[str, int] = {}
        for kind, _ in self.alerting:
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    async def run(
        self,
        check: Callable[[], Awaitable[list[Problem]]],
        every: float,
        report: Callable[[Alert], None],
        *,
        clock: Callable[[], float] = time.time,
        cycles: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Check now and every ``every`` seconds (``cycles`` times, or until cancelled),
        handing each alert to ``report``. A check that fails is logged, and counts as
        no check."""
        done = 0
        while cycles is None or done < cycles:
            if done:
                await sleep(every)
            done += 1
            try:
                problems = await check()
            except Exception:
                log.exception("spool monitor: the check failed")
                continue
            for alert in self.observe(problems, clock()):
                report(alert)
