"""Where a message goes next and when it is tried again: :class:`HostPort` (a next hop)
and :class:`RetryInterval` (F4, F5), re-exported by :mod:`smtpx.envelope`.

A module of its own, never compiled: their checks refuse a ``bool`` for a port or a
number of seconds, which a compiled class would have taken as the number it stands for
before the check saw it (docs/performance.md, "Writing code that compiles").
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
from dataclasses import dataclass

from smtpx.errors import ParseError
from smtpx.units import format_duration, parse_duration

__all__ = ["HostPort", "RetryInterval"]


def _check_seconds(what: str, seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {seconds!r}")
    # -0.0 prints as "0s" and reads back as 0.0, so store 0.0.
    return float(seconds) + 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryInterval:
    """How long to wait before the next delivery attempt (F5).

    ``span`` and ``jitter`` are seconds, both >= 0. :meth:`to_span` spreads retries over
    ``span ± jitter`` so that a backlog does not retry in lockstep. Text form: a duration
    of :mod:`smtpx.units` (``30s``, ``5m``, ``1h30m``, ``1.5h``, or bare seconds), optionally
    followed by ``~`` and the jitter (``5m~30s``).
    """

    span: float
    jitter: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "span", _check_seconds("span", self.span))
        if self.jitter is not None:
            object.__setattr__(self, "jitter", _check_seconds("jitter", self.jitter))

    @classmethod
    def parse(cls, text: str) -> RetryInterval:
        """Read the form written by :meth:`__str__` (and the shorthands of
        :func:`smtpx.units.parse_duration`: ``90``, ``1.5h``, ``1h30m``)."""
        span_text, tilde, jitter_text = text.partition("~")
        try:
            span = parse_duration(span_text)
            jitter = parse_duration(jitter_text) if tilde else None
            return cls(span=span, jitter=jitter)
        except ValueError:
            raise ParseError(f"not a retry interval (like 5m or 5m~30s): {text!r}") from None

    def to_span(self, rng: random.Random | None = None) -> float:
        """A delay in seconds drawn uniformly from ``[span - jitter, span + jitter]``.

        The lower end is raised to 0 when the jitter exceeds the span (the draw stays
        uniform over what remains). Without jitter this is ``span``.
        """
        if not self.jitter:
            return self.span
        low = max(0.0, self.span - self.jitter)
        high = self.span + self.jitter
        # uniform() may round a hair past its ends; clamp to keep the contract.
        return min(high, max(low, (rng or random).uniform(low, high)))

    def __str__(self) -> str:
        text = format_duration(self.span)
        if self.jitter is not None:
            text += "~" + format_duration(self.jitter)
        return text


_PORT_RE = re.compile(r"[0-9]{1,5}")
# Characters that would make ``host:port`` ambiguous or are never part of a host name.
_BAD_HOST_RE = re.compile(r"[\x00-\x20\x7f\[\]/@,<>]")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class HostPort:
    """A next hop: a host name or IP address, and a TCP port (default 25, RFC 5321 4.5.4).

    ``host`` never carries brackets; an IPv6 address is written ``[::1]:25`` by
    :meth:`__str__`, which :meth:`parse` reads back.
    """

    host: str
    port: int = 25

    def __post_init__(self) -> None:
        if not self.host or _BAD_HOST_RE.search(self.host):
            raise ValueError(f"not a host name or address: {self.host!r}")
        if ":" in self.host and not _is_ipv6(self.host):
            raise ValueError(f"a host with ':' must be an IPv6 address: {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an int, not {type(self.port).__name__}")
        if not 1 <= self.port <= 65_535:
            raise ValueError(f"port must be in 1..65535, not {self.port}")

    @classmethod
    def parse(cls, text: str, *, default_port: int = 25) -> HostPort:
        """Read ``host``, ``host:port``, ``[ipv6]``, ``[ipv6]:port`` or a bare IPv6 address."""
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not _is_ipv6(host):
                raise ParseError(f"bad bracketed IPv6 address in {text!r}")
            if rest and not rest.startswith(":"):
                raise ParseError(f"unexpected text after ']' in {text!r}")
            port_text: str | None = rest[1:] if rest else None
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:
            # No colon, or several: the latter is only valid as an IPv6 address without a
            # port, which __post_init__ checks.
            host, port_text = text, None
        if port_text is None:
            port = default_port
        elif _PORT_RE.fullmatch(port_text):
            port = int(port_text)
        else:
            raise ParseError(f"bad port in {text!r}")
        try:
            return cls(host=host, port=port)
        except ValueError as exc:
            raise ParseError(f"bad next hop {text!r}: {exc}") from None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"
