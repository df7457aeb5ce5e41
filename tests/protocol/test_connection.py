"""ServerConnection and ClientConnection: states, pipelining, limits, extensions, safety."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.errors import LocalProtocolError, RemoteProtocolError
from smtpx.protocol import (
    NEED_DATA,
    PAUSED,
    Address,
    Auth,
    AuthResponse,
    BareNewlines,
    Bdat,
    ClientConnection,
    Command,
    ConnectionClosed,
    Data,
    DataChunk,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Extensions,
    Helo,
    Limits,
    Mail,
    MailParams,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Response,
    Rset,
    Sender,
    ServerConnection,
    StartTls,
    State,
    replies,
)
from smtpx.protocol.replies import parse_replies

ALL_EXTENSIONS = Extensions(
    pipelining=True,
    size=1000,
    eightbitmime=True,
    smtputf8=True,
    enhancedstatuscodes=True,
    chunking=True,
    dsn=True,
    starttls=True,
    auth=("PLAIN", "LOGIN"),
    other=("X-CUSTOM",),
)


def accept(event: object) -> Reply | None:
    """A server that says yes to everything it can."""
    if isinstance(event, Ehlo):
        return replies.ehlo_ok("mx", "hi", ALL_EXTENSIONS.to_lines())
    if isinstance(event, Data):
        return replies.start_mail_input()
    if isinstance(event, StartTls):
        return replies.ready_to_start_tls()
    if isinstance(event, Quit):
        return replies.closing()
    if isinstance(event, (DataChunk, Bdat)):
        return None
    if isinstance(event, (Command, EndOfData, EndOfChunk)):
        return replies.ok()
    if isinstance(event, AuthResponse):
        return replies.auth_succeeded()
    return None


Responder = Callable[[object], Reply | None]


class Driver:
    """Runs a ServerConnection over canned input, like a server loop would."""

    def __init__(self, limits: Limits | None = None, responder: Responder = accept) -> None:
        self.conn = ServerConnection(limits)
        self.responder = responder
        self.events: list[object] = []
        self.errors: list[RemoteProtocolError] = []
        self.conn.send(replies.service_ready("mx"))
        self.conn.data_to_send()

    def feed(self, data: bytes) -> list[Reply]:
        """Bytes from the client (``b""`` is nothing, not EOF: see :meth:`eof`)."""
        if data:
            self.conn.receive_data(data)
        self.run()
        return parse_replies(self.conn.data_to_send())

    def run(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as exc:
                self.errors.append(exc)
                self.events.append(exc)
                self.conn.send(exc.reply)
                continue
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                return
            assert event is not PAUSED, "the responder left an event unanswered"
            self.events.append(event)
            reply = self.responder(event)
            if reply is not None:
                self.conn.send(reply)

    def codes(self, data: bytes) -> list[int]:
        return [r.code for r in self.feed(data)]


def ehlo_driver(limits: Limits | None = None, responder: Responder = accept) -> Driver:
    d = Driver(limits, responder)
    assert d.codes(b"EHLO client.example\r\n") == [250]
    return d


# --- greeting and basic flow ---------------------------------------------------------


def test_nothing_happens_before_the_greeting() -> None:
    conn = ServerConnection()
    conn.receive_data(b"EHLO early\r\n")
    assert conn.next_event() is PAUSED
    with pytest.raises(LocalProtocolError):
        conn.send(replies.ok())  # a 250 is not a greeting... but it is a reply to CONNECT
    conn.send(replies.service_ready("mx"))
    assert conn.next_event() == Ehlo("early")


def test_pipelined_commands_come_one_at_a_time_and_replies_keep_order() -> None:
    conn = ServerConnection()
    conn.send(replies.service_ready("mx"))
    conn.receive_data(b"EHLO c\r\nNOOP 1\r\nNOOP 2\r\nNOOP 3\r\n")
    assert conn.next_event() == Ehlo("c")
    assert conn.next_event() is PAUSED
    assert conn.awaiting_reply
    conn.send(replies.ehlo_ok("mx", "hi", ["PIPELINING"]))
    texts = []
    while (event := conn.next_event()) is not NEED_DATA:
        assert isinstance(event, Noop)
        texts.append(event.text)
        conn.send(replies.ok(f"noop {event.text}"))
    assert texts == ["1", "2", "3"]
    assert conn.unsent == 5  # replies sent, not yet taken
    wire = parse_replies(conn.data_to_send())
    assert conn.unsent == 0
    assert [r.code for r in wire[:2]] == [220, 250]
    assert [r.lines[-1] for r in wire[2:]] == ["noop 1", "noop 2", "noop 3"]


def test_full_transaction_and_state_changes() -> None:
    d = ehlo_driver()
    conn = d.conn
    assert conn.state is State.READY
    assert d.codes(b"MAIL FROM:<a@example.org> SIZE=20\r\n") == [250]
    assert conn.state is State.MAIL and conn.mail is not None
    assert d.codes(b"RCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n") == [250, 250]
    assert conn.state is State.RCPT and conn.recipients == 2
    assert d.codes(b"DATA\r\n") == [354]
    assert conn.state is State.DATA
    assert d.codes(b"Subject: hi\r\n\r\n..dots\r\n.\r\n") == [250]
    chunks = [e.data for e in d.events if isinstance(e, DataChunk)]
    assert b"".join(chunks) == b"Subject: hi\r\n\r\n.dots\r\n"
    assert isinstance(d.events[-1], EndOfData)
    assert conn.state is State.READY and conn.mail is None and conn.recipients == 0
    assert d.codes(b"QUIT\r\n") == [221]
    assert conn.state is State.CLOSED
    assert conn.next_event() == ConnectionClosed()


def test_every_empty_line_gets_one_reply() -> None:
    d = ehlo_driver()
    sent = d.feed(b"\r\n\r\nNOOP\r\n")
    assert [str(r) for r in sent[:2]] == ["500 5.5.2 Empty command line"] * 2
    assert [r.code for r in sent[2:]] == [250]
    assert d.conn.state is State.READY


# --- sequence errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "line", "code"),
    [
        (b"", b"RCPT TO:<a@b.example>", 503),
        (b"", b"DATA", 503),
        (b"MAIL FROM:<a@b.example>\r\n", b"MAIL FROM:<a@b.example>", 503),
        (b"MAIL FROM:<a@b.example>\r\n", b"DATA", 554),
        (b"MAIL FROM:<a@b.example>\r\n", b"STARTTLS", 503),
        (b"MAIL FROM:<a@b.example>\r\n", b"AUTH PLAIN", 503),
        (b"", b"FOO bar", 500),
        (b"", b"MAIL FROM:<not an address>", 501),
    ],
)
def test_refusals(setup: bytes, line: bytes, code: int) -> None:
    d = ehlo_driver()
    d.feed(setup)
    state = d.conn.state
    assert d.codes(line + b"\r\n") == [code]
    assert d.conn.state is state  # a refused command changes nothing
    assert d.errors[-1].reply.code == code


def test_refused_greeting_only_allows_quit() -> None:
    conn = ServerConnection()
    conn.send(replies.service_refused("mx"))
    assert conn.state is State.REFUSED
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\nQUIT\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply.code == 503
    conn.send(info.value.reply)
    assert conn.next_event() == Quit()
    conn.send(replies.closing())
    assert conn.state is State.CLOSED


def test_helo_resets_transaction_and_extensions() -> None:
    d = ehlo_driver()
    d.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert d.conn.state is State.MAIL
    d.responder = lambda e: replies.helo_ok("mx") if isinstance(e, Helo) else accept(e)
    assert d.codes(b"HELO again\r\n") == [250]
    assert d.conn.state is State.READY
    assert d.conn.extensions == Extensions()
    # After HELO no extension is in effect: every parameter is refused.
    assert d.codes(b"MAIL FROM:<a@b.example> SIZE=10\r\n") == [555]


def test_rset_from_every_transaction_state() -> None:
    d = ehlo_driver()
    for setup in (b"", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n"):
        d.feed(setup)
        assert d.codes(b"RSET\r\n") == [250]
        assert d.conn.state is State.READY
        d.feed(b"MAIL FROM:<a@b.example>\r\n") if setup else None


def test_require_helo() -> None:
    d = Driver(Limits(require_helo=True))
    assert d.codes(b"MAIL FROM:<a@b.example>\r\n") == [503]
    assert d.codes(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n") == [250, 250]


# --- line handling ---------------------------------------------------------------------


def test_command_line_too_long_resyncs_at_next_line() -> None:
    d = ehlo_driver(Limits(max_command_line=64))
    codes = d.codes(b"NOOP " + b"x" * 100 + b"\r\nNOOP ok\r\n")
    assert codes == [500, 250]
    assert d.errors[-1].reply.enhanced is not None
    assert str(d.errors[-1].reply.enhanced) == "5.5.2"


def test_command_line_too_long_arriving_in_pieces() -> None:
    d = ehlo_driver(Limits(max_command_line=64))
    assert d.codes(b"NOOP " + b"y" * 70) == [500]
    assert d.conn.buffered_input == 0  # not accumulated
    assert d.codes(b"z" * 1000) == []
    assert d.codes(b"still the same line\r\nNOOP\r\n") == [250]


def test_bare_lf_in_command_line() -> None:
    d = ehlo_driver()
    assert d.codes(b"NOOP\nNOOP\r\n") == [500, 250]
    normal = ehlo_driver(Limits(bare_newlines=BareNewlines.NORMALIZE))
    assert normal.codes(b"NOOP\nNOOP\r\n") == [250, 250]


def test_bare_cr_in_command_line_is_refused() -> None:
    d = ehlo_driver(Limits(bare_newlines=BareNewlines.NORMALIZE))
    assert d.codes(b"NOOP a\rb\r\n") == [500]


# --- extensions in effect --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "line", "code"),
    [
        (Extensions(), b"MAIL FROM:<a@b.example> SIZE=10", 555),
        (Extensions(size=100), b"MAIL FROM:<a@b.example> SIZE=10", 250),
        (Extensions(size=100), b"MAIL FROM:<a@b.example> SIZE=101", 552),
        (Extensions(size=0), b"MAIL FROM:<a@b.example> SIZE=99999999", 250),
        (Extensions(), b"MAIL FROM:<a@b.example> BODY=8BITMIME", 555),
        (Extensions(eightbitmime=True), b"MAIL FROM:<a@b.example> BODY=8BITMIME", 250),
        (Extensions(eightbitmime=True), b"MAIL FROM:<a@b.example> BODY=BINARYMIME", 555),
        (
            Extensions(eightbitmime=True, binarymime=True, chunking=True),
            b"MAIL FROM:<a@b.example> BODY=BINARYMIME",
            250,
        ),
        (Extensions(), b"MAIL FROM:<a@b.example> SMTPUTF8", 555),
        (Extensions(smtputf8=True), "MAIL FROM:<δ@b.example>".encode(), 553),
        (Extensions(smtputf8=True), "MAIL FROM:<δ@b.example> SMTPUTF8".encode(), 250),
        (Extensions(), b"MAIL FROM:<a@b.example> RET=HDRS", 555),
        (Extensions(dsn=True), b"MAIL FROM:<a@b.example> RET=HDRS ENVID=x+2By", 250),
        (Extensions(auth=("PLAIN",)), b"MAIL FROM:<a@b.example> AUTH=<>", 250),
        (Extensions(), b"MAIL FROM:<a@b.example> AUTH=<>", 555),
        (Extensions(), b"MAIL FROM:<a@b.example> X-CUSTOM=1", 555),
        (Extensions(other=("X-CUSTOM",)), b"MAIL FROM:<a@b.example> X-CUSTOM=1", 250),
        (Extensions(), b"MAIL FROM:<a@b.example> SIZE=abc", 501),
    ],
)
def test_mail_parameters_follow_advertised_extensions(
    ext: Extensions, line: bytes, code: int
) -> None:
    def responder(event: object) -> Reply | None:
        if isinstance(event, Ehlo):
            return replies.ehlo_ok("mx", "hi", ext.to_lines())
        return accept(event)

    d = ehlo_driver(responder=responder)
    assert d.codes(line + b"\r\n") == [code]


def test_declared_size_over_the_configured_limit() -> None:
    d = ehlo_driver(Limits(max_message_size=500))
    assert d.codes(b"MAIL FROM:<a@b.example> SIZE=501\r\n") == [552]


def test_rcpt_parameters_and_utf8() -> None:
    d = ehlo_driver()
    d.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert d.codes(
        b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example\r\n"
    ) == [250]
    assert d.codes(b"RCPT TO:<c@d.example> FOO=1\r\n") == [555]
    assert d.codes("RCPT TO:<ü@d.example>\r\n".encode()) == [553]
    d.feed(b"RSET\r\n")
    d.feed(b"MAIL FROM:<a@b.example> SMTPUTF8\r\n")
    assert d.codes("RCPT TO:<ü@d.example>\r\n".encode()) == [250]


def test_max_recipients() -> None:
    d = ehlo_driver(Limits(max_recipients=2))
    d.feed(b"MAIL FROM:<a@b.example>\r\n")
    wire = b"".join(b"RCPT TO:<r%d@d.example>\r\n" % i for i in range(4))
    assert d.codes(wire) == [250, 250, 452, 452]
    assert str(d.errors[-1].reply.enhanced) == "4.5.3"
    # Refused recipients don't count: after RSET the budget is back.
    d.feed(b"RSET\r\nMAIL FROM:<a@b.example>\r\n")
    assert d.codes(b"RCPT TO:<x@d.example>\r\n") == [250]


# --- DATA --------------------------------------------------------------------------------


def data_driver(limits: Limits | None = None) -> Driver:
    d = ehlo_driver(limits)
    assert d.codes(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n") == [
        250,
        250,
        354,
    ]
    return d


def test_data_refused_after_its_end_and_session_goes_on() -> None:
    d = data_driver()
    assert d.codes(b"line\nmore\r\n.\r\nNOOP\r\n") == [500, 250]
    assert d.conn.state is State.READY


def test_data_size_limit() -> None:
    d = data_driver(Limits(max_message_size=10))
    assert d.codes(b"0123456789\r\n" * 5 + b".\r\n") == [552]
    assert d.conn.state is State.READY


def test_eof_in_data_closes() -> None:
    d = data_driver()
    d.feed(b"partial message\r\n")
    d.conn.receive_data(b"")
    assert d.conn.next_event() == ConnectionClosed()
    assert d.conn.state is State.CLOSED


def test_eof_mid_command() -> None:
    d = ehlo_driver()
    d.conn.receive_data(b"NOOP\r\nNOO")
    d.conn.receive_data(b"")
    assert d.conn.next_event() == Noop()
    d.conn.send(replies.ok())
    assert d.conn.next_event() == ConnectionClosed()


def test_binarymime_needs_bdat() -> None:
    d = ehlo_driver(
        responder=lambda e: (
            replies.ehlo_ok(
                "mx", "hi", Extensions(eightbitmime=True, binarymime=True, chunking=True).to_lines()
            )
            if isinstance(e, Ehlo)
            else accept(e)
        )
    )
    d.feed(b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n")
    assert d.codes(b"DATA\r\n") == [503]


# --- BDAT --------------------------------------------------------------------------------


def test_bdat_chunks() -> None:
    d = ehlo_driver()
    d.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    codes = d.codes(b"BDAT 5\r\nhel\r\nBDAT 6 LAST\r\nworld!")
    assert codes == [250, 250]
    data = b"".join(e.data for e in d.events if isinstance(e, DataChunk))
    assert data == b"hel\r\nworld!"
    ends = [e for e in d.events if isinstance(e, EndOfChunk)]
    assert ends == [EndOfChunk(False), EndOfChunk(True)]
    assert d.conn.state is State.READY


def test_bdat_chunk_is_consumed_even_when_refused() -> None:
    d = ehlo_driver()
    # No transaction: 503, but the 9 octets "NOOP\r\nXYZ" are chunk data, not commands.
    assert d.codes(b"BDAT 9\r\nNOOP\r\nXYZNOOP\r\n") == [503, 250]


def test_bdat_without_chunking_is_consumed_and_refused() -> None:
    d = Driver()
    assert d.codes(b"HELO c\r\n") == [250]
    assert d.codes(b"BDAT 4\r\nQUITNOOP\r\n") == [502, 250]


def test_bdat_size_limit_then_failed_state_needs_rset() -> None:
    d = ehlo_driver(Limits(max_message_size=8))
    d.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert d.codes(b"BDAT 5\r\n12345BDAT 5\r\n67890BDAT 1 LAST\r\nX") == [250, 552, 503]
    assert d.conn.state is State.BDAT_FAILED
    assert d.codes(b"RSET\r\n") == [250]
    assert d.conn.state is State.READY


def test_bdat_zero_last() -> None:
    d = ehlo_driver()
    d.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert d.codes(b"BDAT 3\r\nabcBDAT 0 LAST\r\n") == [250, 250]
    assert d.conn.state is State.READY


def test_data_after_bdat_is_refused() -> None:
    d = ehlo_driver()
    d.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 1\r\nx")
    assert d.codes(b"DATA\r\n") == [503]


# --- STARTTLS ------------------------------------------------------------------------


def test_starttls_discards_pipelined_plaintext() -> None:
    d = ehlo_driver()
    codes = d.codes(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert codes == [220]  # the MAIL was never seen
    assert not any(isinstance(e, Mail) for e in d.events)
    conn = d.conn
    assert conn.tls and conn.helo is None and conn.extensions == Extensions()
    assert conn.state is State.READY
    # The session starts afresh on the TLS channel.
    assert d.codes(b"EHLO again\r\nSTARTTLS\r\n") == [250, 503]


def test_starttls_not_advertised() -> None:
    d = ehlo_driver(
        responder=lambda e: replies.ehlo_ok("mx", "hi", []) if isinstance(e, Ehlo) else accept(e)
    )
    assert d.codes(b"STARTTLS\r\n") == [502]


# --- AUTH --------------------------------------------------------------------------------


def auth_responder(event: object) -> Reply | None:
    if isinstance(event, AuthResponse):
        if event.cancelled:
            return replies.auth_cancelled()
        return replies.auth_succeeded() if event.line == "b2s=" else replies.auth_challenge("")
    if isinstance(event, Command) and event.verb == "AUTH":
        return replies.auth_challenge("")
    return accept(event)


def test_auth_exchange() -> None:
    d = ehlo_driver(responder=auth_responder)
    assert d.codes(b"AUTH LOGIN\r\n") == [334]
    assert d.conn.state is State.AUTH
    # In an AUTH exchange every line is a response, even one that looks like a command.
    assert d.codes(b"QUIT\r\n") == [334]
    assert d.codes(b"b2s=\r\n") == [235]
    assert d.conn.authenticated and d.conn.state is State.READY
    assert d.codes(b"AUTH PLAIN\r\n") == [503]


def test_auth_cancel_and_refusals() -> None:
    d = ehlo_driver(responder=auth_responder)
    assert d.codes(b"AUTH LOGIN\r\n*\r\n") == [334, 501]
    assert d.conn.state is State.READY and not d.conn.authenticated
    assert d.codes(b"AUTH CRAM-MD5\r\n") == [504]
    plain = Driver(responder=auth_responder)
    plain.responder = lambda e: (
        replies.ehlo_ok("mx", "hi", []) if isinstance(e, Ehlo) else accept(e)
    )
    plain.feed(b"EHLO c\r\n")
    assert plain.codes(b"AUTH PLAIN\r\n") == [503]


def test_auth_response_line_limit() -> None:
    d = ehlo_driver(Limits(max_auth_line=100), responder=auth_responder)
    assert d.codes(b"AUTH LOGIN\r\n" + b"A" * 200 + b"\r\nNOOP\r\n") == [334, 500, 250]
    assert d.conn.state is State.READY


def test_auth_response_must_be_ascii() -> None:
    d = ehlo_driver(responder=auth_responder)
    assert d.codes("AUTH LOGIN\r\nü\r\n".encode()) == [334, 501]
    assert d.conn.state is State.READY


# --- replies the server may and may not send -------------------------------------------


def test_unsolicited_421_closes() -> None:
    d = ehlo_driver()
    d.conn.send(replies.command_timeout())
    assert d.conn.state is State.CLOSED
    assert parse_replies(d.conn.data_to_send())[0].code == 421
    d.conn.receive_data(b"NOOP\r\n")
    assert d.conn.next_event() == ConnectionClosed()


def test_reply_without_a_command_is_a_local_error() -> None:
    d = ehlo_driver()
    with pytest.raises(LocalProtocolError):
        d.conn.send(replies.ok())


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"DATA", replies.ok()),
        (b"NOOP", replies.start_mail_input()),
        (b"MAIL FROM:<a@b.example>", replies.auth_challenge("")),
    ],
)
def test_wrong_kind_of_reply_is_a_local_error(line: bytes, reply: Reply) -> None:
    d = ehlo_driver()
    if line == b"DATA":
        d.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    d.conn.receive_data(line + b"\r\n")
    d.conn.next_event()
    with pytest.raises(LocalProtocolError):
        d.conn.send(reply)


def test_421_reply_to_a_command_closes() -> None:
    d = ehlo_driver()
    d.responder = lambda e: replies.too_many_errors()
    assert d.codes(b"NOOP\r\nNOOP\r\n") == [421]
    assert d.conn.state is State.CLOSED


# --- robustness: arbitrary input ------------------------------------------------------

VOCABULARY = [
    b"EHLO c.example\r\n",
    b"HELO c.example\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
    b"RCPT TO:<c@d.example>\r\n",
    b"RCPT TO:<c@d.example> NOTIFY=NEVER\r\n",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"BDAT 2 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN dXNlcg==\r\n",
    b"*\r\n",
    b"b2s=\r\n",
    b"VRFY x\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"..x\r\n",
    b"hello world\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00\xff",
    b"QUIT\r\n",
]


@given(
    st.lists(st.one_of(st.sampled_from(VOCABULARY), st.binary(max_size=20)), max_size=40),
    st.integers(1, 50),
    st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_arbitrary_input_only_yields_documented_errors(
    pieces: list[bytes], step: int, eof: bool
) -> None:
    """Whatever a client sends, the server core only raises RemoteProtocolError (with a
    reply to send), never anything else, and always ends up waiting for more input or
    closed."""
    d = Driver(Limits(max_command_line=80, max_text_line=60, max_message_size=300))
    d.responder = auth_responder
    wire = b"".join(pieces)
    for i in range(0, len(wire), step):
        d.conn.receive_data(wire[i : i + step])
        d.run()
        for reply in parse_replies(d.conn.data_to_send()):
            assert 200 <= reply.code <= 599
    if eof:
        d.conn.receive_data(b"")
        d.run()
        assert d.conn.state is State.CLOSED
    for error in d.errors:
        assert error.reply.code >= 400
    assert d.conn.next_event() in (NEED_DATA, ConnectionClosed())


# --- the client --------------------------------------------------------------------------


def client_after_ehlo(ext: Extensions = ALL_EXTENSIONS) -> ClientConnection:
    client = ClientConnection()
    client.receive_data(b"220 mx ESMTP\r\n")
    assert client.next_event() == Response(None, Reply.parse("220 mx ESMTP"))
    client.send(Ehlo("c"))
    assert client.data_to_send() == b"EHLO c\r\n"
    client.receive_data(replies.ehlo_ok("mx", "hi", ext.to_lines()).to_bytes())
    event = client.next_event()
    assert isinstance(event, Response) and event.reply.code == 250
    assert client.extensions == ext
    return client


def test_client_pipelines_and_pairs_replies() -> None:
    client = client_after_ehlo()
    mail = Mail(Sender.parse("<a@b.example>"), MailParams(size=10))
    rcpts = [Rcpt(Address.parse("c@d.example")), Rcpt(Address.parse("e@d.example"))]
    for command in (mail, *rcpts, Data()):
        client.send(command)
    assert client.data_to_send() == (
        b"MAIL FROM:<a@b.example> SIZE=10\r\nRCPT TO:<c@d.example>\r\n"
        b"RCPT TO:<e@d.example>\r\nDATA\r\n"
    )
    assert client.pending == 4
    client.receive_data(b"250 2.1.0 ok\r\n550 5.1.1 no\r\n250 2.1.5 ok\r\n354 go\r\n")
    got = []
    while isinstance(event := client.next_event(), Response):
        got.append((event.command, event.reply.code))
    assert got == [(mail, 250), (rcpts[0], 550), (rcpts[1], 250), (Data(), 354)]
    assert client.state is State.DATA
    client.send(DataChunk(b"Subject: x\n\n.hidden\n"))
    client.send(EndOfData())
    assert client.data_to_send() == b"Subject: x\r\n\r\n..hidden\r\n.\r\n"
    client.receive_data(b"250 2.0.0 queued\r\n")
    event = client.next_event()
    assert isinstance(event, Response) and event.command == EndOfData()
    assert client.state is State.READY


def test_client_must_wait_after_data_starttls_and_auth() -> None:
    client = client_after_ehlo()
    client.send(Mail(Sender.NULL))
    client.send(Rcpt(Address.parse("c@d.example")))
    client.send(Data())
    with pytest.raises(LocalProtocolError):
        client.send(Noop())
    with pytest.raises(LocalProtocolError):
        client.send(DataChunk(b"too early"))
    client.receive_data(b"250 ok\r\n250 ok\r\n554 no valid recipients\r\n")
    while isinstance(client.next_event(), Response):
        pass
    with pytest.raises(LocalProtocolError):
        client.send(EndOfData())
    client.send(Rset())  # allowed again now
    assert client.data_to_send().endswith(b"RSET\r\n")


def test_client_refuses_response_injection_after_starttls() -> None:
    client = client_after_ehlo()
    client.send(StartTls())
    client.receive_data(b"220 2.0.0 go ahead\r\n250 injected\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.fatal
    assert info.value.reply.code == 451


def test_client_after_starttls_forgets_extensions() -> None:
    client = client_after_ehlo()
    client.send(StartTls())
    client.receive_data(b"220 2.0.0 go ahead\r\n")
    assert isinstance(client.next_event(), Response)
    assert client.tls and client.extensions == Extensions() and client.ehlo_reply is None


def test_client_unsolicited_replies() -> None:
    client = client_after_ehlo()
    client.receive_data(b"250 surprise\r\n")
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    client = client_after_ehlo()
    client.receive_data(b"421 4.3.2 shutting down\r\n")
    event = client.next_event()
    assert isinstance(event, Response) and event.command is None
    assert client.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send(Noop())


def test_client_malformed_reply() -> None:
    client = ClientConnection()
    client.receive_data(b"hello there\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.reply.code == 451 and str(info.value.reply.enhanced) == "4.5.0"


def test_client_bdat_accounting() -> None:
    client = client_after_ehlo()
    client.send(Mail(Sender.NULL))
    client.send(Rcpt(Address.parse("c@d.example")))
    client.send(Bdat(4))
    with pytest.raises(LocalProtocolError):
        client.send(Noop())  # the chunk's octets are owed first
    client.send(DataChunk(b"ab"))
    with pytest.raises(LocalProtocolError):
        client.send(DataChunk(b"cde"))
    client.send(DataChunk(b"c\n"))  # BDAT content goes out byte for byte
    client.send(Bdat(0, last=True))
    assert client.data_to_send().endswith(b"BDAT 4\r\nabc\nBDAT 0 LAST\r\n")


def test_client_bdat_content_sent_by_other_means_and_the_replies() -> None:
    client = client_after_ehlo()
    client.send(Mail(Sender.NULL))
    client.send(Rcpt(Address.parse("c@d.example")))
    client.send(Bdat(10))
    client.send_chunk_content(6)  # written with sendfile, say
    with pytest.raises(LocalProtocolError):
        client.send_chunk_content(5)
    client.send_chunk_content(4)
    client.send(Bdat(3, last=True))
    client.send(DataChunk(b"xyz"))
    client.receive_data(b"250 a\r\n250 b\r\n250 10 octets\r\n")
    states = []
    for _ in range(3):
        assert isinstance(client.next_event(), Response)
        states.append(client.state)
    assert states == [State.MAIL, State.RCPT, State.BDAT]
    client.receive_data(b"554 5.7.1 no\r\n")  # the LAST chunk refused: RSET is due
    assert isinstance(client.next_event(), Response)
    assert client.state is State.BDAT_FAILED
    client.send(Rset())
    client.receive_data(b"250 ok\r\n")
    assert isinstance(client.next_event(), Response) and client.state is State.READY


def test_client_auth_responses_only_after_334() -> None:
    client = client_after_ehlo()
    with pytest.raises(LocalProtocolError):
        client.send(AuthResponse("abc="))
    from smtpx.protocol import Auth

    client.send(Auth("LOGIN"))
    client.receive_data(b"334 VXNlcm5hbWU6\r\n")
    assert isinstance(client.next_event(), Response)
    assert client.state is State.AUTH
    with pytest.raises(LocalProtocolError):
        client.send(Noop())
    client.send(AuthResponse("dXNlcg=="))
    with pytest.raises(LocalProtocolError):
        client.send(AuthResponse("again"))
    client.receive_data(b"235 2.7.0 ok\r\n")
    assert isinstance(client.next_event(), Response)
    assert client.authenticated and client.state is State.READY


def test_client_eof() -> None:
    client = client_after_ehlo()
    client.send(Noop())
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()
    assert client.state is State.CLOSED


def test_client_send_encoded_content() -> None:
    client = client_after_ehlo()
    client.send(Mail(Sender.NULL))
    client.send(Rcpt(Address.parse("c@d.example")))
    client.send(Data())
    client.receive_data(b"250 a\r\n250 b\r\n354 c\r\n")
    while isinstance(client.next_event(), Response):
        pass
    client.data_to_send()
    client.send_encoded_content(100, ends_with_crlf=True)
    client.send(EndOfData())
    assert client.data_to_send() == b".\r\n"


# --- whole, byte by byte, and with trailing bytes --------------------------------------

SESSION_INPUT = (
    b"EHLO c.example\r\n"
    b"MAIL FROM:<a@b.example> SIZE=40 BODY=8BITMIME\r\n"
    b"RCPT TO:<c@d.example> NOTIFY=FAILURE\r\n"
    b"DATA\r\n"
    b"Subject: x\r\n\r\n..one\r\ntwo\r\n.\r\n"
    b"MAIL FROM:<>\r\nRCPT TO:<e@d.example>\r\n"
    b"BDAT 7\r\nchunk\r\nBDAT 3 LAST\r\nend"
    b"AUTH LOGIN\r\ndXNlcg==\r\nb2s=\r\n"
    b"NOOP\r\n"
)


def run_in_steps(data: bytes, step: int) -> tuple[list[object], bytes]:
    d = Driver(responder=auth_responder)
    out = b""
    for i in range(0, len(data), step):
        d.conn.receive_data(data[i : i + step])
        d.run()
        out += d.conn.data_to_send()
    return d.events, out


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
def test_server_gives_the_same_events_whole_and_in_pieces(step: int) -> None:
    whole_events, whole_out = run_in_steps(SESSION_INPUT, len(SESSION_INPUT))
    events, out = run_in_steps(SESSION_INPUT, step)
    assert out == whole_out

    def joined(evs: list[object]) -> list[object]:
        # Content may arrive in more, smaller chunks; join adjacent chunks to compare.
        merged: list[object] = []
        for e in evs:
            if isinstance(e, DataChunk) and merged and isinstance(merged[-1], DataChunk):
                merged[-1] = DataChunk(merged[-1].data + e.data)
            else:
                merged.append(e)
        return merged

    assert joined(events) == joined(whole_events)
    assert [r.code for r in parse_replies(out)] == [
        250, 250, 250, 354, 250, 250, 250, 250, 250, 334, 334, 235, 250,
    ]  # fmt: skip


def test_trailing_partial_command_waits() -> None:
    d = ehlo_driver()
    assert d.codes(b"NOOP\r\nRSET\r\nMAIL FROM:<a@b") == [250, 250]
    assert d.conn.buffered_input == len(b"MAIL FROM:<a@b")
    assert d.codes(b".example>\r\n") == [250]


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_client_parses_replies_in_any_pieces(step: int) -> None:
    client = ClientConnection()
    wire = (
        b"220-mx first\r\n220 mx second\r\n"
        + replies.ehlo_ok("mx", "hi", ALL_EXTENSIONS.to_lines()).to_bytes()
        + b"250 2.0.0 ok\r\n"
    )
    client.send(Ehlo("c"))
    client.send(Noop())
    got: list[Response] = []
    for i in range(0, len(wire), step):
        client.receive_data(wire[i : i + step])
        while isinstance(event := client.next_event(), Response):
            got.append(event)
    assert [(str(r.command) if r.command else None, r.reply.code) for r in got] == [
        (None, 220),
        ("EHLO c", 250),
        ("NOOP", 250),
    ]
    assert got[0].reply.lines == ("mx first", "mx second")
    assert client.extensions == ALL_EXTENSIONS


def test_an_auth_command_may_carry_a_long_initial_response() -> None:
    """Clients send OAuth tokens of 1-2 KB with the AUTH command (RFC 4954 says not to;
    refusing leaves their users unable to log in): such a line may run to max_auth_line,
    any other stays within max_command_line."""
    d = ehlo_driver(Limits(max_command_line=512, max_auth_line=4096), responder=auth_responder)
    token = "dG9r" * 700  # 2,800 octets of base64
    assert d.codes(f"AUTH PLAIN {token}\r\n".encode()) == [334]
    auth = d.events[-1]
    assert isinstance(auth, Auth) and auth.initial_response == token
    assert d.codes(b"*\r\n") == [501]  # (leave the exchange)
    assert d.codes(f"auth plain {token}\r\n".encode()) == [334]  # any case
    assert d.codes(b"*\r\n") == [501]
    assert d.codes(b"NOOP " + b"x" * 600 + b"\r\n") == [500]
    assert d.codes(f"AUTH PLAIN {token * 2}\r\n".encode()) == [500]  # past max_auth_line
    assert d.codes(b"NOOP\r\n") == [250]  # in step


def test_an_unknown_command_is_refused_with_its_line() -> None:
    """The refusal of a command nobody defines carries its line (a plugin may answer
    it: Plugin.unknown_command, the milters' UNKNOWN); other refusals carry none."""
    d = ehlo_driver()
    assert d.codes(b"XFROB now\tplease\r\n") == [500]
    assert d.errors[-1].unknown == "XFROB now?please"
    assert str(d.errors[-1].reply) == "500 5.5.1 Command unrecognized: XFROB"
    assert d.codes(b"MAIL FROM:<nope\r\n") == [501]
    assert d.errors[-1].unknown is None
