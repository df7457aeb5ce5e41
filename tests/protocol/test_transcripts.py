"""The protocol-level acceptance cases of the reference (section 3), as transcripts.

The reference's texts ("250 Ok: continue") are replaced by standard ones with enhanced
status codes, and its quirks are fixed (see each test); the exchanges, codes and state
changes are the same.
"""

from __future__ import annotations

import base64
from textwrap import dedent

from smtpx.protocol import (
    Address,
    Auth,
    ClientConnection,
    Data,
    DataChunk,
    Ehlo,
    EndOfData,
    Extensions,
    Mail,
    Quit,
    Rcpt,
    Reply,
    Response,
    Rset,
    Sender,
    ServerConnection,
    State,
    replies,
)
from smtpx.testing import Handler, Session


def expect(text: str) -> str:
    return dedent(text).lstrip("\n")


class RejectingHandler(Handler):
    """The reference's default plugin: it cannot process messages (554)."""

    def end_of_data(self) -> Reply:
        return replies.transaction_failed("Message processing not implemented")


def test_3_2_1_full_client_server_transcript() -> None:
    handler = RejectingHandler(extensions=Extensions(eightbitmime=True))
    session = Session(handler)
    session.start()
    session.command(Ehlo("smtp-test-client.example"))
    session.command(Mail(Sender.parse("<sender@example.com>")))
    session.command(Rcpt(Address.parse("recipient@example.com")))
    session.command(Data())
    final = session.message(b"Subject: TEST EMAIL\r\n\r\nTEST EMAIL\r\n")
    assert final.code == 554
    session.command(Rset())
    session.command(Quit())
    assert session.transcript() == expect(
        """
        S: 220 mx.test ESMTP smtpx
        C: EHLO smtp-test-client.example
        S: 250-mx.test greets smtp-test-client.example
        S: 250 8BITMIME
        C: MAIL FROM:<sender@example.com>
        S: 250 2.1.0 Ok
        C: RCPT TO:<recipient@example.com>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: TEST EMAIL
        C:
        C: TEST EMAIL
        C: .
        S: 554 5.0.0 Message processing not implemented
        C: RSET
        S: 250 2.0.0 Ok
        C: QUIT
        S: 221 2.0.0 Bye
        """
    )
    assert session.client.state is State.CLOSED
    assert session.server.state is State.CLOSED


def test_3_2_2_manual_client_empty_data() -> None:
    session = Session()
    session.start()
    session.send_raw(b"EHLO client.example\r\n")
    replies_ = session.send_raw(
        b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<recipient@example.com>\r\nDATA\r\n"
    )
    assert [r.code for r in replies_] == [250, 250, 354]
    (final,) = session.send_raw(b".\r\n")
    assert final.code == 250
    assert session.handler.messages[-1].data == b""
    (bye,) = session.send_raw(b"QUIT\r\n")
    assert bye.code == 221
    session.close_client()
    assert session.server_closed


def test_3_2_3_client_against_scripted_server() -> None:
    client = ClientConnection()
    script = iter(
        [
            b"220 custom\r\n",
            b"250 continue\r\n",
            b"250 continue\r\n",
            b"250 continue\r\n",
            b"354 go ahead\r\n",
            b"250 ok\r\n",
            b"250 continue\r\n",
            b"221 goodbye\r\n",
        ]
    )
    seen: list[tuple[str, int]] = []

    def answer() -> Response:
        client.receive_data(next(script))
        event = client.next_event()
        assert isinstance(event, Response)
        seen.append((str(event.command), event.reply.code))
        return event

    assert answer().reply.lines == ("custom",)
    for command in (
        Ehlo("client.example"),
        Mail(Sender.parse("<sender@example.com>")),
        Rcpt(Address.parse("recipient@example.com")),
        Data(),
    ):
        client.send(command)
        answer()
    client.send(DataChunk(b"Subject: TEST EMAIL\n\nTEST EMAIL\n.\n"))
    client.send(EndOfData())
    answer()
    client.send(Rset())
    answer()
    client.send(Quit())
    answer()
    assert client.data_to_send().endswith(
        b"DATA\r\nSubject: TEST EMAIL\r\n\r\nTEST EMAIL\r\n..\r\n.\r\nRSET\r\nQUIT\r\n"
    )
    assert [code for _, code in seen] == [220, 250, 250, 250, 354, 250, 250, 221]
    assert client.state is State.CLOSED  # the client closes after the 221


def test_3_2_4_command_timeout() -> None:
    session = Session()
    session.start()
    session.command(Ehlo("client.example"))
    session.command(Mail(Sender.parse("<sender@example.com>")))
    # The client goes silent; the I/O layer's timer fires and the core lets it say 421.
    session.server.send(replies.command_timeout())
    (response,) = session.pump()
    assert response.command is None and response.reply.code == 421
    assert session.transcript().endswith(
        "S: 421 4.4.2 Timeout exceeded waiting for a command, closing transmission channel\n"
    )
    assert session.server.state is State.CLOSED
    assert session.client.state is State.CLOSED


def test_3_2_5_data_timeout() -> None:
    session = Session()
    session.start()
    session.command(Ehlo("client.example"))
    session.command(
        Mail(Sender.parse("<sender@example.com>")),
        Rcpt(Address.parse("recipient@example.com")),
        Data(),
    )
    session.client.send(DataChunk(b"Subject: half a message\r\n"))
    session.pump()
    assert session.server.state is State.DATA
    session.server.send(replies.data_timeout())
    (response,) = session.pump()
    assert response.reply.code == 421
    assert session.server.state is State.CLOSED
    assert session.handler.messages == []  # nothing half-received is kept


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auth_session(*, advertise: bool = True) -> Session:
    handler = Handler(
        extensions=Extensions(eightbitmime=True),
        auth={"username": "password"} if advertise else {},
    )
    session = Session(handler)
    session.start()
    session.command(Ehlo("client.example"))
    return session


def test_3_3_4_login_success() -> None:
    session = auth_session()
    session.command(Auth("LOGIN"))
    session.auth_response(_b64("username"))
    final = session.auth_response(_b64("password"))
    assert final.code == 235
    assert session.server.authenticated and session.client.authenticated
    assert session.transcript().endswith(
        expect(
            """
            C: AUTH LOGIN
            S: 334 VXNlcm5hbWU6
            C: dXNlcm5hbWU=
            S: 334 UGFzc3dvcmQ6
            C: cGFzc3dvcmQ=
            S: 235 2.7.0 Authentication successful
            """
        )
    )


def test_3_3_5_login_bad_password() -> None:
    session = auth_session()
    session.command(Auth("LOGIN"))
    session.auth_response(_b64("username"))
    final = session.auth_response(_b64("Xpassword"))
    assert str(final) == "535 5.7.8 Authentication credentials invalid"
    assert session.server.state is State.READY and not session.server.authenticated
    assert "C: WHBhc3N3b3Jk\n" in session.transcript()


def test_3_3_6_and_7_plain() -> None:
    session = auth_session()
    (ok,) = session.command(Auth("PLAIN", "AHVzZXJuYW1lAHBhc3N3b3Jk"))
    assert ok.code == 235
    session = auth_session()
    (bad,) = session.command(Auth("PLAIN", "AHVzZXJuYW1lAFhwYXNzd29yZA=="))
    assert bad.code == 535


def test_3_3_14_login_with_initial_response_skips_username() -> None:
    session = auth_session()
    (challenge,) = session.command(Auth("LOGIN", "dXNlcm5hbWU="))
    assert str(challenge) == "334 UGFzc3dvcmQ6"
    assert session.auth_response(_b64("password")).code == 235


def test_3_3_15_plain_without_initial_response() -> None:
    # The reference sends a made-up challenge text; RFC 4954 section 4 wants an empty one.
    session = auth_session()
    (challenge,) = session.command(Auth("PLAIN"))
    assert challenge.code == 334 and challenge.lines == ("",)
    assert session.auth_response(_b64("\0username\0password")).code == 235
    assert "S: 334\n" in session.transcript()


def test_3_3_16_auth_when_not_advertised() -> None:
    # The reference answers 502; the mechanism is simply not enabled: 503 5.5.1 (and 504
    # 5.5.4 for a mechanism the server does not offer when AUTH is advertised).
    session = auth_session(advertise=False)
    (login,) = session.command(Auth("LOGIN"))
    (plain,) = session.command(Auth("PLAIN", "1234"))
    assert [str(login), str(plain)] == [
        "503 5.5.1 Authentication is not enabled",
        "503 5.5.1 Authentication is not enabled",
    ]
    session = auth_session()
    (unknown,) = session.command(Auth("CRAM-MD5"))
    assert str(unknown) == "504 5.5.4 Unrecognized authentication type: CRAM-MD5"


def test_pipelined_transaction_transcript() -> None:
    """PIPELINING (which the reference lacks): one flight out, replies in order."""
    session = Session()
    session.start()
    session.command(Ehlo("client.example"))
    out = session.command(
        Mail(Sender.parse("<a@example.com>")),
        Rcpt(Address.parse("b@example.com")),
        Rcpt(Address.parse("c@example.com")),
        Data(),
    )
    assert [r.code for r in out] == [250, 250, 250, 354]
    assert session.message(b"Subject: p\r\n\r\nbody\r\n").code == 250
    assert session.transcript().split("S: 250 CHUNKING\n")[1] == expect(
        """
        C: MAIL FROM:<a@example.com>
        C: RCPT TO:<b@example.com>
        C: RCPT TO:<c@example.com>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: p
        C:
        C: body
        C: .
        S: 250 2.0.0 Ok: queued as MSG1
        """
    )
    message = session.handler.messages[0]
    assert [str(r.recipient) for r in message.recipients] == ["b@example.com", "c@example.com"]


def test_server_connection_alone_reports_its_state() -> None:
    conn = ServerConnection()
    assert conn.state is State.GREETING
    conn.send(replies.service_ready("mx.test"))
    assert conn.state is State.READY
