"""Server sessions over memory: the reference's transcripts, plugin hooks, limits, safety."""

from __future__ import annotations

import asyncio
import logging
from textwrap import dedent

import pytest

from smtpx.client import ClientConfig, RejectedBody, connect
from smtpx.envelope import Envelope
from smtpx.io import memory_pair
from smtpx.protocol import (
    Address,
    BareNewlines,
    Reply,
)
from smtpx.protocol.params import RcptParams
from smtpx.server import (
    EventBus,
    MalformedMessages,
    Offer,
    Plugin,
    Reject,
    Session,
    Transaction,
    password_mechanisms,
)
from smtpx.server.events import ErrorEvent, ErrorStream
from smtpx.testing import Transcript
from smtpx.testing.clock import run_virtual
from tests.server.helpers import Keep, raw_session, server

EHLO = b"EHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"


# --- section 3.2 of the reference ------------------------------------------------------


async def test_3_2_1_full_transcript_with_the_default_plugin() -> None:
    record = Transcript()
    client_end, server_end = memory_pair(tap=record.record)
    plugin = Plugin()
    plugin.hostname = "mx.test"
    srv = server(plugin)
    task = asyncio.get_running_loop().create_task(srv.serve_stream(server_end))
    envelope = Envelope.create(
        sender="sender@example.com",
        recipients=["recipient@example.com"],
        message=b"Subject: TEST EMAIL\r\n\r\nTEST EMAIL\r\n",
    )
    config = ClientConfig.for_testing(helo_name="client.example", pipelining=False, chunking=False)
    async with connect("mx.test", config=config, stream=client_end) as client:
        status = await client.send(envelope)
        assert isinstance(status, RejectedBody)
        await client.rset()
    await task
    record.flush()
    assert record.text() == dedent(
        """\
        S: 220 mx.test ESMTP smtpx
        C: EHLO client.example
        S: 250-mx.test greets client.example
        S: 250-PIPELINING
        S: 250-SIZE 36700160
        S: 250-ENHANCEDSTATUSCODES
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250 CHUNKING
        C: MAIL FROM:<sender@example.com> SIZE=35
        S: 250 2.1.0 Ok
        C: RCPT TO:<recipient@example.com>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: TEST EMAIL
        C:
        C: TEST EMAIL
        C: .
        S: 554 5.3.3 Message processing not implemented
        C: RSET
        S: 250 2.0.0 Ok
        C: QUIT
        S: 221 2.0.0 Bye
        """
    )


async def test_3_2_2_manual_client_with_empty_data() -> None:
    plugin = Keep()
    raw = await raw_session(server(plugin))
    assert await raw.codes(EHLO) == [250]
    assert await raw.codes(ENVELOPE, 3) == [250, 250, 354]
    assert await raw.codes(b".\r\n") == [250]
    assert plugin.kept[0].message == b""
    assert await raw.codes(b"QUIT\r\n") == [221]
    assert await raw.closed()
    await raw.finish()
    assert plugin.calls == ["connect", "disconnect"]


def test_3_2_4_command_timeout() -> None:
    async def scenario() -> tuple[list[Reply], float]:
        loop = asyncio.get_running_loop()
        raw = await raw_session(server(command_timeout=300))
        await raw.send(EHLO)
        await raw.send(b"MAIL FROM:<a@example.com>\r\n")
        start = loop.time()
        last = await raw.replies(1)
        assert await raw.closed()
        await raw.finish()
        return last, loop.time() - start

    (reply,), waited = run_virtual(scenario())
    assert (
        str(reply)
        == "421 4.4.2 Timeout exceeded waiting for a command, closing transmission channel"
    )
    assert 300 <= waited < 301


def test_3_2_5_data_timeout() -> None:
    async def scenario() -> Reply:
        plugin = Keep()
        raw = await raw_session(server(plugin, data_timeout=180, min_data_rate=None))
        await raw.send(EHLO)
        await raw.send(ENVELOPE, 3)
        raw.stream.write(b"Subject: half\r\n")
        (reply,) = await raw.replies(1)
        assert await raw.closed()
        await raw.finish()
        assert plugin.kept == [] and plugin.calls == ["connect", "disconnect"]
        return reply

    reply = run_virtual(scenario())
    assert reply.code == 421
    assert "reading message data" in str(reply)


# --- plugin hooks ------------------------------------------------------------------------


async def test_connect_refused() -> None:
    class NoThanks(Plugin):
        async def connect(self, session: Session) -> None:
            raise Reject(Reply.of(554, "go away", "5.7.1"))

    client_end, server_end = memory_pair()
    await server(NoThanks()).serve_stream(server_end)
    assert await client_end.read() == b"554 5.7.1 go away\r\n"
    assert await client_end.read() == b""


async def test_helo_refused_ends_the_session() -> None:
    class Picky(Keep):
        async def helo(self, session: Session, name: str) -> None:
            raise Reject(Reply.of(550, "bad name", "5.7.1"))

    plugin = Picky()
    raw = await raw_session(server(plugin))
    assert await raw.codes(EHLO) == [550]
    assert await raw.closed()
    await raw.finish()
    assert plugin.calls == ["connect", "disconnect"]


async def test_refusals_and_failures_keep_the_session() -> None:
    class Fussy(Keep):
        async def mail_from(self, session: Session, transaction: Transaction) -> None:
            if transaction.sender.address and transaction.sender.address.local_part == "spam":
                raise Reject(Reply.of(550, "no spam", "5.7.1"))

        async def rcpt_to(
            self, session: Session, transaction: Transaction, recipient: Address, params: RcptParams
        ) -> None:
            if recipient.local_part == "boom":
                raise RuntimeError("a bug in the plugin")

    plugin = Fussy()
    raw = await raw_session(server(plugin))
    await raw.send(EHLO)
    assert await raw.codes(b"MAIL FROM:<spam@example.com>\r\n") == [550]
    assert await raw.codes(b"MAIL FROM:<a@example.com>\r\n") == [250]
    (failure,) = await raw.send(b"RCPT TO:<boom@example.org>\r\n")
    assert str(failure) == "451 4.3.0 Local error in processing"
    assert await raw.codes(b"RCPT TO:<b@example.org>\r\nDATA\r\n", 2) == [250, 354]
    (ok,) = await raw.send(b"Subject: s\r\n\r\nx\r\n.\r\n")
    assert str(ok) == "250 2.0.0 Ok: kept 1"
    assert [str(r) for r in plugin.kept[0].recipients] == ["b@example.org"]
    await raw.finish()
    assert plugin.calls == ["connect", "disconnect"]


async def test_process_failure_is_a_4xx_and_nothing_is_lost_silently() -> None:
    class Broken(Keep):
        async def process(
            self, session: Session, transaction: Transaction, envelope: Envelope
        ) -> str:
            raise OSError("disk full")

    raw = await raw_session(server(Broken()))
    await raw.send(EHLO)
    await raw.send(ENVELOPE, 3)
    (reply,) = await raw.send(b"Subject: s\r\n\r\nx\r\n.\r\n")
    assert reply.code == 451  # the client keeps the message and retries
    await raw.finish()


# --- limits ------------------------------------------------------------------------------


async def test_line_too_long() -> None:
    raw = await raw_session(server(max_command_line=100))
    await raw.send(EHLO)
    (reply,) = await raw.send(b"NOOP " + b"x" * 200 + b"\r\n")
    assert str(reply) == "500 5.5.2 Line too long"
    assert await raw.codes(b"NOOP\r\n") == [250]
    await raw.finish()


async def test_too_many_recipients() -> None:
    raw = await raw_session(server(max_recipients=2))
    await raw.send(EHLO)
    await raw.send(b"MAIL FROM:<a@example.com>\r\n")
    rcpts = b"".join(b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(3))
    assert await raw.codes(rcpts, 3) == [250, 250, 452]
    await raw.finish()


async def test_size_declared_and_real() -> None:
    plugin = Keep()
    raw = await raw_session(server(plugin, max_message_size=100))
    (ehlo,) = await raw.send(EHLO)
    assert "SIZE 100" in ehlo.lines
    assert await raw.codes(b"MAIL FROM:<a@example.com> SIZE=101\r\n") == [552]
    await raw.send(ENVELOPE, 3)
    (reply,) = await raw.send(b"Subject: big\r\n\r\n" + b"y" * 200 + b"\r\n.\r\n")
    assert str(reply) == "552 5.3.4 Message size exceeds fixed maximum message size"
    assert plugin.kept == []
    assert await raw.codes(b"NOOP\r\n") == [250]  # drained, still in step
    await raw.finish()


async def test_too_many_errors_hang_up() -> None:
    raw = await raw_session(server(max_errors=3))
    codes = await raw.codes(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n", 3)
    assert codes == [500, 500, 421]
    # One command, one reply: BAZ got the 421 instead of its 500, and NOOP nothing.
    assert await raw.closed() and raw.parser.next_reply() is None
    await raw.finish()


async def test_idling_commands_past_the_junk_limit_spend_the_error_budget() -> None:
    """NOOP, RSET, VRFY, EXPN and HELP are answered as ever; past max_junk_commands since
    the last message accepted each also counts as an error (Postfix's
    smtpd_junk_command_limit): a session that only idles ends with 421."""
    raw = await raw_session(server(Keep(), max_junk_commands=4, max_errors=3))
    await raw.send(EHLO)
    junk = b"NOOP\r\nRSET\r\nVRFY x\r\nHELP\r\n"
    assert await raw.codes(junk, 4) == [250, 250, 252, 214]
    # A message accepted starts the count again.
    await raw.send(ENVELOPE, 3)
    assert (await raw.send(b"Subject: x\r\n\r\nbody\r\n.\r\n"))[0].code == 250
    assert await raw.codes(junk, 4) == [250, 250, 252, 214]
    # Past the limit: still answered, but each one is an error; the third ends it.
    assert await raw.codes(b"NOOP\r\nEXPN x\r\nNOOP\r\nNOOP\r\n", 3) == [250, 502, 421]
    assert await raw.closed() and raw.parser.next_reply() is None
    await raw.finish()


async def test_empty_lines_are_answered_and_spend_the_error_budget() -> None:
    raw = await raw_session(server(max_errors=3))
    replies = await raw.send(b"\r\n\r\n\r\nNOOP\r\n", 3)
    assert [str(r) for r in replies] == [
        "500 5.5.2 Empty command line",
        "500 5.5.2 Empty command line",
        "421 4.7.0 Too many errors, closing transmission channel",
    ]
    assert await raw.closed() and raw.parser.next_reply() is None
    await raw.finish()


async def test_malformed_messages() -> None:
    raw = await raw_session(server(Keep()))
    await raw.send(EHLO)
    await raw.send(ENVELOPE, 3)
    (reply,) = await raw.send(b"this is not a header\r\n\r\nbody\r\n.\r\n")
    assert reply.code == 550 and str(reply.enhanced) == "5.6.0"
    await raw.finish()

    plugin = Keep()
    raw = await raw_session(server(plugin, malformed=MalformedMessages.WRAP))
    await raw.send(EHLO)
    await raw.send(ENVELOPE, 3)
    assert await raw.codes(b"this is not a header\r\n\r\nbody\r\n.\r\n") == [250]
    wrapped = plugin.kept[0].email()
    assert wrapped["X-Smtpx-Parse-Error"].startswith("bad header line")
    assert wrapped.get_payload(decode=True) == b"this is not a header\r\n\r\nbody\r\n"
    await raw.finish()


# --- SMTP smuggling ----------------------------------------------------------------------

SMUGGLE = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r"]


@pytest.mark.parametrize("fake", SMUGGLE, ids=repr)
@pytest.mark.parametrize("mode", [BareNewlines.REJECT, BareNewlines.NORMALIZE])
async def test_smuggling_payloads_never_make_a_second_message(
    fake: bytes, mode: BareNewlines
) -> None:
    plugin = Keep()
    raw = await raw_session(server(plugin, bare_newlines=mode))
    await raw.send(EHLO)
    await raw.send(ENVELOPE, 3)
    payload = (
        b"From: a@example.com\r\n\r\nhello"
        + fake
        + b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
        + b"From: ceo@example.com\r\n\r\nwire money\r\n.\r\n"
    )
    (reply,) = await raw.send(payload)
    # Exactly one reply: the smuggled commands were never run as commands.
    assert await raw.codes(b"NOOP\r\n") == [250]
    if mode is BareNewlines.REJECT:
        assert reply.code == 500 and plugin.kept == []
    else:
        assert reply.code == 250
        (only,) = plugin.kept
        assert [str(r) for r in only.recipients] == ["b@example.org"]
        assert b"wire money" in only.message
    await raw.finish()


# --- AUTH ----------------------------------------------------------------------------------


class Authenticating(Keep):
    def extensions(self, session: Session) -> Offer:
        return Offer(auth=password_mechanisms(self.check))

    def check(self, session: Session, username: str, password: str) -> bool:
        return (username, password) == ("user", "secret")


async def test_auth_is_not_offered_without_tls_by_default() -> None:
    raw = await raw_session(server(Authenticating()))
    (ehlo,) = await raw.send(EHLO)
    assert not any(line.startswith("AUTH") for line in ehlo.lines)
    assert await raw.codes(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n") == [503]
    await raw.finish()


async def test_auth_plain_and_login_and_the_failure_limit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    srv = server(Authenticating(), auth_without_tls=True, max_auth_failures=2)
    raw = await raw_session(srv)
    (ehlo,) = await raw.send(EHLO)
    assert "AUTH PLAIN LOGIN" in ehlo.lines
    assert await raw.codes(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n") == [235]
    assert await raw.codes(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n") == [503]  # already authenticated
    await raw.finish()

    raw = await raw_session(srv)
    await raw.send(EHLO)
    assert await raw.codes(b"AUTH LOGIN\r\n") == [334]
    assert await raw.codes(b"dXNlcg==\r\n") == [334]
    assert await raw.codes(b"d3Jvbmc=\r\n") == [535]
    assert await raw.codes(b"AUTH LOGIN dXNlcg==\r\n") == [334]
    # The failure that spends the budget is answered by the 421 alone.
    assert await raw.codes(b"d3Jvbmc=\r\n") == [421]
    assert await raw.closed() and raw.parser.next_reply() is None
    await raw.finish()
    # AUTH payloads never reach the log.
    for secret in ("AHVzZXIAc2VjcmV0", "secret", "d3Jvbmc=", "dXNlcg=="):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("attempt", "last_line"),
    [
        (b"AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n", None),  # 535 otherwise
        (b"AUTH LOGIN\r\n", b"*\r\n"),  # cancelled: 501 otherwise
        (b"AUTH LOGIN\r\n", b"\xff\xfe\r\n"),  # refused by the core: 501 otherwise
        (b"AUTH LOGIN\r\n", b"x" * 13000 + b"\r\n"),  # too long: 500 otherwise
    ],
)
async def test_the_auth_failure_that_spends_the_budget_gets_one_reply_the_421(
    attempt: bytes, last_line: bytes | None
) -> None:
    srv = server(Authenticating(), auth_without_tls=True)  # max_auth_failures=3
    raw = await raw_session(srv)
    await raw.send(EHLO)
    for n in range(3):
        if last_line is None:
            (reply,) = await raw.send(attempt)
        else:
            assert await raw.codes(attempt) == [334]
            (reply,) = await raw.send(last_line)
        if n < 2:
            assert 500 <= reply.code < 600, reply
    assert str(reply) == "421 4.7.0 Too many errors, closing transmission channel"
    assert await raw.closed() and raw.parser.next_reply() is None
    await raw.finish()
    assert srv.stats["auth_failures"] == 3


# --- BDAT ------------------------------------------------------------------------------------


async def test_bdat_message() -> None:
    plugin = Keep()
    raw = await raw_session(server(plugin))
    await raw.send(EHLO)
    await raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n", 2)
    codes = await raw.codes(b"BDAT 14\r\nSubject: b\r\n\r\nBDAT 4 LAST\r\nhi\r\n", 2)
    assert codes == [250, 250]
    assert plugin.kept[0].message == b"Subject: b\r\n\r\nhi\r\n"
    await raw.finish()


async def test_bdat_refused_by_accept_data_is_still_read() -> None:
    class NoData(Keep):
        async def accept_data(self, session: Session, transaction: Transaction) -> None:
            raise Reject(Reply.of(554, "not today", "5.7.1"))

    raw = await raw_session(server(NoData()))
    await raw.send(EHLO)
    await raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n", 2)
    assert await raw.codes(b"BDAT 6 LAST\r\nQUIT\r\n", 1) == [554]
    assert await raw.codes(b"RSET\r\n") == [250]  # the chunk was data, not a QUIT
    await raw.finish()


# --- events ----------------------------------------------------------------------------------


async def test_envelope_received_events() -> None:
    srv = server(Keep())
    with srv.events.subscribe() as events:
        raw = await raw_session(srv)
        await raw.send(EHLO)
        await raw.send(ENVELOPE, 3)
        await raw.send(b"Subject: e\r\n\r\nx\r\n.\r\n")
        event = await asyncio.wait_for(events.__anext__(), 1)
        await raw.finish()
    assert str(event.info.sender) == "<a@example.com>"
    assert [str(r) for r in event.info.recipients] == ["b@example.org"]
    assert event.size == len(b"Subject: e\r\n\r\nx\r\n")
    assert srv.events.subscribers == 0


def test_listeners_hear_each_event_as_it_is_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus: EventBus[int] = EventBus()
    heard: list[int] = []
    twice: list[int] = []

    def failing(event: int) -> None:
        raise RuntimeError("listener bug")

    with bus.listen(heard.append), bus.listen(failing):
        first = bus.listen(twice.append)
        second = bus.listen(twice.append)  # the same callable, registered twice
        assert bus.subscribers == 4
        bus.publish(1)  # a failing listener is logged; the others and the publisher go on
        first.close()  # ends that registration only
        bus.publish(2)
        second.close()
        bus.publish(3)
    bus.publish(4)
    assert heard == [1, 2, 3]
    assert twice == [1, 1, 2]
    assert bus.subscribers == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"event listener {failing!r} failed"
    ] * 3


async def test_a_listener_failing_on_the_error_stream_is_reported_once() -> None:
    """The error stream publishes every error record; a listener of it that fails is
    logged as an error, which reaches the stream again: reported once, not without end."""
    stream = ErrorStream(asyncio.get_running_loop())
    logger = logging.getLogger("smtpx.server.events")
    logger.addHandler(stream)
    calls = 0

    def failing(event: ErrorEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("listener bug")

    try:
        with stream.bus.listen(failing):
            logger.error("something went wrong")
    finally:
        logger.removeHandler(stream)
    assert calls == 2  # the error, then the report of the listener's failure
    assert [e.message for e in stream.recent] == [
        "something went wrong",
        f"event listener {failing!r} failed",
    ]


async def test_stats_count_sessions_and_messages() -> None:
    srv = server(Keep())
    raw = await raw_session(srv)
    await raw.send(EHLO)
    await raw.send(ENVELOPE, 3)
    await raw.send(b"Subject: e\r\n\r\nx\r\n.\r\n")
    await raw.finish()
    assert srv.stats["sessions"] == 1 and srv.stats["messages"] == 1


async def test_client_pipelines_through_the_server() -> None:
    plugin = Keep()
    client_end, server_end = memory_pair()
    task = asyncio.get_running_loop().create_task(server(plugin).serve_stream(server_end))
    envelope = Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org", "c@example.org"],
        message=b"Subject: p\r\n\r\n.x\r\n",
    )
    async with connect("mx.test", config=ClientConfig.for_testing(), stream=client_end) as client:
        statuses = [s async for s in client.send_many([envelope] * 5)]
    await task
    assert all(s.ok for s in statuses)
    assert [e.message for e in plugin.kept] == [b"Subject: p\r\n\r\n.x\r\n"] * 5
