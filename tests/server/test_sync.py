"""``Plugin.enforce_sync``: a client must wait for the replies to EHLO, HELO and DATA
(and, not offered PIPELINING, to every command: RFC 2920 section 3.1). In memory."""

from __future__ import annotations

import logging

import pytest

from smtpx.server import Session
from tests.server.helpers import Keep, raw_session, server

EHLO = b"EHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
MESSAGE = b"Subject: x\r\n\r\nhello\r\n.\r\n"


class Strict(Keep):
    def enforce_sync(self, session: Session) -> bool:
        return True


async def _conversation(plugin: Keep, steps: list[tuple[bytes, int]]) -> tuple[list[str], int]:
    """Send each step's bytes at once and read its number of replies; the replies as
    text, and how many clients were sent away."""
    srv = server(plugin)
    raw = await raw_session(srv)
    got: list[str] = []
    for data, count in steps:
        got += [str(r) for r in await raw.send(data, count)]
    await raw.closed()
    await raw.finish()
    await srv.close()
    return got, srv.stats["early_talkers_pipelining"]


REFUSED = "554 5.5.0 Protocol error: improper use of SMTP command pipelining"


async def test_the_message_sent_before_the_354_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpx.mail")
    plugin = Strict()
    got, refused = await _conversation(
        plugin, [(EHLO, 1), (ENVELOPE, 2), (b"DATA\r\n" + MESSAGE, 3)]
    )
    assert got[-1] == REFUSED and len(got) == 4  # 250 EHLO, 250, 250, then 554 at once
    assert refused == 1 and plugin.kept == []
    lines = [(r.getMessage(), getattr(r, "mail", {}).get("command")) for r in caplog.records]
    assert ("did not wait for a reply", "DATA") in lines


async def test_commands_sent_with_ehlo_are_refused() -> None:
    got, refused = await _conversation(Strict(), [(EHLO + ENVELOPE, 3)])
    assert got == [REFUSED] and refused == 1


async def test_after_helo_every_command_waits_for_its_reply() -> None:
    got, refused = await _conversation(Strict(), [(b"HELO c.example\r\n", 1), (ENVELOPE, 2)])
    assert got == ["250 mx.test", REFUSED] and refused == 1


async def test_pipelining_where_rfc_2920_allows_it_goes_through() -> None:
    """After EHLO: MAIL, RCPT and DATA in one group; the content, its dot and QUIT in
    another. Nothing is refused, and without the check nothing is either."""
    for plugin in (Strict(), Keep()):
        got, refused = await _conversation(
            plugin, [(EHLO, 1), (ENVELOPE + b"DATA\r\n", 3), (MESSAGE + b"QUIT\r\n", 2)]
        )
        assert [r[:3] for r in got] == ["250", "250", "250", "354", "250", "221"]
        assert refused == 0 and len(plugin.kept) == 1


async def test_off_by_default_a_hasty_client_is_served() -> None:
    plugin = Keep()
    got, refused = await _conversation(
        plugin, [(EHLO + ENVELOPE + b"DATA\r\n" + MESSAGE + b"QUIT\r\n", 6)]
    )
    assert [r[:3] for r in got] == ["250", "250", "250", "354", "250", "221"]
    assert refused == 0 and len(plugin.kept) == 1
