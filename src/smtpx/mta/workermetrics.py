"""Each worker's metrics as one process's would be, across its restarts.

A restarted worker's counters begin again at zero. Added up with the others', the MTA's
total would go down, which Prometheus reads as a reset of the whole counter: ``rate()``
and ``increase()`` would then count everything since the start again, in one step. So
the supervisor keeps each worker's last exposition: when the worker's process id changes,
the counters of its earlier lives are carried and added to what the new process says (the
counts it made after the last scrape before it died are lost, as with one process). A
worker that does not answer (restarting) is shown as last seen, so a scrape in that
moment still answers 200 and no counter dips; ``smtpx_workers_up`` tells it is down.

Monotonic samples: every sample of a ``counter`` family, and the ``_bucket``, ``_count``
and ``_sum`` samples of a ``histogram`` or ``summary``; ``_created`` samples keep their
earliest value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpx.mta.fanout import Families, Family, merge_families, parse_metrics, render_metrics

__all__ = ["WorkerMetrics"]

_MONOTONIC = {
    "counter": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


@dataclass
class _Lives:
    pid: int
    families: Families  # the last exposition, earlier lives' counters added
    carried: Families = field(default_factory=dict)  # earlier lives' counters


class WorkerMetrics:
    """The workers' expositions, continued over restarts (see the module docstring)."""

    def __init__(self) -> None:
        self._workers: dict[int, _Lives] = {}

    def seen(self, worker: int, pid: int, text: str) -> str:
        """What worker ``worker`` (process ``pid``) said, its earlier lives' counters
        added; kept as its last exposition."""
        families = parse_metrics(text)
        lives = self._workers.get(worker)
        if lives is None:
            lives = self._workers[worker] = _Lives(pid, families)
        elif lives.pid != pid:  # a new process: its counters started from zero
            lives.carried = _monotonic(lives.families)
            lives.pid = pid
        # A series an earlier life made and this one has not yet: at its carried value.
        lives.families = merge_families([families, lives.carried])
        return render_metrics(lives.families)

    def last(self, worker: int) -> str | None:
        """Worker ``worker``'s last exposition (None: never seen)."""
        lives = self._workers.get(worker)
        return None if lives is None else render_metrics(lives.families)


def _is_monotonic(kind: str, key: str) -> bool:
    name = key.partition("{")[0]
    # _created is carried too (merging keeps the earliest).
    return name.endswith("_created") or any(name.endswith(e) for e in _MONOTONIC.get(kind, ()))


def _monotonic(families: Families) -> Families:
    return {
        name: Family(
            family.comments,
            family.kind,
            {k: v for k, v in family.samples.items() if _is_monotonic(family.kind, k)},
        )
        for name, family in families.items()
        if family.kind in _MONOTONIC or name.endswith("_created")
    }
