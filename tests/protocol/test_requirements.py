"""A server core that requires TLS (RFC 3207 section 4) or AUTH (RFC 4954 section 6):
every command but the few that lead there gets ``530 5.7.0``, one reply per command."""

from __future__ import annotations

import pytest

from smtpx.protocol import Auth, Limits, Reply, ServerConnection, replies
from tests.protocol.test_connection import Driver, accept

TLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_FIRST = "530 5.7.0 Authentication required"

# Every command that leads nowhere near TLS or AUTH, from every group of RFC 5321.
REFUSED = [
    b"MAIL FROM:<a@example.com>",
    b"RCPT TO:<b@example.org>",
    b"DATA",
    b"VRFY postmaster",
    b"EXPN staff",
    b"HELP",
]


def responder(event: object) -> Reply | None:
    """Says yes to everything; AUTH succeeds at once."""
    return replies.auth_succeeded() if isinstance(event, Auth) else accept(event)


def driver(limits: Limits, *, tls: bool = False) -> Driver:
    d = Driver(limits, responder)
    if tls:  # an implicit-TLS channel: TLS from the first byte
        d.conn = ServerConnection(limits, tls=True)
        d.conn.send(replies.service_ready("mx"))
        d.conn.data_to_send()
    return d


def texts(d: Driver, data: bytes) -> list[str]:
    return [str(r) for r in d.feed(data)]


@pytest.mark.parametrize("line", [*REFUSED, b"RSET", b"AUTH PLAIN AGEAYg=="], ids=repr)
def test_before_tls_only_noop_ehlo_helo_starttls_and_quit_go_on(line: bytes) -> None:
    d = driver(Limits(require_tls=True))
    assert texts(d, b"EHLO c.example\r\n" + line + b"\r\n")[1:] == [TLS_FIRST]
    assert d.codes(b"NOOP\r\nHELO c.example\r\nSTARTTLS\r\n") == [250, 250, 220]
    assert d.conn.tls
    assert d.codes(b"EHLO c.example\r\n" + line + b"\r\nQUIT\r\n")[1] != 530


@pytest.mark.parametrize("line", REFUSED, ids=repr)
def test_before_auth_rset_and_auth_go_on_too(line: bytes) -> None:
    d = driver(Limits(require_auth=True))
    assert d.codes(b"EHLO c.example\r\nNOOP\r\nRSET\r\n") == [250, 250, 250]
    assert texts(d, line + b"\r\n") == [AUTH_FIRST]
    assert d.codes(b"AUTH PLAIN AGEAYg==\r\n") == [235]
    assert d.conn.authenticated
    assert d.codes(line + b"\r\n") != [530]


def test_pipelined_commands_each_get_their_one_reply() -> None:
    d = driver(Limits(require_tls=True, require_auth=True))
    pipelined = (
        b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
        b"DATA\r\nRSET\r\nNOOP\r\n"
    )
    got = texts(d, pipelined)
    assert got[1:] == [TLS_FIRST, TLS_FIRST, TLS_FIRST, TLS_FIRST, "250 2.0.0 Ok"]
    # Over TLS, the same pipeline meets the AUTH requirement instead (RSET may pass).
    assert d.codes(b"STARTTLS\r\n") == [220]
    got = texts(d, pipelined)
    assert got[1:] == [AUTH_FIRST, AUTH_FIRST, AUTH_FIRST, "250 2.0.0 Ok", "250 2.0.0 Ok"]
    assert d.codes(b"AUTH PLAIN AGEAYg==\r\n" + pipelined) == [235, 250, 250, 250, 354]


def test_a_bdat_chunk_is_read_and_refused_and_the_session_stays_in_step() -> None:
    d = driver(Limits(require_tls=True))
    assert d.codes(b"EHLO c.example\r\n") == [250]
    # The chunk's octets look like commands; they are read as content and dropped.
    assert texts(d, b"BDAT 12 LAST\r\nNOOP\r\nNOOP\r\nNOOP\r\n") == [TLS_FIRST, "250 2.0.0 Ok"]
    d = driver(Limits(require_auth=True), tls=True)
    assert d.codes(b"EHLO c.example\r\nBDAT 6\r\nNOOP\r\nRSET\r\n") == [250, 530, 250]


def test_implicit_tls_meets_the_tls_requirement() -> None:
    d = driver(Limits(require_tls=True), tls=True)
    assert d.codes(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n") == [250, 250]
    assert d.feed(b"STARTTLS\r\n")[0].code == 503  # TLS is already active


def test_the_refusals_spend_no_state() -> None:
    """A 530 changes nothing: the next command is judged as if it had not come."""
    d = driver(Limits(require_auth=True))
    d.codes(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n")
    assert d.conn.mail is None
    assert d.codes(b"AUTH PLAIN AGEAYg==\r\nRCPT TO:<b@example.org>\r\n") == [235, 503]
