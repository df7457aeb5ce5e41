"""A pool of ready SMTP sessions, reused across envelopes (F75-F79).

A session is keyed by destination (host, port), credentials and route. Given several
destinations (an envelope's next-hop choices), :meth:`ConnectionCache.connection` prefers
the earlier ones, skips those that fail to open, and waits for a free slot when every
usable destination is at its limit::

    async with ConnectionCache(CacheConfig(), client_config) as cache:
        hops = [HostPort("mx1.example"), HostPort("mx2.example")]
        async with cache.connection(hops) as (hop, client):
            status = await client.send(envelope)

A session whose block raised, or that is left mid-transaction or closed, is dropped, never
handed out again.

**Warming** (F78): ``CacheConfig.keep_warm`` lists keys (address, credentials, route) to
which ``warm_connections`` sessions are kept open at all times, ready before the first
envelope: a background task opens what is missing, replaces sessions that the peer closed
or that were used up, and exempts them from the idle timeout. A failure to open is logged
and retried later (after ``warm_retry`` seconds, doubling up to five minutes), never
raised. Delivery uses a warm session when it asks for the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from smtpx.auth import Credentials
from smtpx.client.config import ClientConfig, TlsConfig
from smtpx.client.session import Client, connect
from smtpx.envelope import HostPort
from smtpx.errors import CacheClosed, GaveUpWaiting, NoHopAvailable, SMTPXError
from smtpx.io.resolve import Resolver
from smtpx.io.tasks import cancel_and_wait
from smtpx.protocol.states import State

__all__ = ["CacheConfig", "CacheKey", "ConnectionCache", "Opener", "TlsPolicy"]

log = logging.getLogger("smtpx.client.cache")


# How a new session is opened: (destination, credentials) -> ready client. The default
# connects over TCP; tests pass one that uses in-memory streams.
Opener = Callable[[HostPort, Credentials | None], Awaitable[Client]]
# The TLS settings for a new session with (destination, route), or None for the client
# configuration's; raising (TlsPolicyError) means the destination is not to be used now.
# The MTA sets one for MTA-STS and DANE (smtpx.mta.tlspolicy).
TlsPolicy = Callable[[HostPort, str | None], Awaitable[TlsConfig | None]]


@dataclass(frozen=True, slots=True)
class CacheKey:
    address: HostPort
    credentials: Credentials | None = None
    route: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Limits (the reference's defaults, F76)."""

    max_open_connections: int = 500
    max_connections_per_address: int = 10
    max_connection_reuse: int = 10  # envelopes per session before it is closed
    idle_timeout: float = 5.0  # close a session unused this long
    open_timeout: float = 10.0  # connect + greeting + EHLO + TLS + AUTH
    give_up_after: float = 120.0  # wait this long at most for a usable destination
    close_timeout: float = 5.0  # for each QUIT when the cache closes
    keep_warm: tuple[CacheKey, ...] = ()  # keys to keep sessions open to (F78)
    warm_connections: int = 1  # sessions kept open to each of keep_warm
    warm_retry: float = 5.0  # first wait after a failure to open a warm session

    def __post_init__(self) -> None:
        if self.keep_warm and not 1 <= self.warm_connections <= self.max_connections_per_address:
            raise ValueError("warm_connections: from 1 to max_connections_per_address")


@dataclass
class _Slot:
    client: Client
    uses: int = 0
    idle_since: float = 0.0


@dataclass
class _Pool:
    idle: list[_Slot] = field(default_factory=list)
    busy: int = 0  # sessions handed out or being opened

    @property
    def open(self) -> int:
        return len(self.idle) + self.busy


class ConnectionCache:
    """Pooled client sessions with limits; use it as an async context manager."""

    def __init__(
        self,
        config: CacheConfig | None = None,
        client_config: ClientConfig | None = None,
        *,
        resolver: Resolver | None = None,
        opener: Opener | None = None,
    ) -> None:
        self.config = config or CacheConfig()
        self.client_config = client_config or ClientConfig()
        self.resolver = resolver
        self.tls_policy: TlsPolicy | None = None  # used by the default opener only
        self._opener = opener
        self._pools: dict[CacheKey, _Pool] = {}
        self._open = 0
        self._changed = asyncio.Condition()
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None
        self._warmer: asyncio.Task[None] | None = None
        self.opened = 0  # counters, for status and tests
        self.reused = 0

    async def __aenter__(self) -> ConnectionCache:
        loop = asyncio.get_running_loop()
        self._reaper = loop.create_task(self._reap())
        if self.config.keep_warm:
            self._warmer = loop.create_task(self._keep_warm())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- handing out sessions ----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(
        self,
        addresses: Sequence[HostPort],
        *,
        credentials: Credentials | None = None,
        route: str | None = None,
    ) -> AsyncIterator[tuple[HostPort, Client]]:
        """A ready session with the first usable address (see the module docstring)."""
        key, slot = await self._acquire(addresses, credentials, route)
        failed = True
        try:
            yield key.address, slot.client
            failed = False
        finally:
            await self._release(key, slot, failed)

    async def _acquire(
        self, addresses: Sequence[HostPort], credentials: Credentials | None, route: str | None
    ) -> tuple[CacheKey, _Slot]:
        if not addresses:
            raise NoHopAvailable([])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.give_up_after
        failures: dict[HostPort, BaseException] = {}
        while True:
            if self._closed:
                raise CacheClosed("the connection cache is closed")
            candidates = [a for a in addresses if a not in failures]
            if not candidates:
                raise NoHopAvailable(list(failures.items()))
            waiting = False
            for address in candidates:
                key = CacheKey(address, credentials, route)
                pool = self._pools.setdefault(key, _Pool())
                slot = self._take_idle(pool)
                if slot is not None:
                    pool.busy += 1
                    self.reused += 1
                    return key, slot
                if (
                    pool.open >= self.config.max_connections_per_address
                    or self._open >= self.config.max_open_connections
                ):
                    waiting = True
                    continue
                pool.busy += 1
                self._open += 1
                try:
                    client = await self._open_session(address, credentials, route)
                except (OSError, TimeoutError, SMTPXError) as exc:
                    pool.busy -= 1
                    self._open -= 1
                    failures[address] = exc
                    log.info("cannot open a session with %s: %s", address, exc)
                    await self._notify()
                    continue
                self.opened += 1
                return key, _Slot(client)
            if not waiting:
                continue  # every candidate failed this round; the loop reports them
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise GaveUpWaiting(
                    f"gave up after {self.config.give_up_after}s waiting for a session with "
                    + ", ".join(map(str, candidates))
                )
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 1.0)):
                        await self._changed.wait()

    def _take_idle(self, pool: _Pool) -> _Slot | None:
        while pool.idle:
            slot = pool.idle.pop()  # the most recently used: likeliest to be alive
            client = slot.client
            if client.is_closed or client._stream.has_input:
                self._open -= 1
                client.close()
                continue
            return slot
        return None

    async def _open_session(
        self, address: HostPort, credentials: Credentials | None, route: str | None
    ) -> Client:
        async with asyncio.timeout(self.config.open_timeout):
            if self._opener is not None:
                return await self._opener(address, credentials)
            return await self._connect(address, credentials, route)

    async def _connect(
        self, address: HostPort, credentials: Credentials | None, route: str | None
    ) -> Client:
        tls = None if self.tls_policy is None else await self.tls_policy(address, route)
        return await connect(
            address.host,
            address.port,
            config=self.client_config,
            credentials=credentials,
            resolver=self.resolver,
            tls=tls,
        )

    async def _release(self, key: CacheKey, slot: _Slot, failed: bool) -> None:
        pool = self._pools[key]
        pool.busy -= 1
        slot.uses += 1
        client = slot.client
        reusable = (
            not failed
            and not self._closed
            and not client.is_closed
            and client._conn.state is State.READY
            and slot.uses < self.config.max_connection_reuse
        )
        if reusable:
            slot.idle_since = asyncio.get_running_loop().time()
            pool.idle.append(slot)
        else:
            self._open -= 1
            if failed or client.is_closed:
                client.close()
            else:
                await client.quit()
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- upkeep ---------------------------------------------------------------------------

    async def _reap(self) -> None:
        """Close sessions left idle longer than ``idle_timeout``."""
        loop = asyncio.get_running_loop()
        period = max(0.05, min(1.0, self.config.idle_timeout / 2))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            stale: list[Client] = []
            for key, pool in self._pools.items():
                warm = pool.idle[-self.config.warm_connections :] if self._is_warm(key) else []
                keep = [
                    s
                    for s in pool.idle
                    if now - s.idle_since < self.config.idle_timeout or s in warm
                ]
                stale.extend(s.client for s in pool.idle if s not in keep)
                pool.idle = keep
            for client in stale:
                self._open -= 1
                await client.quit()
            if stale:
                await self._notify()

    def _is_warm(self, key: CacheKey) -> bool:
        return key in self.config.keep_warm

    async def _keep_warm(self) -> None:
        """Keep ``warm_connections`` sessions open to each key of ``keep_warm``."""
        loop = asyncio.get_running_loop()
        period = max(0.05, min(1.0, self.config.idle_timeout / 2))
        retry: dict[CacheKey, tuple[float, float]] = {}  # key -> (next try, last wait)
        while not self._closed:
            for key in self.config.keep_warm:
                when, wait = retry.get(key, (0.0, 0.0))
                if loop.time() < when:
                    continue
                try:
                    await self._warm(key)
                    retry.pop(key, None)
                except (OSError, TimeoutError, SMTPXError) as exc:
                    wait = min(300.0, wait * 2 or self.config.warm_retry)
                    retry[key] = (loop.time() + wait, wait)
                    log.info(
                        "keeping sessions warm: cannot open one with %s: %s (next try in %gs)",
                        key.address,
                        exc,
                        wait,
                    )
            await asyncio.sleep(period)

    async def _warm(self, key: CacheKey) -> None:
        """Drop the idle sessions of ``key`` that died, open what is missing."""
        pool = self._pools.setdefault(key, _Pool())
        alive = [s for s in pool.idle if not (s.client.is_closed or s.client._stream.has_input)]
        for slot in pool.idle:
            if slot not in alive:
                self._open -= 1
                slot.client.close()
        pool.idle = alive
        while (
            not self._closed
            and pool.open < self.config.warm_connections
            and self._open < self.config.max_open_connections
        ):
            pool.busy += 1
            self._open += 1
            try:
                client = await self._open_session(key.address, key.credentials, key.route)
            except BaseException:
                self._open -= 1
                raise
            finally:
                pool.busy -= 1
            self.opened += 1
            if self._closed:
                self._open -= 1
                await client.quit(self.config.close_timeout)
                return
            pool.idle.append(_Slot(client, idle_since=asyncio.get_running_loop().time()))
            await self._notify()

    async def close(self) -> None:
        """Refuse new sessions, QUIT the idle ones (busy ones close when released)."""
        self._closed = True
        await cancel_and_wait(task for task in (self._warmer, self._reaper) if task is not None)
        self._reaper = self._warmer = None
        idle = [slot.client for pool in self._pools.values() for slot in pool.idle]
        for pool in self._pools.values():
            pool.idle.clear()
        self._open -= len(idle)
        # A peer that does not answer QUIT must not hold a shutdown up for minutes.
        await asyncio.gather(
            *(client.quit(self.config.close_timeout) for client in idle), return_exceptions=True
        )
        await self._notify()

    def status(self) -> dict[str, dict[str, int]]:
        """Open, idle and busy sessions per destination (F79)."""
        return {
            f"{key.address}{' route=' + key.route if key.route else ''}": {
                "open": pool.open,
                "idle": len(pool.idle),
                "busy": pool.busy,
            }
            for key, pool in self._pools.items()
            if pool.open
        }

    @property
    def open_connections(self) -> int:
        return self._open
