"""LMTP (RFC 2033) in the protocol core: LHLO, and one reply per accepted recipient at
the end of the content, on both ends, and the two ends against each other."""

from __future__ import annotations

import pytest

from smtpx.errors import LocalProtocolError, RemoteProtocolError
from smtpx.protocol import (
    NEED_DATA,
    Address,
    Bdat,
    ClientConnection,
    Data,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Lhlo,
    Limits,
    Mail,
    Rcpt,
    Reply,
    Response,
    Sender,
    ServerConnection,
    State,
    parse_command,
    replies,
)
from smtpx.protocol.replies import parse_replies

LMTP = Limits(lmtp=True, max_message_size=100)
EXTENSIONS = ["PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING", "8BITMIME"]


def greeted(limits: Limits = LMTP) -> ServerConnection:
    conn = ServerConnection(limits)
    conn.send(replies.service_ready("lmtp.test"))
    return conn


def test_lhlo_is_a_command_of_its_own() -> None:
    command = parse_command(b"lhlo client.test")
    assert command == Lhlo("client.test")
    assert command != parse_command(b"EHLO client.test")
    assert Lhlo("x").to_bytes() == b"LHLO x\r\n"


def test_lmtp_takes_lhlo_only_and_smtp_never() -> None:
    conn = greeted()
    conn.data_to_send()
    conn.receive_data(b"EHLO c\r\nHELO c\r\nLHLO c\r\n")
    for verb in ("EHLO", "HELO"):
        with pytest.raises(RemoteProtocolError) as refused:
            conn.next_event()
        assert str(refused.value.reply) == f"500 5.5.1 Command unrecognized: {verb}"
        conn.send(refused.value.reply)
    assert conn.next_event() == Lhlo("c")
    conn.send(replies.ehlo_ok("lmtp.test", "hi", EXTENSIONS))
    assert conn.extensions.chunking and conn.helo == Lhlo("c")
    smtp = greeted(Limits())
    smtp.receive_data(b"LHLO c\r\n")
    with pytest.raises(RemoteProtocolError) as refused:
        smtp.next_event()
    assert refused.value.reply.code == 500


def run_to_end_of_content(conn: ServerConnection, data: bytes) -> list[object]:
    """Feed ``data``: accept LHLO, MAIL, DATA and chunks; refuse RCPTs to nobody@."""
    conn.receive_data(data)
    events: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, (EndOfData, RemoteProtocolError)) or (
            isinstance(event, EndOfChunk) and event.last
        ):
            break
        if isinstance(event, Lhlo):
            conn.send(replies.ehlo_ok("lmtp.test", "hi", EXTENSIONS))
        elif isinstance(event, Rcpt):
            bad = event.recipient.local_part == "nobody"
            conn.send(replies.mailbox_unavailable() if bad else replies.recipient_ok())
        elif isinstance(event, Data):
            conn.send(replies.start_mail_input())
        elif isinstance(event, EndOfChunk):
            conn.send(replies.chunk_ok(1))
        elif not isinstance(event, DataChunk | Bdat):  # a chunk is answered at its end
            conn.send(replies.ok())
    return events


ENVELOPE = (
    b"LHLO c\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<nobody@y.test>\r\n"
    b"RCPT TO:<b@y.test>\r\n"
)


@pytest.mark.parametrize("content", [b"DATA\r\nhi\r\n.\r\n", b"BDAT 4 LAST\r\nhi\r\n"])
def test_the_server_owes_one_reply_per_accepted_recipient(content: bytes) -> None:
    conn = greeted()
    events = run_to_end_of_content(conn, ENVELOPE + content)
    assert isinstance(events[-1], EndOfData | EndOfChunk)
    assert conn.replies_owed == 2
    conn.send(Reply.of(250, "<a@y.test> Saved", "2.0.0"))
    assert conn.replies_owed == 1 and conn.state is not State.READY
    conn.send(Reply.of(452, "<b@y.test> Mailbox full", "4.2.2"))
    assert conn.replies_owed == 0 and conn.state is State.READY
    with pytest.raises(LocalProtocolError):
        conn.send(replies.ok())
    wire = parse_replies(conn.data_to_send())
    assert [str(r) for r in wire[-2:]] == [
        "250 2.0.0 <a@y.test> Saved",
        "452 4.2.2 <b@y.test> Mailbox full",
    ]
    conn.receive_data(b"MAIL FROM:<s@x.test>\r\n")  # the next transaction
    assert isinstance(conn.next_event(), Mail)


def test_content_refused_by_the_core_is_refused_for_each_recipient() -> None:
    conn = greeted()
    big = b"x" * 200 + b"\r\n"
    with pytest.raises(RemoteProtocolError) as refused:
        run_to_end_of_content(conn, ENVELOPE + b"DATA\r\n" + big + b".\r\n")
    assert refused.value.reply.code == 552
    assert conn.replies_owed == 2
    conn.send(refused.value.reply)
    conn.send(refused.value.reply)
    assert conn.state is State.READY and conn.replies_owed == 0


def test_a_421_ends_the_session_at_once() -> None:
    conn = greeted()
    run_to_end_of_content(conn, ENVELOPE + b"DATA\r\nhi\r\n.\r\n")
    conn.send(replies.shutting_down())
    assert conn.state is State.CLOSED


def client_session(lmtp: bool = True) -> ClientConnection:
    client = ClientConnection(lmtp=lmtp)
    client.receive_data(b"220 lmtp.test ready\r\n")
    assert isinstance(client.next_event(), Response)
    client.send(Lhlo("c"))
    client.receive_data(b"250-lmtp.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
    response = client.next_event()
    assert isinstance(response, Response) and response.reply.code == 250
    assert client.extensions.pipelining and client.extensions.chunking
    return client


def test_the_client_reads_one_reply_per_accepted_recipient() -> None:
    client = client_session()
    client.send(Mail(Sender.parse("<s@x.test>")))
    for name in ("a", "nobody", "b"):
        client.send(Rcpt(Address(name, "y.test")))
    client.send(Bdat(4, last=True))
    client.send(DataChunk(b"hi\r\n"))
    client.receive_data(
        b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n"
        b"250 2.0.0 <a@y.test> Saved\r\n451 4.3.0 <b@y.test> Try later\r\n"
    )
    codes = []
    while isinstance(event := client.next_event(), Response):
        codes.append((type(event.command).__name__, event.reply.code))
    assert codes == [
        ("Mail", 250),
        ("Rcpt", 250),
        ("Rcpt", 550),
        ("Rcpt", 250),
        ("Bdat", 250),
        ("Bdat", 451),
    ]
    assert client.state is State.READY and client.pending == 0


def test_an_smtp_client_takes_one_final_reply() -> None:
    client = client_session(lmtp=False)
    client.send(Mail(Sender.parse("<s@x.test>")))
    client.send(Rcpt(Address("a", "y.test")))
    client.send(Rcpt(Address("b", "y.test")))
    client.send(Data())
    client.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(4):
        assert isinstance(client.next_event(), Response)
    client.send(DataChunk(b"hi\r\n"))
    client.send(EndOfData())
    client.receive_data(b"250 queued\r\n")
    assert isinstance(client.next_event(), Response)
    assert client.state is State.READY and client.pending == 0


def test_both_ends_agree() -> None:
    """A pipelined LMTP client against the server core, in memory."""
    server = greeted()
    client = ClientConnection(lmtp=True)

    def pump() -> list[Response]:
        client.receive_data(server.data_to_send())
        out = []
        while isinstance(event := client.next_event(), Response):
            out.append(event)
        return out

    pump()
    client.send(Lhlo("c"))
    client.send(Mail(Sender.parse("<s@x.test>")))
    for name in ("a", "nobody", "b"):
        client.send(Rcpt(Address(name, "y.test")))
    client.send(Data())
    run_to_end_of_content(server, client.data_to_send())
    assert [r.reply.code for r in pump()] == [250, 250, 250, 550, 250, 354]
    client.send(DataChunk(b"hello\r\n"))
    client.send(EndOfData())
    events = run_to_end_of_content(server, client.data_to_send())
    assert isinstance(events[-1], EndOfData)
    for name in ("a", "b"):
        server.send(Reply.of(250, f"<{name}@y.test> Saved", "2.0.0"))
    finals = pump()
    assert [r.reply.text for r in finals] == ["<a@y.test> Saved", "<b@y.test> Saved"]
    assert client.state is State.READY is server.state
