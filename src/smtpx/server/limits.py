"""Per-client connection limits: concurrent sessions and connection rate.

A client is an IPv4 address, or an IPv6 /64 (what one customer line usually gets, so
hopping addresses inside it does not help); an IPv4-mapped IPv6 address counts as its
IPv4 address. Clients inside an exempt network, and connections without an IP peer
(a unix socket), are not limited.

Sans-I/O: :class:`ClientLimiter` reads time from the clock it is given, so tests run it
on a virtual one. The rate is a token bucket: ``max_rate`` connections at once, then one
more each ``60 / max_rate`` seconds.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "LOOPBACK",
    "Admitted",
    "ClientLimiter",
    "ClientLimits",
    "IPNetwork",
    "Refused",
    "client_ip",
    "client_key",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLimits:
    """``max_sessions``: concurrent sessions per client; ``max_rate``: new connections
    per client per minute; None: no limit. ``exempt``: networks not limited (by default
    this host, as the MTA's default ``relay.trusted_networks``)."""

    max_sessions: int | None = 20
    max_rate: int | None = 60
    exempt: Sequence[IPNetwork] = LOOPBACK


class Refused(enum.Enum):
    """Why a connection was turned away (each answered ``421 4.7.0``)."""

    SESSIONS = "sessions_per_client"
    RATE = "rate_per_client"


@dataclass(frozen=True, slots=True, init=False)
class Admitted:
    """A connection let in; give it back to :meth:`ClientLimiter.release` at its end.
    ``key`` is None for a client that is not counted (exempt, or no IP)."""

    key: str | None

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (ten times the cost; docs/performance.md, "Writing code that compiles").
    def __init__(self, key: str | None) -> None:
        object.__setattr__(self, "key", key)


KEY_CACHE = 4096  # client addresses whose key ClientLimiter remembers

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(address: str) -> IPAddress | None:
    """A client's address as text (a socket's, maybe with an IPv6 zone; a bracketed
    literal) as an IP address, IPv4-mapped IPv6 unwrapped; None when it is not one."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").partition("%")[0])  # drop a zone
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:192.0.2.1 from a dual-stack socket
    return ip


def _key_of(ip: IPAddress) -> str:
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_key(address: str) -> str | None:
    """The client an IP address belongs to (the address, or its IPv6 /64); None when
    ``address`` is not an IP address."""
    ip = client_ip(address)
    return None if ip is None else _key_of(ip)


class ClientLimiter:
    """Counts sessions and connection attempts per client."""

    def __init__(self, limits: ClientLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.sessions: Counter[str] = Counter()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._since_prune = 0
        # address -> its key: parsing an address and matching it against the exempt
        # networks was a third of a new session's set-up; the same clients come back.
        self._keys: dict[str, str | None] = {}

    def admit(self, address: str | None) -> Admitted | Refused:
        """Let a connection from ``address`` in (count it), or say why not."""
        key = self._key(address)
        if key is None:
            return Admitted(None)
        limit = self.limits.max_sessions
        if limit is not None and self.sessions[key] >= limit:
            return Refused.SESSIONS
        if not self._take_token(key):
            return Refused.RATE
        self.sessions[key] += 1
        return Admitted(key)

    def release(self, admitted: Admitted) -> None:
        """A session admitted earlier has ended."""
        key = admitted.key
        if key is None:
            return
        self.sessions[key] -= 1
        if self.sessions[key] <= 0:
            del self.sessions[key]

    def _key(self, address: str | None) -> str | None:
        if address is None:
            return None
        try:
            return self._keys[address]
        except KeyError:
            pass
        ip = client_ip(address)
        exempt = ip is None or any(ip in network for network in self.limits.exempt)
        key = None if ip is None or exempt else _key_of(ip)
        if len(self._keys) >= KEY_CACHE:
            self._keys.clear()  # bounded: a flood of distinct clients costs a re-parse
        self._keys[address] = key
        return key

    def _take_token(self, key: str) -> bool:
        rate = self.limits.max_rate
        if rate is None:
            return True
        now = self.clock()
        self._prune(now, rate)
        tokens, at = self._buckets.get(key, (float(rate), now))
        tokens = min(float(rate), tokens + (now - at) * rate / 60.0)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _prune(self, now: float, rate: int) -> None:
        """Forget the buckets that have filled up again; amortised over the calls, so the
        table stays the size of the recent clients, whatever their number."""
        self._since_prune += 1
        if self._since_prune < len(self._buckets):
            return
        self._since_prune = 0
        self._buckets = {
            key: (tokens, at)
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * rate / 60.0 < rate
        }
