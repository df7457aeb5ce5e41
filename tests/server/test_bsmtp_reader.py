"""BSMTP reading (F122), round-tripped with the writer (F73)."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.client import bsmtp_bytes
from smtpx.envelope import Envelope
from smtpx.protocol import MailParams, Reply
from smtpx.server.bsmtp import read_bsmtp


def envelope(n: int, body: bytes = b"") -> Envelope:
    return Envelope.create(
        sender=f"s{n}@example.com",
        recipients=[f"r{n}@example.org", "x@example.org"],
        message=body or f"Subject: {n}\r\n\r\n.dot line {n}\r\n".encode(),
    )


def test_round_trip_of_several_envelopes() -> None:
    sent = [envelope(i) for i in range(3)]
    got = [item for item in read_bsmtp(bsmtp_bytes(sent)) if isinstance(item, Envelope)]
    assert len(got) == 3
    assert [g.info for g in got] == [s.info for s in sent]  # equality ignores the ids
    assert [g.message for g in got] == [s.message for s in sent]


def test_parameters_are_accepted_after_helo() -> None:
    sent = Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org"],
        message=b"Subject: p\r\n\r\n\xc3\xa9\r\n",
        sender_args=MailParams(size=20, body="8BITMIME"),
    )
    (got,) = read_bsmtp(bsmtp_bytes([sent]))
    assert isinstance(got, Envelope)
    assert got.info.sender_args == MailParams(size=20, body="8BITMIME")


def test_refusals_come_out_as_replies_in_order() -> None:
    transcript = (
        b"HELO bsmtp\r\n"
        b"RCPT TO:<early@example.org>\r\n"
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: ok\r\n\r\n.\r\n"
        b"BOGUS\r\n"
    )
    items = list(read_bsmtp(io.BytesIO(transcript), chunk_size=7))
    assert [type(i).__name__ for i in items] == ["Reply", "Envelope", "Reply"]
    first, _, last = items
    assert isinstance(first, Reply) and first.code == 503
    assert isinstance(last, Reply) and last.code == 500


def test_bdat_in_bsmtp() -> None:
    transcript = (
        b"EHLO bsmtp\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
        b"BDAT 3\r\nabcBDAT 2 LAST\r\nde"
    )
    (got,) = read_bsmtp(transcript)
    assert isinstance(got, Envelope) and got.message == b"abcde"


@given(
    st.lists(
        st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
        max_size=4,
    )
)
@settings(max_examples=50)
def test_any_bodies_round_trip(bodies: list[bytes]) -> None:
    sent = [envelope(i, b"Subject: h\r\n\r\n" + body + b"\r\n") for i, body in enumerate(bodies)]
    got = list(read_bsmtp(bsmtp_bytes(sent)))
    assert [g.message for g in got if isinstance(g, Envelope)] == [s.message for s in sent]
