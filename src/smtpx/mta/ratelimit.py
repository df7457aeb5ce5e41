"""Rate limits: messages and recipients per client, network, user and sender domain.

Each ``[[rate_limits.rules]]`` entry caps ``messages`` and/or ``recipients`` per key
(``by``) over a ``window``. The window **slides**: it is counted as two fixed buckets of
the window's length, the current one and the one before, and the previous bucket counts
for the part of it still inside the window (``current + previous * (1 - elapsed/window)``,
Cloudflare's "sliding window counter"). It needs two counters per key, not a log of every
message, and it is exact when traffic is even within a bucket; a burst at the very end
of one bucket is counted a little short or long in the next (never more than the
previous bucket's share).

When they are counted (a refusal is never counted):

* MAIL FROM: refused with ``450 4.7.1`` when one more message would pass a limit (nothing
  is counted yet, so a client that gives up costs nothing); with Redis, this early check
  reads the node's own counts only (what it let through), to save a round trip;
* RCPT TO: each recipient the relay accepts counts; past a limit ``452 4.7.1`` (the client
  sends the others later);
* DATA: the message counts; past a limit ``450 4.7.1`` (checked and counted in one step,
  so concurrent sessions cannot slip past it together).

Sessions from ``relay.trusted_networks`` are not limited while ``exempt_trusted_networks``
is true; the "user" rules apply to authenticated sessions only, the "sender_domain" rules
to a non-null MAIL FROM.

**Sharing.** With ``[redis] url`` set, the counters live in Redis (one Lua script per
check: every rule of the check compared, then counted, atomically), keyed by the wall
clock's bucket number, so every node counts into the same buckets (keep the nodes' clocks
in sync: NTP). Each node also keeps its own count of what it let through. **When Redis is
down** (an error, or no answer within ``[redis] timeout``) a node falls back to its own
counts for :data:`~smtpx.mta.shared.RETRY_AFTER` seconds at a time: each node then
enforces every limit on its own, so N nodes may together let up to N times a limit
through while the outage lasts; nothing is refused because Redis is down, and what the
nodes counted alone is not added to Redis afterwards.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily

from smtpx.mta.config import RateLimitSettings, RateRule, on_listener
from smtpx.mta.guards import Guard
from smtpx.mta.shared import REDIS_ERRORS, Outage
from smtpx.protocol.addresses import Address
from smtpx.protocol.replies import Reply
from smtpx.server import Reject, Session, Transaction
from smtpx.server.limits import client_key
from smtpx.units import short_duration

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["Check", "LocalCounters", "RateLimitGuard", "RedisCounters"]

log = logging.getLogger("smtpx.mta.ratelimit")


@dataclass(frozen=True, slots=True)
class Check:
    """One counter to compare and count: ``key`` names it, ``limit`` over ``window``."""

    key: str
    limit: int
    window: float


def _weight(now: float, window: float) -> tuple[int, float]:
    """The current bucket's number, and the share of the previous one still counted."""
    bucket = math.floor(now / window)
    return bucket, 1.0 - (now - bucket * window) / window


class LocalCounters:
    """The sliding-window counters of this process."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int, int]] = {}  # key -> (bucket, current, previous)
        self._since_prune = 0

    def _get(self, check: Check, bucket: int) -> tuple[int, int]:
        at, current, previous = self._counts.get(check.key, (bucket, 0, 0))
        if at == bucket:
            return current, previous
        return 0, current if at == bucket - 1 else 0

    def over(self, checks: Sequence[Check], now: float) -> int | None:
        """The index of the first check one more would pass, or None."""
        for index, check in enumerate(checks):
            bucket, share = _weight(now, check.window)
            current, previous = self._get(check, bucket)
            if current + previous * share + 1 > check.limit:
                return index
        return None

    def add(self, checks: Sequence[Check], now: float) -> None:
        self._prune(now)
        for check in checks:
            bucket = math.floor(now / check.window)
            current, previous = self._get(check, bucket)
            self._counts[check.key] = (bucket, current + 1, previous)

    def take(self, checks: Sequence[Check], now: float, *, count: bool = True) -> int | None:
        """Count one (with ``count``) unless a check would pass its limit: its index then."""
        over = self.over(checks, now)
        if over is None and count:
            self.add(checks, now)
        return over

    async def hit(self, checks: Sequence[Check], now: float, *, count: bool) -> int | None:
        return self.take(checks, now, count=count)

    def _prune(self, now: float) -> None:
        """Forget counters two buckets old, amortised over the calls."""
        self._since_prune += 1
        if self._since_prune < max(len(self._counts), 1000):
            return
        self._since_prune = 0
        self._counts = {
            key: value
            for key, value in self._counts.items()
            if value[0] >= math.floor(now / _window_of(key)) - 1
        }


def _window_of(key: str) -> float:
    return float(key.rsplit(":", 1)[1])


# Compare every check, then count every check: atomic in Redis. KEYS: current and
# previous bucket per check; ARGV: limit, previous share, time to live per check, then
# 1 to count or 0 to compare only. Returns 0, or the (1-based) check that is over.
_SCRIPT = """
local n = #KEYS / 2
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if current + previous * tonumber(ARGV[3 * i - 1]) + 1 > tonumber(ARGV[3 * i - 2]) then
    return i
  end
end
if ARGV[#ARGV] == '1' then
  for i = 1, n do
    redis.call('INCR', KEYS[2 * i - 1])
    redis.call('EXPIRE', KEYS[2 * i - 1], ARGV[3 * i])
  end
end
return 0
"""


class RedisCounters:
    """The same counters in Redis, shared by the nodes; this node's own as the fallback."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        prefix: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.local = LocalCounters()
        self.outage = Outage("rate limits", monotonic)
        self._script = client.register_script(_SCRIPT)

    async def hit(self, checks: Sequence[Check], now: float, *, count: bool) -> int | None:
        """With ``count`` false (MAIL FROM's early check) only this node's counts are read:
        a Redis round trip costs more CPU (about 250 us with redis-py) than the early
        refusal saves, and DATA checks the shared counts anyway."""
        if count and self.outage.ask():
            try:
                over = await self._ask(checks, now, count=count)
            except REDIS_ERRORS as exc:
                self.outage.failed(exc)
            else:
                self.outage.worked()
                if over is None and count:
                    self.local.add(checks, now)
                return over
        return self.local.take(checks, now, count=count)

    async def _ask(self, checks: Sequence[Check], now: float, *, count: bool) -> int | None:
        keys: list[str] = []
        args: list[str] = []
        for check in checks:
            bucket, share = _weight(now, check.window)
            base = f"{self.prefix}rl:{check.key}:"
            keys += [f"{base}{bucket}", f"{base}{bucket - 1}"]
            args += [str(check.limit), repr(share), str(math.ceil(2 * check.window) + 1)]
        result = await self._script(keys=keys, args=[*args, "1" if count else "0"])
        return None if int(result) == 0 else int(result) - 1


Counters = LocalCounters | RedisCounters
_WHAT = {"client": "client", "network": "network", "user": "user", "sender_domain": "domain"}


class RateLimitGuard(Guard):
    """Applies ``[rate_limits]`` at MAIL, RCPT and DATA (see the module docstring)."""

    name = "rate_limits"

    def __init__(
        self,
        settings: RateLimitSettings,
        counters: Counters,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.counters = counters
        self.clock = clock

    def _applies(self, session: Session) -> bool:
        if self.settings.exempt_trusted_networks and session.data.get("trusted"):
            return False
        return on_listener(self.settings.listeners, session.listener)

    def _checks(
        self, session: Session, transaction: Transaction, kind: str
    ) -> list[tuple[Check, RateRule, str]]:
        found = []
        for index, rule in enumerate(self.settings.rules):
            limit = rule.messages if kind == "m" else rule.recipients
            value = None if limit is None else _key_value(rule, session, transaction)
            if limit is not None and value is not None:
                key = f"{rule.by}:{value}:{kind}{index}:{rule.window:g}"
                found.append((Check(key, limit, rule.window), rule, value))
        return found

    async def _hit(
        self, session: Session, transaction: Transaction, kind: str, *, count: bool = True
    ) -> None:
        if not self._applies(session):
            return
        checks = self._checks(session, transaction, kind)
        if not checks:
            return
        over = await self.counters.hit([c for c, _, _ in checks], self.clock(), count=count)
        if over is None:
            return
        check, rule, value = checks[over]
        self.stats[f"{rule.by} {'messages' if kind == 'm' else 'recipients'}"] += 1
        what = "messages" if kind == "m" else "recipients"
        text = (
            f"Rate limit: too many {what} from {_WHAT[rule.by]} {value}"
            f" ({check.limit} per {short_duration(rule.window)}), try again later"
        )
        raise Reject(Reply.of(450 if kind == "m" else 452, text, "4.7.1"))

    async def mail_from(self, session: Session, transaction: Transaction) -> None:
        await self._hit(session, transaction, "m", count=False)

    async def rcpt_to(self, session: Session, transaction: Transaction, recipient: Address) -> None:
        await self._hit(session, transaction, "r")

    async def accept_data(self, session: Session, transaction: Transaction) -> None:
        await self._hit(session, transaction, "m")

    async def close(self) -> None:
        if isinstance(self.counters, RedisCounters):
            await self.counters.client.aclose()

    def metrics(self) -> Iterable[object]:
        refused = CounterMetricFamily(
            "smtpx_rate_limited",
            "Commands refused by [rate_limits] (450/452 4.7.1), by rule key and what ran over",
            labels=["by", "what"],
        )
        for by in sorted({rule.by for rule in self.settings.rules}):
            for what in ("messages", "recipients"):
                refused.add_metric([by, what], self.stats[f"{by} {what}"])
        yield refused
        if isinstance(self.counters, RedisCounters):
            errors = CounterMetricFamily(
                "smtpx_rate_limit_redis_errors",
                "Redis commands of the rate limits that failed (the node fell back to its own"
                " counts)",
            )
            errors.add_metric([], self.counters.outage.failures)
            yield errors


def _key_value(rule: RateRule, session: Session, transaction: Transaction) -> str | None:
    """What ``rule`` counts this transaction under, or None when it does not apply."""
    if rule.by == "user":
        return session.user if session.authenticated and session.user else None
    if rule.by == "sender_domain":
        sender = transaction.sender.address
        return None if sender is None or not sender.domain else sender.domain.lower()
    ip = session.remote_ip
    if ip is None or client_key(ip) is None:
        return None
    if rule.by == "client":
        return client_key(ip)
    address = ipaddress.ip_address(ip.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = rule.ipv4_prefix if address.version == 4 else rule.ipv6_prefix
    return str(ipaddress.ip_network((address, bits), strict=False))
