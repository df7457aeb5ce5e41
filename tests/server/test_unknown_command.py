"""``Plugin.unknown_command``: a command nobody defines is shown to the plugin, which may
answer it with its own reply (the MTA's milters see it as UNKNOWN)."""

from __future__ import annotations

import pytest

from smtpx.protocol import Reply
from smtpx.server import Reject, Session
from tests.server.helpers import Keep, raw_session, server


class Watching(Keep):
    def __init__(self, answer: Reply | None = None, fail: bool = False) -> None:
        super().__init__()
        self.unknown: list[str] = []
        self.answer = answer
        self.fail = fail

    async def unknown_command(self, session: Session, line: str) -> None:
        self.unknown.append(line)
        if self.fail:
            raise RuntimeError("broken hook")
        if self.answer is not None:
            raise Reject(self.answer)


async def _replies(plugin: Watching, data: bytes, count: int) -> list[str]:
    srv = server(plugin, max_errors=5)
    raw = await raw_session(srv)
    got = [str(r) for r in await raw.send(data, count)]
    await raw.finish()
    await srv.close()
    return got


async def test_the_plugin_sees_the_line_and_the_core_answers_by_default() -> None:
    plugin = Watching()
    got = await _replies(plugin, b"XCLIENT ADDR=192.0.2.1\r\nNOOP\r\n", 2)
    assert got == ["500 5.5.1 Command unrecognized: XCLIENT", "250 2.0.0 Ok"]
    assert plugin.unknown == ["XCLIENT ADDR=192.0.2.1"]


async def test_the_plugin_may_answer_it_and_it_still_counts_as_an_error() -> None:
    plugin = Watching(Reply.of(550, "Not here, not now", "5.7.1"))
    got = await _replies(plugin, b"WIBBLE\r\n" * 5, 5)
    assert got == ["550 5.7.1 Not here, not now"] * 4 + [
        "421 4.7.0 Too many errors, closing transmission channel"
    ]


async def test_a_failing_hook_is_logged_and_the_core_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugin = Watching(fail=True)
    got = await _replies(plugin, b"WIBBLE\r\nNOOP\r\n", 2)
    assert got == ["500 5.5.1 Command unrecognized: WIBBLE", "250 2.0.0 Ok"]
    assert "plugin unknown_command failed" in caplog.text
