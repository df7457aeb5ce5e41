"""The edge checks the configuration asks for, as the relay's guards
(:mod:`smtpx.mta.guards`): DNS lists, rate limits, greylisting, in that order."""

from __future__ import annotations

import dns.asyncresolver

from smtpx.mta.config import MtaConfig
from smtpx.mta.dnsbl import DnsblGuard
from smtpx.mta.greylist import GreylistGuard, MemoryTriplets, RedisTriplets
from smtpx.mta.guards import Guard
from smtpx.mta.inbound import make_resolver
from smtpx.mta.ratelimit import LocalCounters, RateLimitGuard, RedisCounters
from smtpx.mta.shared import connect

__all__ = ["build_guards"]


def build_guards(config: MtaConfig, resolver: dns.asyncresolver.Resolver | None) -> list[Guard]:
    """The guards of ``config``; ``resolver`` is the MTA's (``[dns]``), made here from
    the system's configuration when it is None and a DNS list needs one."""
    guards: list[Guard] = []
    if config.dnsbl.zones:
        if resolver is None:
            servers = tuple((a.host, a.port) for a in config.dns.nameservers)
            resolver = make_resolver(servers, timeout=config.dns.timeout)
        guards.append(DnsblGuard(config.dnsbl, resolver))
    wanted = config.rate_limits.rules or config.greylist.enabled
    redis = connect(config.redis) if config.redis.url is not None and wanted else None
    prefix = config.redis.key_prefix
    if config.rate_limits.rules:
        counters = LocalCounters() if redis is None else RedisCounters(redis, prefix)
        guards.append(RateLimitGuard(config.rate_limits, counters))
    if config.greylist.enabled:
        settings = config.greylist
        triplets = (
            MemoryTriplets(settings) if redis is None else RedisTriplets(settings, redis, prefix)
        )
        guards.append(GreylistGuard(settings, triplets))
    return guards
