"""The daemon's spool monitor (F103): ``[spool] monitor_every`` runs
:mod:`smtpx.spool.fsck` (metadata and ages; bodies are checked by ``smtpx spool fsck``)
that often, logs each problem that persists and each that ends, and exports the
persisting ones as ``smtpx_spool_problems{kind}``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

from smtpx.io.tasks import cancel_and_wait
from smtpx.spool.fsck import Problem, check
from smtpx.spool.monitor import Alert, Monitor

__all__ = ["SpoolWatch"]

log = logging.getLogger("smtpx.spool.monitor")

# What fsck reports; each is exported, 0 when all is well.
KINDS = (
    "damaged",
    "missing-segment",
    "truncated-segment",
    "lost-records",
    "manifest",
    "torn-tail",
    "void",
    "corrupt-file",
    "missing-body",
    "stray-file",
    "too-old",
)


class SpoolWatch:
    """Checks the journal in ``directory`` every ``every`` seconds."""

    def __init__(
        self,
        directory: Path,
        every: float,
        *,
        alert_after: int = 2,
        max_frozen_age: float | None = None,
    ) -> None:
        self.directory = directory
        self.every = every
        self.max_frozen_age = max_frozen_age
        self.monitor = Monitor(alert_after=alert_after)
        self._task: asyncio.Task[None] | None = None

    async def _check(self) -> list[Problem]:
        return await asyncio.to_thread(
            check, self.directory, verify_bodies=False, max_frozen_age=self.max_frozen_age
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self.monitor.run(self._check, self.every, _log_alert)
        )

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def metrics(self) -> Iterable[object]:
        problems = GaugeMetricFamily(
            "smtpx_spool_problems",
            "Spool problems found by the monitor in checks in a row (smtpx spool fsck)",
            labels=["kind"],
        )
        counts = dict.fromkeys(KINDS, 0) | self.monitor.by_kind()
        for kind, count in counts.items():
            problems.add_metric([kind], count)
        yield problems
        checks = GaugeMetricFamily("smtpx_spool_monitor_checks", "Checks the monitor has made")
        checks.add_metric([], self.monitor.checks)
        yield checks


def _log_alert(alert: Alert) -> None:
    if alert.event == "start":
        log.error("spool monitor: %s", alert.problem)
    else:
        log.warning("spool monitor: gone: %s", alert.problem)
