"""The milter wire format (sans-I/O) and the message changes, without a milter."""

from __future__ import annotations

import struct

import pytest

from smtpx.mta.milter import edit
from smtpx.mta.milter import protocol as wire
from smtpx.mta.milter.protocol import Act, MilterProtocolError, Modification, Proto, Verdict
from tests.mta.milter.fake import reply


def split(packet: bytes) -> tuple[bytes, bytes]:
    (length,) = struct.unpack(">I", packet[:4])
    assert length == len(packet) - 4
    return packet[4:5], packet[5:]


def test_commands_are_framed_with_their_length() -> None:
    assert wire.command(b"T") == b"\0\0\0\x01T"
    assert split(wire.optneg()) == (b"O", struct.pack(">III", 6, 0x1FF, 0x1FF7FF))
    assert split(wire.strings(b"H", "client.test")) == (b"H", b"client.test\0")
    mail = wire.strings(b"M", "<a@b.test>", "SIZE=10", "BODY=8BITMIME")
    assert split(mail) == (b"M", b"<a@b.test>\0SIZE=10\0BODY=8BITMIME\0")
    header = wire.strings(b"L", "Subject", "hi")
    assert split(header) == (b"L", b"Subject\0hi\0")
    for code in (b"N", b"E", b"A", b"Q"):
        assert split(wire.command(code)) == (code, b"")


def test_connect_carries_the_family_port_and_address() -> None:
    assert split(wire.connect("unknown", ("192.0.2.1", 25))) == (
        b"C",
        b"unknown\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.1\0",
    )
    assert split(wire.connect("h", ("2001:db8::1", 2525)))[1] == (
        b"h\0" + b"6" + struct.pack(">H", 2525) + b"2001:db8::1\0"
    )
    assert split(wire.connect("h", None)) == (b"C", b"h\0U")


def test_macros_name_their_command() -> None:
    packet = wire.macros(b"R", {"i": "ID1", "{rcpt_addr}": "u@x.test"})
    assert split(packet) == (b"D", b"Ri\0ID1\0{rcpt_addr}\0u@x.test\0")


def test_the_body_goes_in_chunks_of_at_most_65535_octets() -> None:
    parts = [b"a" * 70000, b"b" * 65535, b"c" * 10]
    packets = [split(p) for p in wire.body_chunks(parts)]
    assert [code for code, _ in packets] == [b"B"] * 3
    assert [len(data) for _, data in packets] == [65535, 65535, 70000 + 65535 + 10 - 2 * 65535]
    assert b"".join(data for _, data in packets) == b"".join(parts)
    assert list(wire.body_chunks([b""])) == []


def test_the_decoder_reassembles_packets_split_anywhere() -> None:
    stream = wire.command(b"c") + reply(b"h", "X-A", "1") + wire.command(b"a")
    decoder = wire.Decoder()
    got = [packet for octet in stream for packet in decoder.feed(bytes([octet]))]
    assert got == [(b"c", b""), (b"h", b"X-A\x001\x00"), (b"a", b"")]
    with pytest.raises(MilterProtocolError):
        wire.Decoder().feed(b"\0\0\0\0")
    with pytest.raises(MilterProtocolError):
        wire.Decoder().feed(struct.pack(">I", 1 << 24) + b"x")


def test_negotiation_reads_the_subset_and_the_macros() -> None:
    data = struct.pack(">III", 6, Act.ADDHDRS | Act.CHGBODY, Proto.NOHELO | Proto.NR_RCPT)
    data += struct.pack(">I", 3) + b"{rcpt_addr} i\0" + struct.pack(">I", 5) + b"j\0"
    got = wire.parse_optneg(b"O", data)
    assert (got.version, got.actions) == (6, Act.ADDHDRS | Act.CHGBODY)
    assert not got.sends("helo") and got.sends("mail") and got.sends("eom")
    assert not got.replies("rcpt") and got.replies("mail")
    assert got.macros_at("rcpt") == ("{rcpt_addr}", "i")
    assert got.macros_at("eom") == ("j",)
    assert got.macros_at("connect") == wire.DEFAULT_MACROS[0]  # not asked: the defaults
    assert got.macros_at("header") == ()


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">III", 6, 0x200, 0),  # an action nobody offered
        struct.pack(">III", 6, 0, Proto.RCPT_REJ),  # a step smtpx does not offer
        struct.pack(">III", 1, 0, 0),  # too old
        b"short",
    ],
)
def test_negotiation_refuses_what_was_not_offered(data: bytes) -> None:
    with pytest.raises(MilterProtocolError):
        wire.parse_optneg(b"O", data)
    with pytest.raises(MilterProtocolError):
        wire.parse_optneg(b"c", struct.pack(">III", 6, 0, 0))


def test_every_reply_parses() -> None:
    verdicts = {b"c": Verdict.CONTINUE, b"a": Verdict.ACCEPT, b"r": Verdict.REJECT}
    verdicts |= {b"t": Verdict.TEMPFAIL, b"d": Verdict.DISCARD, b"f": Verdict.CONN_FAIL}
    verdicts |= {b"4": Verdict.SHUTDOWN, b"s": Verdict.SKIP}
    for code, verdict in verdicts.items():
        assert wire.parse_reply(code, b"") is verdict
    assert wire.parse_reply(b"p", b"") is None
    assert wire.parse_reply(b"y", b"554 5.7.1 Spam\0") == "554 5.7.1 Spam"
    assert wire.parse_reply(b"q", b"held\0") == Modification(b"q", ("held",))
    assert wire.parse_reply(b"h", b"X-A\0v\0") == Modification(b"h", ("X-A", "v"))
    assert wire.parse_reply(*split(reply(b"i", "X-B", "w", index=0))) == Modification(
        b"i", ("X-B", "w"), index=0
    )
    assert wire.parse_reply(*split(reply(b"m", "Subject", "", index=2))) == Modification(
        b"m", ("Subject", ""), index=2
    )
    assert wire.parse_reply(b"e", b"<n@x>\0SIZE=1\0") == Modification(b"e", ("<n@x>", "SIZE=1"))
    assert wire.parse_reply(b"+", b"<r@x>\0") == Modification(b"+", ("<r@x>",))
    assert wire.parse_reply(b"2", b"<r@x>\0NOTIFY=NEVER\0") == Modification(
        b"2", ("<r@x>", "NOTIFY=NEVER")
    )
    assert wire.parse_reply(b"-", b"<r@x>\0") == Modification(b"-", ("<r@x>",))
    assert wire.parse_reply(b"b", b"new body") == Modification(b"b", body=b"new body")


@pytest.mark.parametrize(
    ("code", "data"),
    [(b"y", b"250 fine\0"), (b"y", b"x\0"), (b"Z", b""), (b"h", b""), (b"m", b"\0\0")],
)
def test_broken_replies_are_protocol_errors(code: bytes, data: bytes) -> None:
    with pytest.raises(MilterProtocolError):
        wire.parse_reply(code, data)


HEAD = b"Received: from a\r\n\tby b;\r\nSubject: one\r\nX-Tag:  two\r\nsubject: again\r\n\r\n"


def test_header_fields_go_back_to_the_octet() -> None:
    fields = edit.parse_head(HEAD)
    assert fields[0] == ("Received", " from a\r\n\tby b;")
    assert edit.render_head(fields) + b"\r\n" == HEAD
    assert edit.to_milter(fields[0][1], leading_space=False) == "from a\n\tby b;"
    assert edit.to_milter(fields[2][1], leading_space=False) == " two"
    assert edit.to_milter(fields[2][1], leading_space=True) == "  two"


def test_header_changes_count_occurrences_and_insert_by_position() -> None:
    changes = [
        Modification(b"h", ("X-Added", "a\n\tfolded")),
        Modification(b"i", ("X-First", "top"), index=0),
        Modification(b"m", ("SUBJECT", "changed"), index=2),  # the second Subject
        Modification(b"m", ("X-Tag", ""), index=1),  # deleted
        Modification(b"m", ("X-Missing", "added"), index=1),
        Modification(b"m", ("X-Gone", ""), index=1),  # nothing to delete
    ]
    got = edit.render_head(edit.apply_headers(edit.parse_head(HEAD), changes, False))
    assert got == (
        b"X-First: top\r\nReceived: from a\r\n\tby b;\r\nSubject: one\r\nsubject: changed\r\n"
        b"X-Added: a\r\n\tfolded\r\nX-Missing: added\r\n"
    )
    spaced = edit.apply_headers([], [Modification(b"h", ("X", " v"))], leading_space=True)
    assert edit.render_head(spaced) == b"X: v\r\n"
    assert edit.crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
