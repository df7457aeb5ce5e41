"""A pause before the greeting (``Plugin.greeting_delay``): a client must wait for the
greeting (RFC 5321 section 3.1); one that talks during the pause is sent away. On the
virtual clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from smtpx.io import memory_pair
from smtpx.server import Server, Session
from smtpx.testing.clock import run_virtual
from tests.server.helpers import Keep, Raw, server


class Pausing(Keep):
    """Keeps mail; pauses ``delay`` seconds before greeting a client."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def greeting_delay(self, session: Session) -> float:
        return self.delay


async def _connect(srv: Server) -> Raw:
    client, server_end = memory_pair()
    return Raw(client, asyncio.get_running_loop().create_task(srv.serve_stream(server_end)))


def test_a_client_that_waits_is_greeted_after_the_pause() -> None:
    async def scenario() -> tuple[list[str], float, list[int]]:
        loop = asyncio.get_running_loop()
        plugin = Pausing(6.0)
        srv = server(plugin)
        start = loop.time()
        raw = await _connect(srv)
        greeting = await raw.replies(1)
        waited = loop.time() - start
        codes = await raw.codes(b"EHLO client.example\r\nQUIT\r\n", 2)
        await raw.finish()
        await srv.close()
        return [str(r) for r in greeting], waited, codes

    greeting, waited, codes = run_virtual(scenario())
    assert greeting == ["220 mx.test ESMTP smtpx"]
    assert 6.0 <= waited < 6.1
    assert codes == [250, 221]


def test_a_client_that_talks_first_is_refused_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpx.mail")

    async def scenario() -> tuple[list[str], bool, float, int, list[str]]:
        loop = asyncio.get_running_loop()
        plugin = Pausing(6.0)
        srv = server(plugin)
        raw = await _connect(srv)
        await asyncio.sleep(1.0)
        start = loop.time()
        raw.stream.write(b"EHLO bot.example\r\nMAIL FROM:<spam@example.com>\r\n")
        got = await raw.replies(5)
        closed = await raw.closed()
        await asyncio.wait_for(raw.task, 5)
        await srv.close()
        waited = loop.time() - start
        return (
            [str(r) for r in got],
            closed,
            waited,
            srv.stats["early_talkers_greeting"],
            plugin.calls,
        )

    got, closed, waited, counted, calls = run_virtual(scenario())
    assert got == ["554 mx.test Protocol error: talked before the greeting"]
    assert closed and waited < 0.1  # at once, not at the end of the pause
    assert counted == 1
    assert calls == ["connect", "disconnect"]  # the plugin is told the session ended
    lines = [r.getMessage() for r in caplog.records if r.name == "smtpx.mail"]
    assert "talked before the greeting" in lines


def test_no_pause_by_default_and_a_client_that_leaves_during_it() -> None:
    async def scenario() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        srv = server(Keep())
        start = loop.time()
        raw = await _connect(srv)
        (greeting,) = await raw.replies(1)
        assert greeting.code == 220
        no_pause = loop.time() - start
        await raw.finish()
        await srv.close()
        pausing = server(Pausing(6.0))
        raw = await _connect(pausing)
        raw.stream.close()  # gone before the greeting: nothing to say, nothing counted
        await asyncio.wait_for(raw.task, 5)
        await pausing.close()
        return no_pause, pausing.stats["early_talkers_greeting"]

    no_pause, counted = run_virtual(scenario())
    assert no_pause < 0.1
    assert counted == 0


def test_closing_the_server_ends_the_pause_with_421() -> None:
    async def scenario() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        srv = server(Pausing(60.0))
        raw = await _connect(srv)
        await asyncio.sleep(1.0)
        start = loop.time()
        closing = loop.create_task(srv.close())
        got = await raw.replies(1)
        await closing
        return [str(r) for r in got], loop.time() - start

    got, waited = run_virtual(scenario())
    assert got == ["421 4.3.2 Service shutting down, closing transmission channel"]
    assert waited < 1.0
