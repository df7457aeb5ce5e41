"""Greylisting (RFC 6647): the first delivery of an unknown triplet waits.

A triplet is (client network, MAIL FROM, RCPT TO): the client's /24 (IPv6: /64, both
configurable, since big senders retry from another host), the sender and the recipient,
without case. At RCPT TO:

* a triplet never seen, or last seen more than ``retry_window`` ago: remembered, and
  refused with ``451 4.7.1 Greylisted, try again in N seconds``;
* seen less than ``delay`` ago: refused the same way (N is what is left);
* seen at least ``delay`` ago: it passes, and passes at once from then on for
  ``expire`` (renewed by each message).

Never greylisted: clients in ``relay.trusted_networks``, authenticated clients, clients a
DNS allow list names (:mod:`smtpx.mta.dnsbl`, negative weight), listeners not in
``listeners``. Triplets are stored in Redis when ``[redis] url`` is set (one Lua script per
check, keys ``<prefix>grey:<sha256>`` that expire by themselves; shared by every node), else
in this process's memory. While Redis is down nothing is greylisted (the mail passes, the
failure is counted and logged): deferring all mail would be worse than letting some spam
through for a while.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily

from smtpx.mta.config import GreylistSettings, on_listener
from smtpx.mta.guards import Guard, is_own
from smtpx.mta.shared import REDIS_ERRORS, Outage
from smtpx.protocol.addresses import Address
from smtpx.protocol.replies import Reply
from smtpx.server import Reject, Session, Transaction
from smtpx.server.limits import client_ip

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["KNOWN", "PASSED", "GreylistGuard", "MemoryTriplets", "RedisTriplets", "triplet"]

PASSED = 0  # seen before, long enough ago: passes from now on
KNOWN = -1  # passed before: passes


def triplet(settings: GreylistSettings, ip: str, sender: str, recipient: str) -> str | None:
    """The triplet's key (None when ``ip`` is not an IP address)."""
    address = client_ip(ip)
    if address is None:
        return None
    bits = settings.ipv4_prefix if address.version == 4 else settings.ipv6_prefix
    network = ipaddress.ip_network((address, bits), strict=False)
    return f"{network} {sender.lower()} {recipient.lower()}"


class MemoryTriplets:
    """Triplets in this process: key -> (first seen, passed until or None)."""

    def __init__(self, settings: GreylistSettings) -> None:
        self.settings = settings
        self._seen: dict[str, tuple[float, float | None]] = {}
        self._since_prune = 0

    async def check(self, key: str, now: float) -> int:
        """:data:`KNOWN`, :data:`PASSED`, or the seconds still to wait."""
        settings = self.settings
        self._prune(now)
        first, passed_until = self._seen.get(key, (now, None))
        if passed_until is not None and now < passed_until:
            self._seen[key] = (first, now + settings.expire)
            return KNOWN
        if passed_until is not None or now - first > settings.retry_window:
            first = now  # forgotten: start again
        if now - first < settings.delay:
            self._seen[key] = (first, None)
            return max(1, math.ceil(settings.delay - (now - first)))
        self._seen[key] = (first, now + settings.expire)
        return PASSED

    def _prune(self, now: float) -> None:
        self._since_prune += 1
        if self._since_prune < max(len(self._seen), 1000):
            return
        self._since_prune = 0
        window = self.settings.retry_window
        self._seen = {
            key: (first, until)
            for key, (first, until) in self._seen.items()
            if (until is not None and now < until) or (until is None and now - first <= window)
        }


# KEYS[1]: the triplet; ARGV: now, delay, retry window, expire (seconds). Returns -1
# (known), 0 (passes now) or the seconds to wait (a new triplet: the whole delay).
_SCRIPT = """
local seen = redis.call('GET', KEYS[1])
if seen == 'p' then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return -1
end
local now, delay = tonumber(ARGV[1]), tonumber(ARGV[2])
if not seen then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  return math.max(1, math.ceil(delay))
end
local age = now - tonumber(seen)
if age < delay then
  return math.max(1, math.ceil(delay - age))
end
redis.call('SET', KEYS[1], 'p', 'EX', ARGV[4])
return 0
"""


class RedisTriplets:
    """Triplets in Redis, shared by the nodes."""

    def __init__(self, settings: GreylistSettings, client: redis.asyncio.Redis, prefix: str):
        self.settings = settings
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_SCRIPT)

    async def check(self, key: str, now: float) -> int:
        settings = self.settings
        name = self.prefix + "grey:" + hashlib.sha256(key.encode()).hexdigest()
        args = [repr(now), repr(settings.delay)]
        args += [str(math.ceil(settings.retry_window)), str(math.ceil(settings.expire))]
        return int(await self._script(keys=[name], args=args))


Triplets = MemoryTriplets | RedisTriplets


class GreylistGuard(Guard):
    """Greylists at RCPT TO (see the module docstring)."""

    name = "greylist"

    def __init__(
        self,
        settings: GreylistSettings,
        triplets: Triplets,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.triplets = triplets
        self.clock = clock
        self.outage = Outage("greylisting", monotonic)

    async def rcpt_to(self, session: Session, transaction: Transaction, recipient: Address) -> None:
        ip = session.remote_ip
        if ip is None or is_own(session) or session.data.get("dnswl"):
            return
        if not on_listener(self.settings.listeners, session.listener):
            return
        sender = transaction.sender.address
        key = triplet(self.settings, ip, "" if sender is None else str(sender), str(recipient))
        if key is None:
            return
        wait = await self._check(key)
        if wait is None:
            return
        if wait > 0:
            self.stats["deferred"] += 1
            reply = Reply.of(451, f"Greylisted, try again in {wait} seconds", "4.7.1")
            raise Reject(reply)
        self.stats["passed" if wait == PASSED else "known"] += 1

    async def _check(self, key: str) -> int | None:
        if isinstance(self.triplets, MemoryTriplets):
            return await self.triplets.check(key, self.clock())
        if not self.outage.ask():
            self.stats["skipped"] += 1
            return None
        try:
            found = await self.triplets.check(key, self.clock())
        except REDIS_ERRORS as exc:
            self.outage.failed(exc)
            self.stats["skipped"] += 1
            return None
        self.outage.worked()
        return found

    async def close(self) -> None:
        if isinstance(self.triplets, RedisTriplets):
            await self.triplets.client.aclose()

    def metrics(self) -> Iterable[object]:
        outcomes = CounterMetricFamily(
            "smtpx_greylist",
            "Greylisting at RCPT: deferred (451 4.7.1), passed (a retry after the delay),"
            " known (passed before), skipped (Redis down: not greylisted)",
            labels=["result"],
        )
        for result in ("deferred", "passed", "known", "skipped"):
            outcomes.add_metric([result], self.stats[result])
        yield outcomes
