"""The queue by destination and age, like Postfix's ``qshape``: ``smtpx spool shape``
prints it, the web console (:mod:`smtpx.mta.console`) draws it.

One row per destination domain (the route of a spooled message, else its recipients'
domain; with ``by="sender"``, the sender's domain), the busiest first, under a TOTAL row;
one column per age bucket. A bucket is named by its upper bound: with the defaults
(``first=5m``, ``count=10``, doubling: qshape's) a message 3 minutes old counts under
``5m``, one of 7 minutes under ``10m``, and the last of the ten, ``21h20m+``, holds what
is older than 21h20m.
Works on the JSON shape of :func:`smtpx.spool.filter.message_json`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smtpx.units import format_duration

__all__ = ["Shape", "bounds", "destination", "shape"]

BY = ("recipient", "sender")


@dataclass(frozen=True, slots=True)
class Shape:
    """``labels``: the buckets' names; ``rows``: (domain, [total, count per bucket...]),
    TOTAL first."""

    labels: list[str]
    rows: list[tuple[str, list[int]]]

    def as_json(self) -> dict[str, Any]:
        return {
            "buckets": self.labels,
            "rows": [{"domain": d, "total": c[0], "by_age": c[1:]} for d, c in self.rows],
        }


def bounds(first: float, count: int, *, linear: bool) -> list[float]:
    """The upper bounds in seconds of ``count`` buckets (the last has none): ``first``,
    then each twice the one before (or, ``linear``, ``first`` more)."""
    return [first * (n + 1) if linear else first * 2**n for n in range(count - 1)]


def destination(message: Mapping[str, Any], by: str) -> str:
    """The domain a message counts under (lower case; ``<>`` for the null sender)."""
    if by == "sender":
        sender = str(message.get("sender") or "<>").strip("<>")
        return sender.rpartition("@")[2].lower() if sender else "<>"
    if message.get("route"):
        return str(message["route"]).lower()
    recipients = [str(r) for r in message.get("recipients") or ()]
    recipients += [str(f["recipient"]) for f in message.get("failed") or ()]
    domains = sorted({r.rpartition("@")[2].lower() for r in recipients})
    return ",".join(domains) or "-"


def shape(
    messages: Sequence[Mapping[str, Any]],
    now: float,
    *,
    by: str = "recipient",
    first: float = 300.0,
    count: int = 10,
    linear: bool = False,
) -> Shape:
    """Count ``messages`` by domain and age (see the module docstring)."""
    limits = bounds(first, count, linear=linear)
    cells: dict[str, Counter[int]] = {}
    for message in messages:
        age = now - float(message.get("spool_date") or now)
        column = next((n for n, limit in enumerate(limits) if age < limit), len(limits))
        cells.setdefault(destination(message, by), Counter())[column] += 1
    total: Counter[int] = sum(cells.values(), Counter())
    ordered = sorted(cells.items(), key=lambda item: (-item[1].total(), item[0]))
    width = len(limits) + 1

    def row(counts: Counter[int]) -> list[int]:
        return [counts.total(), *(counts[n] for n in range(width))]

    labels = [format_duration(limit) for limit in limits] + [f"{format_duration(limits[-1])}+"]
    return Shape(labels, [("TOTAL", row(total)), *((d, row(c)) for d, c in ordered)])
