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

__all__ = ["WorkerMetrics"]

_MONOTONIC = {
    "counter": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


@dataclass
class _Family:
    comments: list[str]  # its "# HELP" and "# TYPE" lines
    kind: str  # counter, gauge, histogram...
    samples: dict[str, float]  # sample (name and labels) -> value


@dataclass
class _Lives:
    pid: int
    families: dict[str, _Family]  # the last exposition, earlier lives' counters added
    carried: dict[str, _Family] = field(default_factory=dict)  # earlier lives' counters


class WorkerMetrics:
    """The workers' expositions, continued over restarts (see the module docstring)."""

    def __init__(self) -> None:
        self._workers: dict[int, _Lives] = {}

    def seen(self, worker: int, pid: int, text: str) -> str:
        """What worker ``worker`` (process ``pid``) said, its earlier lives' counters
        added; kept as its last exposition."""
        families = _parse(text)
        lives = self._workers.get(worker)
        if lives is None:
            lives = self._workers[worker] = _Lives(pid, families)
        elif lives.pid != pid:  # a new process: its counters started from zero
            lives.carried = _monotonic(lives.families)
            lives.pid = pid
        _add(families, lives.carried)
        lives.families = families
        return _render(families)

    def last(self, worker: int) -> str | None:
        """Worker ``worker``'s last exposition (None: never seen)."""
        lives = self._workers.get(worker)
        return None if lives is None else _render(lives.families)


def _parse(text: str) -> dict[str, _Family]:
    families: dict[str, _Family] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# "):
            parts = line.split(" ", 3)
            name = parts[2] if len(parts) > 2 else ""
            current = families.setdefault(name, _Family([], "", {}))
            current.comments.append(line)
            if parts[1] == "TYPE" and len(parts) > 3:
                current.kind = parts[3].strip()
        elif line.strip():
            if current is None:  # a sample before any comment: a family without one
                current = families.setdefault("", _Family([], "", {}))
            key, _, value = line.rpartition(" ")
            current.samples[key] = float(value)
    return families


def _created(key: str) -> bool:
    return key.partition("{")[0].endswith("_created")


def _is_monotonic(kind: str, key: str) -> bool:
    name = key.partition("{")[0]
    # _created is carried too: the earliest start is kept.
    return _created(key) or any(name.endswith(end) for end in _MONOTONIC.get(kind, ()))


def _monotonic(families: dict[str, _Family]) -> dict[str, _Family]:
    return {
        name: _Family(
            family.comments,
            family.kind,
            {k: v for k, v in family.samples.items() if _is_monotonic(family.kind, k)},
        )
        for name, family in families.items()
        if family.kind in _MONOTONIC or name.endswith("_created")
    }


def _add(families: dict[str, _Family], carried: dict[str, _Family]) -> None:
    """The carried values added to ``families`` (a series an earlier life made and this
    one has not yet is shown at its carried value)."""
    for name, old in carried.items():
        family = families.setdefault(name, _Family(old.comments, old.kind, {}))
        for key, value in old.samples.items():
            now = family.samples.get(key)
            if now is None:
                family.samples[key] = value
            else:
                family.samples[key] = min(value, now) if _created(key) else value + now


def _render(families: dict[str, _Family]) -> str:
    lines = []
    for family in families.values():
        lines += family.comments
        lines += (f"{key} {value!r}" for key, value in family.samples.items())
    return "\n".join(lines) + "\n"
