"""The BSMTP writer (F73): exact output, dot-stuffing, and a round trip through the server core."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpx.client.bsmtp import bsmtp_bytes, write_bsmtp
from smtpx.envelope import Envelope
from smtpx.errors import RemoteProtocolError
from smtpx.protocol import NEED_DATA, PAUSED, ConnectionClosed, Reply, ServerConnection
from smtpx.protocol.replies import parse_replies
from smtpx.testing import Handler, ReceivedMessage


def envelope(
    message: bytes,
    *,
    sender: str = "alice@example.org",
    recipients: tuple[str, ...] = ("bob@example.org",),
    sender_args: str = "",
) -> Envelope:
    return Envelope.create(
        sender=sender, recipients=recipients, message=message, sender_args=sender_args
    )


# --- exact output ----------------------------------------------------------------------


def test_one_envelope_exactly() -> None:
    env = envelope(
        b"Subject: hi\r\n\r\nHello\r\n",
        recipients=("bob@example.org", "carol@example.net"),
        sender_args="BODY=8BITMIME",
    )
    assert bsmtp_bytes([env]) == (
        b"HELO bsmtp\r\n"
        b"MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n"
        b"RCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<carol@example.net>\r\n"
        b"DATA\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Hello\r\n"
        b".\r\n"
        b"RSET\r\n"
    )


def test_lines_starting_with_a_dot_are_stuffed() -> None:
    # A lone "." line would end the message early; ".x" would lose its dot.
    env = envelope(b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nmid.dle\r\n.")
    assert bsmtp_bytes([env], prelude=False) == (
        b"MAIL FROM:<alice@example.org>\r\n"
        b"RCPT TO:<bob@example.org>\r\n"
        b"DATA\r\n"
        b"Subject: dots\r\n"
        b"\r\n"
        b"..\r\n"
        b"...two\r\n"
        b"..leading\r\n"
        b"mid.dle\r\n"
        b"..\r\n"  # the last line lacked its CRLF: it gets one before the terminator
        b".\r\n"
        b"RSET\r\n"
    )


def test_bare_line_feeds_become_crlf() -> None:
    env = Envelope(info=envelope(b"").info, message=b"Subject: lf\n\nbody\n.dot\n")
    assert b"DATA\r\nSubject: lf\r\n\r\nbody\r\n..dot\r\n.\r\nRSET\r\n" in bsmtp_bytes([env])


def test_an_empty_message_is_just_the_terminator() -> None:
    assert bsmtp_bytes([envelope(b"")], prelude=False).endswith(b"DATA\r\n.\r\nRSET\r\n")


def test_several_envelopes_share_one_helo_and_have_no_quit() -> None:
    envs = [
        envelope(b"one\r\n", sender="a@example.org", recipients=("x@example.org",)),
        envelope(b"two\r\n", sender="<>", recipients=("y@example.org", "z@example.org")),
        envelope(b"three\r\n", sender="b@example.org", recipients=("x@example.org",)),
    ]
    assert bsmtp_bytes(envs, helo="batch.example.org") == (
        b"HELO batch.example.org\r\n"
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.org>\r\nDATA\r\none\r\n.\r\nRSET\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<y@example.org>\r\nRCPT TO:<z@example.org>\r\n"
        b"DATA\r\ntwo\r\n.\r\nRSET\r\n"
        b"MAIL FROM:<b@example.org>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nthree\r\n.\r\nRSET\r\n"
    )
    assert b"QUIT" not in bsmtp_bytes(envs)


def test_prelude_off_leaves_out_helo() -> None:
    env = envelope(b"x\r\n")
    with_prelude = bsmtp_bytes([env])
    without = bsmtp_bytes([env], prelude=False)
    assert with_prelude == b"HELO bsmtp\r\n" + without
    assert without.startswith(b"MAIL FROM:")
    assert bsmtp_bytes([], prelude=False) == b""
    assert bsmtp_bytes([]) == b"HELO bsmtp\r\n"


def test_utf8_addresses_are_written_as_they_are() -> None:
    env = envelope(b"x\r\n", sender="jörg@bücher.example", sender_args="SMTPUTF8")
    assert "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n".encode() in bsmtp_bytes([env])


def test_write_bsmtp_to_any_writer_from_a_lazy_iterator() -> None:
    class Chunks:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        def write(self, data: bytes, /) -> None:
            self.chunks.append(data)

    def envelopes() -> Iterator[Envelope]:
        for i in range(3):
            yield envelope(f"message {i}\r\n".encode())

    writer = Chunks()
    write_bsmtp(writer, envelopes())
    assert len(writer.chunks) == 4  # HELO, then one write per envelope
    file = io.BytesIO()
    write_bsmtp(file, envelopes())
    assert file.getvalue() == b"".join(writer.chunks) == bsmtp_bytes(envelopes())


def test_only_envelopes_are_written() -> None:
    with pytest.raises(TypeError, match="Envelope"):
        bsmtp_bytes([b"MAIL FROM:<evil@example.org>\r\n"])  # type: ignore[list-item]


# --- round trip through the server core ------------------------------------------------


def read_bsmtp(data: bytes, *, piece: int | None = None) -> tuple[Handler, list[Reply]]:
    """Run a ServerConnection with a Handler over ``data`` (in ``piece``-octet bits),
    as a BSMTP reader would: every reply is produced, none is read by the writer."""
    handler = Handler()
    conn = ServerConnection()
    conn.send(handler.greeting)
    out = [conn.data_to_send()]
    step = piece or max(1, len(data))
    chunks = [data[i : i + step] for i in range(0, len(data), step)] + [b""]
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                conn.send(handler.protocol_error(exc))
                continue
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            assert event is not PAUSED, "the handler left an event unanswered"
            reply = handler.handle(event)
            if reply is not None:
                conn.send(reply)
        out.append(conn.data_to_send())
    return handler, parse_replies(b"".join(out))


def received(handler: Handler) -> list[tuple[str, list[str], bytes]]:
    def one(message: ReceivedMessage) -> tuple[str, list[str], bytes]:
        return (
            message.mail.sender.path(),
            [rcpt.recipient.path() for rcpt in message.recipients],
            message.data,
        )

    return [one(m) for m in handler.messages]


def sent(envelopes: list[Envelope]) -> list[tuple[str, list[str], bytes]]:
    return [
        (env.sender.path(), [r.path() for r in env.recipients], env.message) for env in envelopes
    ]


ROUND_TRIP = [
    envelope(
        b"From: alice@example.org\r\nSubject: one\r\n\r\nHello\r\n.\r\n..\r\n.end\r\n",
        recipients=("bob@example.org", "carol@example.net"),
    ),
    envelope(b"Subject: bounce\r\n\r\nnull sender\r\n", sender="<>"),
    envelope(b"Subject: empty body\r\n\r\n", recipients=("postmaster@example.org",)),
]


@pytest.mark.parametrize("piece", [None, 1, 7, 64])
def test_round_trip_through_the_server_core(piece: int | None) -> None:
    handler, got = read_bsmtp(bsmtp_bytes(ROUND_TRIP), piece=piece)
    assert not handler.errors
    assert received(handler) == sent(ROUND_TRIP)
    codes = [reply.code for reply in got]
    # greeting, HELO, then per envelope MAIL, RCPT..., DATA, end of data, RSET.
    assert codes[:2] == [220, 250]
    assert codes.count(354) == len(ROUND_TRIP)
    assert all(code < 400 for code in codes)
    assert len(codes) == 2 + sum(4 + len(env.recipients) for env in ROUND_TRIP)


def test_round_trip_of_batches_written_apart() -> None:
    first, rest = ROUND_TRIP[0], ROUND_TRIP[1:]
    data = bsmtp_bytes([first]) + bsmtp_bytes(rest, prelude=False)
    handler, _ = read_bsmtp(data)
    assert received(handler) == sent(ROUND_TRIP)


# Dots weigh heavily: lines of only dots, dots first, dots after a stuffed dot.
_LINE = st.text(alphabet="...abc :\t-é", max_size=40).map(lambda s: s.encode("utf-8"))


@given(st.lists(st.lists(_LINE, max_size=8), min_size=1, max_size=4))
def test_any_bodies_round_trip(bodies: list[list[bytes]]) -> None:
    envs = [envelope(b"".join(line + b"\r\n" for line in lines)) for lines in bodies]
    handler, _ = read_bsmtp(bsmtp_bytes(envs))
    assert not handler.errors
    assert [m.data for m in handler.messages] == [env.message for env in envs]
