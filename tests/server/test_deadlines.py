"""Slow clients on the virtual clock: a trickle of bytes extends no deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from smtpx.protocol import Reply
from smtpx.server import Server
from smtpx.server.deadlines import Deadline, ReadDeadlines, TimedOut
from smtpx.testing.clock import run_virtual
from tests.server.helpers import Keep, Raw, raw_session, server

EHLO = b"EHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"


def octets(data: bytes) -> list[bytes]:
    return [bytes([octet]) for octet in data]


async def trickle(raw: Raw, pieces: Sequence[bytes], every: float) -> None:
    """Write ``pieces`` one at a time, ``every`` seconds apart (a bounded count)."""
    for piece in pieces:
        await asyncio.sleep(every)
        raw.stream.write(piece)


async def replies_while_trickling(
    srv: Server, raw: Raw, pieces: Sequence[bytes], every: float
) -> list[Reply]:
    """Trickle ``pieces`` and collect the replies until the server hangs up."""
    task = asyncio.get_running_loop().create_task(trickle(raw, pieces, every))
    got = await raw.replies(1000)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await raw.finish()
    await srv.close()
    return got


# --- the rules, sans-I/O -------------------------------------------------------------------


def deadlines(min_data_rate: float | None = 500.0) -> ReadDeadlines:
    return ReadDeadlines(
        command_timeout=300, data_timeout=300, min_data_rate=min_data_rate, data_rate_grace=60
    )


def test_reads_do_not_move_a_command_deadline_events_do() -> None:
    d = deadlines()
    assert d.next(10, content=False) == Deadline(310, TimedOut.COMMAND)
    for now in range(11, 300, 8):
        d.received(1, content=False)
        assert d.next(now, content=False).at == 310
    d.event(content=False)  # the command is complete
    assert d.next(400, content=False).at == 700


def test_content_must_keep_the_minimum_rate_after_the_grace() -> None:
    d = deadlines()
    assert d.next(0, content=True) == Deadline(60, TimedOut.SLOW_DATA)
    d.received(50_000, content=True)  # 100 seconds' worth at 500 octets a second
    assert d.next(30, content=True) == Deadline(160, TimedOut.SLOW_DATA)
    d.received(500_000, content=True)  # lots of credit: the idle timeout comes first
    assert d.next(40, content=True) == Deadline(340, TimedOut.DATA)
    d.event(content=True)  # a piece of content: the transfer goes on
    assert d.next(50, content=True).at == 350
    d.event(content=False)  # end of data: the next transfer starts from nothing
    assert d.next(1000, content=True) == Deadline(1060, TimedOut.SLOW_DATA)
    assert deadlines(None).next(0, content=True) == Deadline(300, TimedOut.DATA)


# --- sessions --------------------------------------------------------------------------------


def test_a_trickled_command_cannot_outlive_command_timeout() -> None:
    async def scenario() -> tuple[list[Reply], float, int]:
        loop = asyncio.get_running_loop()
        srv = server(command_timeout=300)
        raw = await raw_session(srv)
        await raw.send(EHLO)
        start = loop.time()
        # One byte every 8 seconds: 100 of them would take 800 seconds.
        got = await replies_while_trickling(srv, raw, octets(b"MAIL FROM:<" + b"a" * 89), 8)
        return got, loop.time() - start, srv.stats["timeouts_command"]

    got, waited, counted = run_virtual(scenario())
    assert [str(r) for r in got] == [
        "421 4.4.2 Timeout exceeded waiting for a command, closing transmission channel"
    ]
    assert 300 <= waited < 302 and counted == 1


def test_empty_lines_every_8_seconds_end_the_session_at_max_errors() -> None:
    async def scenario() -> tuple[list[Reply], float]:
        loop = asyncio.get_running_loop()
        srv = server(max_errors=20)
        raw = await raw_session(srv)
        start = loop.time()
        got = await replies_while_trickling(srv, raw, [b"\r\n"] * 100, 8)
        return got, loop.time() - start

    got, waited = run_virtual(scenario())
    assert [r.code for r in got] == [500] * 19 + [421]
    assert 160 <= waited < 161


def test_data_below_the_minimum_rate_is_ended_with_421() -> None:
    async def scenario() -> tuple[list[Reply], float, Keep, int]:
        loop = asyncio.get_running_loop()
        plugin = Keep()
        srv = server(plugin, min_data_rate=500, data_rate_grace=60, data_timeout=300)
        raw = await raw_session(srv)
        await raw.send(EHLO)
        assert await raw.codes(ENVELOPE + b"DATA\r\n", 3) == [250, 250, 354]
        start = loop.time()
        # 10 octets every 5 seconds: each wait is short, the average far too low.
        lines = [b"Subject: slow\r\n"] + [b"x" * 8 + b"\r\n"] * 200
        got = await replies_while_trickling(srv, raw, lines, 5)
        return got, loop.time() - start, plugin, srv.stats["timeouts_slow_data"]

    got, waited, plugin, counted = run_virtual(scenario())
    assert [str(r) for r in got] == ["421 4.4.2 Message data arriving too slowly, closing channel"]
    assert 60 <= waited < 62 and counted == 1
    assert plugin.kept == []


def test_a_bdat_chunk_below_the_minimum_rate_is_ended_with_421() -> None:
    async def scenario() -> tuple[list[Reply], float]:
        loop = asyncio.get_running_loop()
        srv = server(min_data_rate=500, data_rate_grace=60)
        raw = await raw_session(srv)
        await raw.send(EHLO)
        await raw.send(ENVELOPE, 2)
        raw.stream.write(b"BDAT 100000 LAST\r\nSubject: slow\r\n\r\n")
        start = loop.time()
        got = await replies_while_trickling(srv, raw, [b"y" * 10] * 200, 5)
        return got, loop.time() - start

    got, waited = run_virtual(scenario())
    assert [str(r) for r in got] == ["421 4.4.2 Message data arriving too slowly, closing channel"]
    assert 60 <= waited < 62


def test_data_at_a_steady_rate_gets_through() -> None:
    async def scenario() -> tuple[list[Reply], float, Keep]:
        loop = asyncio.get_running_loop()
        plugin = Keep()
        srv = server(plugin, min_data_rate=500, data_rate_grace=60)
        raw = await raw_session(srv)
        await raw.send(EHLO)
        assert await raw.codes(ENVELOPE + b"DATA\r\n", 3) == [250, 250, 354]
        start = loop.time()
        raw.stream.write(b"Subject: steady\r\n\r\n")
        for _ in range(180):  # 1000 octets a second for 3 minutes, twice the minimum
            await asyncio.sleep(1)
            raw.stream.write((b"z" * 98 + b"\r\n") * 10)
        got = await raw.send(b".\r\n")
        await raw.finish()
        await srv.close()
        return got, loop.time() - start, plugin

    got, waited, plugin = run_virtual(scenario())
    assert [r.code for r in got] == [250] and waited >= 180
    assert len(plugin.kept) == 1 and len(plugin.kept[0].message) == 19 + 180_000


def test_the_sweeper_ends_with_the_last_session_and_comes_back_with_the_next() -> None:
    """A server with no listener (sessions over serve_stream) keeps no task once its last
    session is over; the next session's deadlines are enforced again."""

    async def scenario() -> tuple[bool, list[Reply], float]:
        loop = asyncio.get_running_loop()
        srv = server(command_timeout=300)
        first = await raw_session(srv)
        await first.send(b"QUIT\r\n")
        await first.finish()
        await asyncio.sleep(0)  # the cancelled sweeper's last step
        idle = srv._sweeper is None or srv._sweeper.done()
        second = await raw_session(srv)  # then says nothing
        start = loop.time()
        got = await second.replies(1)
        await second.finish()
        await srv.close()
        return idle, got, loop.time() - start

    idle, got, waited = run_virtual(scenario())
    assert idle
    assert [r.code for r in got] == [421] and 300 <= waited < 302
