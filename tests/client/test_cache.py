"""The connection cache: reuse, limits, failover, idle closing, dropping bad sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from smtpx.auth import Credentials
from smtpx.client import CacheConfig, CacheKey, Client, ClientConfig, ConnectionCache, connect
from smtpx.envelope import Envelope, HostPort
from smtpx.errors import CacheClosed, GaveUpWaiting, NoHopAvailable
from smtpx.io import memory_pair
from smtpx.protocol import Reply, replies
from smtpx.testing import Handler, ScriptedServer, serve_stream
from smtpx.testing.clock import run_virtual

ENVELOPE = Envelope.create(
    sender="a@example.com", recipients=["b@example.org"], message=b"Subject: c\r\n\r\nx\r\n"
)
CONFIG = ClientConfig.for_testing()


class MemoryHosts:
    """Opens sessions to in-memory servers, one Handler per session; some hosts are down."""

    def __init__(
        self, handler: Callable[[], Handler] = Handler, down: frozenset[str] = frozenset()
    ) -> None:
        self.handler = handler
        self.down = down
        self.handlers: dict[str, list[Handler]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def __call__(self, address: HostPort, credentials: Credentials | None) -> Client:
        if address.host in self.down:
            raise ConnectionRefusedError(f"{address} is down")
        client_stream, server_stream = memory_pair()
        handler = self.handler()
        self.handlers.setdefault(address.host, []).append(handler)
        self.tasks.append(
            asyncio.get_running_loop().create_task(serve_stream(server_stream, handler))
        )
        return await connect(address.host, address.port, config=CONFIG, stream=client_stream)

    def sessions(self, host: str) -> int:
        return len(self.handlers.get(host, []))

    def messages(self, host: str) -> int:
        return sum(len(h.messages) for h in self.handlers.get(host, []))


MX1, MX2, MX3 = HostPort("mx1.test"), HostPort("mx2.test"), HostPort("mx3.test")


async def send(cache: ConnectionCache, hops: list[HostPort]) -> HostPort:
    async with cache.connection(hops) as (hop, client):
        assert (await client.send(ENVELOPE)).ok
        return hop


def test_sessions_are_reused_up_to_the_limit() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        async with ConnectionCache(
            CacheConfig(max_connection_reuse=3), CONFIG, opener=hosts
        ) as cache:
            for _ in range(7):
                assert await send(cache, [MX1]) == MX1
            assert (cache.opened, cache.reused) == (3, 4)
        assert hosts.sessions("mx1.test") == 3
        assert hosts.messages("mx1.test") == 7

    run_virtual(scenario())


def test_earlier_hops_are_preferred_and_failing_ones_skipped() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts(down=frozenset({"mx1.test"}))
        async with ConnectionCache(CacheConfig(), CONFIG, opener=hosts) as cache:
            assert await send(cache, [MX1, MX2, MX3]) == MX2
            assert hosts.sessions("mx3.test") == 0
            with pytest.raises(NoHopAvailable) as info:
                async with cache.connection([MX1]):
                    pass
            assert "mx1.test:25" in str(info.value)
            assert [str(hop) for hop, _ in info.value.failures] == ["mx1.test:25"]

    run_virtual(scenario())


def test_a_session_whose_block_failed_is_dropped() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        async with ConnectionCache(CacheConfig(), CONFIG, opener=hosts) as cache:

            async def fail() -> None:
                async with cache.connection([MX1]) as (_, client):
                    assert client.extensions.pipelining
                    raise RuntimeError("the caller's own failure")

            with pytest.raises(RuntimeError):
                await fail()
            await send(cache, [MX1])
            assert cache.opened == 2 and cache.reused == 0
            assert cache.open_connections == 1

    run_virtual(scenario())


def test_a_session_left_mid_transaction_is_not_reused() -> None:
    class RefusesRecipients(Handler):
        def rcpt(self, command: object) -> Reply:
            return replies.mailbox_unavailable()

    async def scenario() -> None:
        hosts = MemoryHosts(RefusesRecipients)
        async with ConnectionCache(CacheConfig(), CONFIG, opener=hosts) as cache:
            for _ in range(2):
                async with cache.connection([MX1]) as (_, client):
                    status = await client.send(ENVELOPE)
                    assert not status.ok
            # MAIL was accepted and left open: the session is closed, not handed out.
            assert cache.opened == 2

    run_virtual(scenario())


def test_per_address_limit_makes_users_wait_then_share() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        cache_config = CacheConfig(max_connections_per_address=1)
        async with ConnectionCache(cache_config, CONFIG, opener=hosts) as cache:
            results = await asyncio.gather(*(send(cache, [MX1]) for _ in range(5)))
            assert results == [MX1] * 5
            assert cache.opened == 1 and cache.reused == 4
        assert hosts.messages("mx1.test") == 5

    run_virtual(scenario())


def test_at_the_limit_a_later_hop_is_used() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        cache_config = CacheConfig(max_connections_per_address=1)
        async with (
            ConnectionCache(cache_config, CONFIG, opener=hosts) as cache,
            cache.connection([MX1, MX2]) as (first, _),
            cache.connection([MX1, MX2]) as (second, _),
        ):
            assert (first, second) == (MX1, MX2)

    run_virtual(scenario())


def test_gives_up_waiting() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        hosts = MemoryHosts()
        cache_config = CacheConfig(max_open_connections=1, give_up_after=120)
        async with (
            ConnectionCache(cache_config, CONFIG, opener=hosts) as cache,
            cache.connection([MX1]),
        ):
            start = loop.time()
            with pytest.raises(GaveUpWaiting, match="120"):
                async with cache.connection([MX2]):
                    pass
            return loop.time() - start

    waited = run_virtual(scenario())
    assert 120 <= waited < 125


def test_idle_sessions_are_closed_with_quit() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        async with ConnectionCache(CacheConfig(idle_timeout=5), CONFIG, opener=hosts) as cache:
            await send(cache, [MX1])
            assert cache.status() == {"mx1.test:25": {"open": 1, "idle": 1, "busy": 0}}
            await asyncio.sleep(3)
            assert cache.open_connections == 1
            await asyncio.sleep(5)
            assert cache.open_connections == 0 and cache.status() == {}
            await asyncio.gather(*hosts.tasks)  # the server saw QUIT and ended the session

    run_virtual(scenario())


def test_a_session_the_server_closed_while_idle_is_not_reused() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        async with ConnectionCache(CacheConfig(), CONFIG, opener=hosts) as cache:
            async with cache.connection([MX1]) as (_, client):
                assert (await client.send(ENVELOPE)).ok
                stream = client._stream
            # The server times the idle session out: 421, then it hangs up.
            peer = stream.peer  # type: ignore[attr-defined]
            peer.write(replies.command_timeout().to_bytes())
            peer.close()
            await asyncio.sleep(0)
            await send(cache, [MX1])
            assert cache.opened == 2

    run_virtual(scenario())


def test_close_quits_idle_sessions_and_refuses_more() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        cache = ConnectionCache(CacheConfig(), CONFIG, opener=hosts)
        async with cache:
            await send(cache, [MX1])
        assert cache.open_connections == 0
        await asyncio.gather(*hosts.tasks)
        with pytest.raises(CacheClosed):
            async with cache.connection([MX1]):
                pass

    run_virtual(scenario())


async def test_over_tcp_with_the_default_opener() -> None:
    async with ScriptedServer(Handler) as server:
        hop = HostPort("127.0.0.1", server.port)
        async with ConnectionCache(CacheConfig(), CONFIG) as cache:
            for _ in range(3):
                await send(cache, [hop])
            assert cache.opened == 1
    assert len(server.handlers) == 1 and len(server.messages()) == 3


# -- warming (F78) ---------------------------------------------------------------------------


def test_warm_sessions_are_open_before_any_envelope_and_stay_open() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        warm = CacheConfig(keep_warm=(CacheKey(MX1),), warm_connections=2, idle_timeout=5)
        async with ConnectionCache(warm, CONFIG, opener=hosts) as cache:
            await asyncio.sleep(1)
            assert cache.status() == {"mx1.test:25": {"open": 2, "idle": 2, "busy": 0}}
            await asyncio.sleep(60)  # far past idle_timeout: warm sessions are exempt
            assert cache.opened == 2 and cache.open_connections == 2
            assert await send(cache, [MX1]) == MX1  # a warm session serves it
            assert cache.opened == 2 and cache.reused == 1
        assert cache.open_connections == 0
        await asyncio.gather(*hosts.tasks)  # each warm session got its QUIT

    run_virtual(scenario())


def test_a_warm_session_that_drops_is_reopened() -> None:
    async def scenario() -> None:
        hosts = MemoryHosts()
        warm = CacheConfig(keep_warm=(CacheKey(MX1),), warm_connections=1)
        async with ConnectionCache(warm, CONFIG, opener=hosts) as cache:
            await asyncio.sleep(1)
            (slot,) = cache._pools[CacheKey(MX1)].idle
            peer = slot.client._stream.peer  # type: ignore[attr-defined]
            peer.write(replies.command_timeout().to_bytes())  # the server's idle timeout
            peer.close()
            await asyncio.sleep(3)
            assert cache.opened == 2 and cache.open_connections == 1
            assert hosts.sessions("mx1.test") == 2

    run_virtual(scenario())


def test_warming_failures_are_logged_and_retried_later(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        hosts = MemoryHosts(down=frozenset({"mx1.test"}))
        keys = (CacheKey(MX1), CacheKey(MX2, route="example.net"))
        warm = CacheConfig(keep_warm=keys, warm_connections=1, warm_retry=5)
        async with ConnectionCache(warm, CONFIG, opener=hosts) as cache:
            await asyncio.sleep(40)  # tries at 0, 5, 15 and 35 s
            assert cache.status() == {
                "mx2.test:25 route=example.net": {"open": 1, "idle": 1, "busy": 0}
            }
            hosts.down = frozenset()
            await asyncio.sleep(80)  # the next try, 40 s after the last
            assert cache.open_connections == 2
            assert await send(cache, [MX3]) == MX3  # other destinations work as ever

    caplog.set_level("INFO", logger="smtpx.client.cache")
    run_virtual(scenario())
    failures = [r for r in caplog.records if "keeping sessions warm" in r.getMessage()]
    assert [r.levelname for r in failures] == ["INFO"] * 4
    assert (
        "mx1.test:25" in failures[0].getMessage() and "next try in 5s" in failures[0].getMessage()
    )
    assert "next try in 40s" in failures[-1].getMessage()


def test_warm_connections_must_fit_the_per_address_limit() -> None:
    with pytest.raises(ValueError, match="warm_connections"):
        CacheConfig(keep_warm=(CacheKey(MX1),), warm_connections=11)
