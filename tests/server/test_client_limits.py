"""Per-client limits: the accounting on a fake clock, then real sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress

import pytest

from smtpx.protocol import ReplyParser
from smtpx.server import Listener, Server, ServerConfig
from smtpx.server.limits import (
    KEY_CACHE,
    Admitted,
    ClientLimiter,
    ClientLimits,
    Refused,
    client_key,
)
from tests.server.helpers import Keep


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(**limits: object) -> tuple[ClientLimiter, FakeClock]:
    clock = FakeClock()
    return ClientLimiter(ClientLimits(**limits), clock), clock  # type: ignore[arg-type]


# --- the accounting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("/run/smtpx.sock", None),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(address: str, key: str | None) -> None:
    assert client_key(address) == key


def test_concurrent_sessions_per_client() -> None:
    limits, _ = limiter(max_sessions=3, max_rate=None, exempt=())
    admitted = [
        limits.admit("2001:db8::1"),
        limits.admit("2001:db8::2"),
        limits.admit("2001:db8::3"),
    ]
    assert all(isinstance(a, Admitted) for a in admitted)
    assert limits.admit("2001:db8::ffff") is Refused.SESSIONS  # the same /64
    assert isinstance(limits.admit("2001:db8:0:1::1"), Admitted)  # the next /64
    assert isinstance(limits.admit("192.0.2.1"), Admitted)
    first = admitted[0]
    assert isinstance(first, Admitted)
    limits.release(first)
    assert isinstance(limits.admit("2001:db8::4"), Admitted)
    assert limits.admit("2001:db8::5") is Refused.SESSIONS


def test_connection_rate_per_client_refills_with_time() -> None:
    limits, clock = limiter(max_sessions=None, max_rate=6, exempt=())
    for _ in range(6):  # a burst of max_rate
        admitted = limits.admit("192.0.2.1")
        assert isinstance(admitted, Admitted)
        limits.release(admitted)
    assert limits.admit("192.0.2.1") is Refused.RATE
    assert isinstance(limits.admit("192.0.2.2"), Admitted)
    clock.now += 9.9  # one connection every 10 seconds
    assert limits.admit("192.0.2.1") is Refused.RATE
    clock.now += 0.2
    assert isinstance(limits.admit("192.0.2.1"), Admitted)
    assert limits.admit("192.0.2.1") is Refused.RATE


def test_exempt_networks_are_not_counted() -> None:
    exempt = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::1/128"))
    limits, _ = limiter(max_sessions=1, max_rate=1, exempt=exempt)
    for address in ["10.1.2.3"] * 5 + ["::ffff:10.0.0.1", "2001:db8::1", "2001:db8::1"]:
        assert limits.admit(address) == Admitted(None)
    assert isinstance(limits.admit("2001:db8::2"), Admitted)  # same /64, not exempt itself
    assert limits.admit("2001:db8::2") is Refused.SESSIONS
    assert limits.admit(None) == Admitted(None)  # no IP peer: nothing to count


def test_the_remembered_client_keys_stay_right_and_bounded() -> None:
    exempt = (ipaddress.ip_network("10.0.0.0/8"),)
    limits, _ = limiter(max_sessions=1, max_rate=None, exempt=exempt)
    for n in range(KEY_CACHE + 10):  # more distinct clients than the table keeps
        limits.release(admitted(limits.admit(f"198.51.{n // 256 % 256}.{n % 256}")))
    assert len(limits._keys) <= KEY_CACHE
    for _ in range(2):  # the second time from the table: the same answers
        assert limits.admit("10.9.9.9") == Admitted(None)
        assert limits.admit("::ffff:192.0.2.1") == Admitted("192.0.2.1")
        assert limits.admit("192.0.2.1") is Refused.SESSIONS
        limits.release(Admitted("192.0.2.1"))
    assert limits.admit("not an address") == Admitted(None)


def admitted(result: Admitted | Refused) -> Admitted:
    assert isinstance(result, Admitted)
    return result


def test_the_rate_table_forgets_clients_whose_bucket_is_full_again() -> None:
    limits, clock = limiter(max_sessions=None, max_rate=60, exempt=())
    for n in range(1000):
        limits.admit(f"198.51.{n // 256}.{n % 256}")
    clock.now += 60  # every bucket has filled up again
    for _ in range(1000):
        limits.admit("192.0.2.1")
    assert len(limits._buckets) <= 2


# --- real sockets ------------------------------------------------------------------------


async def greeting(reader: asyncio.StreamReader) -> str:
    parser = ReplyParser()
    while (reply := parser.next_reply()) is None:
        data = await asyncio.wait_for(reader.read(4096), 10)
        if not data:
            return ""
        parser.feed(data)
    return str(reply)


async def dialogue(port: int, source: str, lines: list[bytes]) -> list[str]:
    """Connect from ``source``, then send each line and read its reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    got = [await greeting(reader)]
    parser = ReplyParser()
    for line in lines if got[0].startswith("220") else []:
        writer.write(line)
        while (reply := parser.next_reply()) is None:
            parser.feed(await asyncio.wait_for(reader.read(4096), 10))
        got.append(str(reply))
    writer.close()
    return got


MAIL = [
    b"EHLO other.example\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"RCPT TO:<b@example.org>\r\n",
    b"DATA\r\n",
    b"Subject: through\r\n\r\nhello\r\n.\r\n",
    b"QUIT\r\n",
]


async def trickle(writers: list[asyncio.StreamWriter]) -> None:
    """A byte of a command that never ends on every connection, 20 times a second."""
    for octet in b"MAIL FROM:<" + b"a" * 200:
        for writer in writers:
            if not writer.is_closing():
                writer.write(bytes([octet]))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("per_client", "other_gets"), [(20, "220"), (None, "421")])
async def test_slow_clients_from_one_address_do_not_lock_out_another(
    per_client: int | None, other_gets: str
) -> None:
    plugin = Keep()
    config = ServerConfig(
        listeners=[Listener(max_sessions=50)],
        client_limits=ClientLimits(max_sessions=per_client, max_rate=None, exempt=()),
    )
    async with Server(plugin, config) as server:
        port = server.ports[0]
        opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        greetings = [await greeting(reader) for reader, _ in opened]
        admitted = [
            writer for (_, writer), text in zip(opened, greetings, strict=True) if text[:3] == "220"
        ]
        slow = asyncio.get_running_loop().create_task(trickle(admitted))
        try:
            got = await dialogue(port, "127.0.0.2", MAIL)
        finally:
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
            for _, writer in opened:
                writer.close()
        refused = [text for text in greetings if text[:3] == "421"]
        if per_client is None:  # the defect: the listener is full of one client's sessions
            assert len(admitted) == 50 and len(refused) == 150
            assert got == ["421 4.7.0 Too many concurrent sessions, try again later"]
            assert plugin.kept == []
            return
        assert len(admitted) == 20 and len(refused) == 180
        assert set(refused) == {
            "421 4.7.0 Too many concurrent sessions from your address, try again later"
        }
        assert server.stats["refused_sessions_per_client"] == 180
        assert got[0].startswith(other_gets) and got[5].startswith("250 ")
        assert [m.message for m in plugin.kept] == [b"Subject: through\r\n\r\nhello\r\n"]


async def test_connection_rate_per_client_on_real_sockets() -> None:
    config = ServerConfig(client_limits=ClientLimits(max_sessions=None, max_rate=5, exempt=()))
    async with Server(Keep(), config) as server:
        port = server.ports[0]
        for _ in range(5):
            assert (await dialogue(port, "127.0.0.1", [b"QUIT\r\n"]))[1].startswith("221")
        assert await dialogue(port, "127.0.0.1", []) == [
            "421 4.7.0 Too many connections from your address, try again later"
        ]
        assert (await dialogue(port, "127.0.0.2", []))[0].startswith("220")
        assert server.stats["refused_rate_per_client"] == 1


async def test_loopback_is_exempt_by_default() -> None:
    config = ServerConfig(client_limits=ClientLimits(max_sessions=1, max_rate=1))
    async with Server(Keep(), config) as server:
        opened = [await asyncio.open_connection("127.0.0.1", server.ports[0]) for _ in range(5)]
        assert [(await greeting(reader))[:3] for reader, _ in opened] == ["220"] * 5
        for _, writer in opened:
            writer.close()
