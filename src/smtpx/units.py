"""Durations and sizes as people write and read them: the one parser and the printers of
each, for the configuration, retry intervals, the command line and what it shows.

Durations: ``30s``, ``5m``, ``2h``, ``1d``, ``1.5h``, bare seconds (``90``), and several
units largest first, as :func:`format_duration` and :func:`short_duration` print them:
``1h30m``, ``1m31s``, ``2h05m``, ``3d04h``. Sizes: ``35M``, ``512K``, ``1G`` (binary
multiples; ``MB`` and ``MiB`` mean the same), or bare bytes.

Moments: :func:`iso_time`, ISO 8601 in UTC (``2026-11-24T04:30:00Z``), for text that
leaves the process (events, log details); never bare epoch seconds.

Pure computation on the standard library, so every layer may use it.
"""

from __future__ import annotations

import math
import re
import time

__all__ = [
    "DURATION_UNITS",
    "exim_age",
    "exim_size",
    "format_duration",
    "format_size",
    "iso_time",
    "parse_duration",
    "parse_size",
    "short_duration",
]

DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
# A bare number of seconds, or numbers with units: d, h, m, s in that order, each at most once.
_DURATION_RE = re.compile(
    rf"\s*(?:({NUMBER})|" + "".join(rf"(?:({NUMBER})\s*{u}\s*)?" for u in DURATION_UNITS) + ")"
)
_SIZE_RE = re.compile(rf"\s*({NUMBER})\s*(?:([KMG])(?:i?B)?|B)?\s*", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds (finite, >= 0) from ``text``; :class:`ValueError` when it is not one."""
    match = _DURATION_RE.fullmatch(text)
    if match is None or not any(match.groups()):
        raise ValueError(f"not a duration (like 30s, 5m, 1h30m, 2d): {text!r}")
    bare, *terms = match.groups()
    if bare is not None:
        return _finite(float(bare), text)
    sizes = DURATION_UNITS.values()
    return _finite(sum(float(n) * size for n, size in zip(terms, sizes, strict=True) if n), text)


def _finite(seconds: float, text: str) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite duration: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The exact text of ``seconds``: ``1h30m``, ``2d``, ``0s``, ``0.25s``;
    :func:`parse_duration` reads back the same float."""
    if seconds != int(seconds):
        return f"{seconds!r}s"  # repr: the shortest text that reads back as this float
    rest = int(seconds)
    parts: list[str] = []
    for unit, size in DURATION_UNITS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def short_duration(seconds: float) -> str:
    """For people, to a few percent: ``42s``, ``5m12s``, ``2h05m``, ``3d04h`` (the two
    largest units, whole seconds down)."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def exim_age(seconds: float) -> str:
    """``exim -bp`` ages: minutes up to 99, hours up to 47, then days."""
    minutes = max(0, int(seconds // 60))
    if minutes < 100:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def parse_size(text: str) -> int:
    """Octets from ``text`` (``35M``, ``512K``, ``1.5G``, ``4096``); :class:`ValueError`
    when it is not a size."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size (like 35M, 512K, 1G or a number of bytes): {text!r}")
    octets = float(match[1]) * _SIZE_UNITS[(match[2] or "").lower()]
    if not math.isfinite(octets):
        raise ValueError(f"not a finite size: {text!r}")
    return int(octets)


def exim_size(size: int) -> str:
    """``exim -bp`` sizes: octets under 1K, then ``2.9K``, ``15K``, ``1.2M``, ``35M``."""
    if size < 1024:
        return str(size)
    for unit, factor in (("K", 1024), ("M", 1024**2)):
        value = size / factor
        if value < 10:
            return f"{value:.1f}{unit}"
        if value < 1024 or unit == "M":
            return f"{value:.0f}{unit}"
    return str(size)  # not reached


def format_size(size: int) -> str:
    """The exact text of ``size`` octets: ``35M``, ``512K``, ``1G`` for whole multiples,
    else the number; :func:`parse_size` reads back the same number."""
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# The texts of the seconds asked lately: a busy server asks for the same few (now, for
# its log lines; now plus the first retry interval, for each deferral) thousands of
# times a second, and strftime costs more than the lookup.
_RECENT: dict[int, str] = {}


def iso_time(epoch: float) -> str:
    """``epoch`` seconds as ISO 8601 in UTC, to the second: ``2026-11-24T04:30:00Z``."""
    second = math.floor(epoch)
    text = _RECENT.get(second)
    if text is None:
        if len(_RECENT) >= 16:
            _RECENT.clear()
        # (strftime: 3x datetime's speed)
        text = _RECENT[second] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    return text
