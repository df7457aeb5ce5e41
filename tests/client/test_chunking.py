"""BDAT (RFC 3030 CHUNKING) from the client: when it is used, what goes on the wire, every
kind of body arriving the same as with DATA, refusals, BINARYMIME."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.client import (
    Accepted,
    Client,
    ClientConfig,
    RejectedAllRecipients,
    RejectedBody,
    RejectedSender,
    Unsendable,
    WireFile,
    connect,
)
from smtpx.client.chunking import wire_pieces
from smtpx.client.session import Body
from smtpx.client.status import EnvelopeStatus
from smtpx.envelope import Envelope, EnvelopeInfo
from smtpx.protocol import Extensions, Mail, MailParams, Rcpt, Reply, dot_stuff, dot_unstuff
from smtpx.testing import Handler, ScriptedServer
from tests.client.helpers import Run, in_memory

BODY = b"Subject: chunks\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n"
ENVELOPE = Envelope.create(sender="s@example.com", recipients=["r@example.org"], message=BODY)
CHUNKING = Extensions(pipelining=True, size=0, eightbitmime=True, chunking=True)
BINARY = Extensions(pipelining=True, eightbitmime=True, chunking=True, binarymime=True)
ALWAYS = ClientConfig.for_testing(chunking=True)
# Over the client's 256 KB piece: sent after the RCPT replies, not with them.
BIG = b"Subject: big\r\n\r\n" + b".dotted line\r\n" * 10 + (b"0123456789" * 99 + b"\r\n") * 400


def wire_file(tmp_path: Path, body: bytes, name: str = "wire") -> WireFile:
    path = tmp_path / name
    path.write_bytes(b"junk before" + dot_stuff(body)[:-3] + b"junk after")
    return WireFile(path, len(dot_stuff(body)) - 3, len(b"junk before"))


async def send(
    handler: Handler, *items: Envelope | tuple[EnvelopeInfo, object], config: ClientConfig = ALWAYS
) -> tuple[Run, list[EnvelopeStatus]]:
    statuses: list[EnvelopeStatus] = []

    async def use(client: Client) -> None:
        for item in items:
            if isinstance(item, Envelope):
                statuses.append(await client.send(item))
            else:
                statuses.append(await client.send_envelope(*item))  # type: ignore[arg-type]

    run = await in_memory(handler, use, config=config)
    assert run.error is None, run.error
    return run, statuses


# --- when BDAT is used -------------------------------------------------------------


async def test_small_message_goes_whole_with_its_commands() -> None:
    handler = Handler(extensions=CHUNKING)
    run, (status,) = await send(handler, ENVELOPE, config=ClientConfig.for_testing())
    assert isinstance(status, Accepted) and status.remote_id == "Ok: queued as MSG1"
    assert handler.messages[0].data == BODY
    lines = run.lines()
    mail = lines.index("C: MAIL FROM:<s@example.com> SIZE=55")
    # One flight: MAIL, RCPT, BDAT and the content, unstuffed, before any reply.
    assert lines[mail : mail + 7] == [
        "C: MAIL FROM:<s@example.com> SIZE=55",
        "C: RCPT TO:<r@example.org>",
        "C: BDAT 55 LAST",
        "C: Subject: chunks",
        "C:",
        "C: line one",
        "C: .leading dot",
    ]
    assert lines[mail + 8 : mail + 11] == [
        "S: 250 2.1.0 Ok",
        "S: 250 2.1.5 Ok",
        "S: 250 2.0.0 Ok: queued as MSG1",
    ]


@pytest.mark.parametrize(
    ("extensions", "config"),
    [
        (CHUNKING, ClientConfig.for_testing(chunking=False)),
        (Extensions(pipelining=True, eightbitmime=True), ALWAYS),
    ],
    ids=["turned-off", "not-offered"],
)
async def test_data_when_chunking_is_off_or_not_offered(
    extensions: Extensions, config: ClientConfig
) -> None:
    handler = Handler(extensions=extensions)
    run, (status,) = await send(handler, ENVELOPE, config=config)
    assert status.ok and handler.messages[0].data == BODY
    assert "C: DATA" in run.lines() and not any(x.startswith("C: BDAT") for x in run.lines())


async def test_large_wire_file_goes_with_data_under_auto(tmp_path: Path) -> None:
    wire = wire_file(tmp_path, BIG)
    small = wire_file(tmp_path, BODY, "small")
    handler = Handler(extensions=CHUNKING)
    run, statuses = await send(
        handler, (ENVELOPE.info, wire), (ENVELOPE.info, small), config=ClientConfig.for_testing()
    )
    assert all(s.ok for s in statuses)
    assert [m.data for m in handler.messages] == [BIG, BODY]
    verbs = [x[3:7] for x in run.lines() if x[3:7] in ("DATA", "BDAT")]
    assert verbs == ["DATA", "BDAT"]


async def test_large_bytes_wait_for_the_rcpt_replies() -> None:
    handler = Handler(extensions=CHUNKING)
    envelope = Envelope.create(sender="s@example.com", recipients=["r@example.org"], message=BIG)
    run, (status,) = await send(handler, envelope)
    assert status.ok and handler.messages[0].data == BIG
    lines = run.lines()
    bdat = lines.index(f"C: BDAT {len(BIG)} LAST")
    assert lines[bdat - 2 : bdat] == ["S: 250 2.1.0 Ok", "S: 250 2.1.5 Ok"]


async def test_without_pipelining_each_chunk_waits_for_its_reply() -> None:
    handler = Handler(extensions=Extensions(eightbitmime=True, chunking=True))

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 200_000 + b"\r\n"

    run, (status,) = await send(handler, (ENVELOPE.info, pieces()))
    assert status.ok and handler.messages[0].data == (b"x" * 200_000 + b"\r\n") * 3
    said = [x for x in run.lines() if x.startswith(("C: BDAT", "S: 250 2.0.0"))]
    assert said == [
        "C: BDAT 400004",
        "S: 250 2.0.0 Ok: 400004 octets received",
        "C: BDAT 200002 LAST",
        "S: 250 2.0.0 Ok: queued as MSG1",
    ]


# --- every body arrives as with DATA --------------------------------------------------


async def test_every_kind_of_body_arrives_as_with_data(tmp_path: Path) -> None:
    sloppy = b"Subject: sloppy\n\nbare LF\nbare CR\r.dot\r\nno final CRLF"
    expected = b"Subject: sloppy\r\n\r\nbare LF\r\nbare CR\r\n.dot\r\nno final CRLF\r\n"
    dotted = b"Subject: dots\r\n\r\n" + b".line\r\n" * 100_000  # doubled dots everywhere
    raw = tmp_path / "raw.eml"
    raw.write_bytes(BIG)

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 7001):
            yield data[i : i + 7001]

    cases: list[tuple[Body, bytes]] = [
        (BODY, BODY),
        (sloppy, expected),
        (BIG, BIG),
        (io.BytesIO(BIG), BIG),
        (raw, BIG),
        (chunks(sloppy), expected),
        (chunks(BIG), BIG),
        (wire_file(tmp_path, BODY, "w1"), BODY),
        (wire_file(tmp_path, BIG, "w2"), BIG),
        (wire_file(tmp_path, dotted, "w3"), dotted),
        (wire_file(tmp_path, b"", "w4"), b""),
        (b"", b""),
    ]
    async with (
        ScriptedServer(lambda: Handler(extensions=CHUNKING)) as server,
        connect("127.0.0.1", server.port, config=ALWAYS) as client,
    ):
        for body, _ in cases:
            status = await client.send_envelope(ENVELOPE.info, body)
            assert status.ok, status
        async for status in client.send_many((ENVELOPE.info, b) for b, _ in cases[:3]):
            assert status.ok, status
    (handler,) = server.handlers
    assert [m.data for m in handler.messages] == [e for _, e in cases] + [BODY, expected, BIG]


@given(
    st.lists(st.sampled_from([b"a", b".", b"..", b"\r\n", b"x" * 9, b"\r", b"\n"]), max_size=60),
    st.integers(2, 40),
    st.integers(0, 3),
)
@settings(max_examples=300)
def test_wire_pieces_are_the_unstuffed_content(parts: list[bytes], window: int, lead: int) -> None:
    body = b"".join(parts)
    wire = b"#" * lead + dot_stuff(body)[:-3]
    out = []
    position = lead
    for first, last, data in wire_pieces(wire, lead, len(wire), window=window):
        assert first == position and last > first
        position = last
        out.append(wire[first:last] if data is None else data)
    assert position == len(wire) or (not out and lead == len(wire))
    assert b"".join(out) == dot_unstuff(wire[lead:])


# --- refusals ------------------------------------------------------------------------


class Picky(Handler):
    def mail(self, command: Mail) -> Reply:
        if str(command.sender) == "<refused@example.com>":
            return Reply.of(550, "not you", "5.7.1")
        return super().mail(command)

    def rcpt(self, command: Rcpt) -> Reply:
        if str(command.recipient).startswith("nobody"):
            return Reply.of(550, "no such user", "5.1.1")
        return super().rcpt(command)

    def end_of_data(self) -> Reply:
        if b"spam" in b"".join(self._data):
            return Reply.of(554, "spam", "5.7.1")
        return super().end_of_data()


def envelope(
    sender: str = "s@example.com", rcpt: str = "r@example.org", body: bytes = BODY
) -> Envelope:
    return Envelope.create(sender=sender, recipients=[rcpt], message=body)


@pytest.mark.parametrize("body", [BODY, BIG], ids=["inline", "after-rcpt"])
@pytest.mark.parametrize("many", [False, True], ids=["send", "send_many"])
async def test_refusals_are_outcomes_and_the_next_message_goes(body: bytes, many: bool) -> None:
    batch = [
        envelope(sender="refused@example.com", body=body),
        envelope(rcpt="nobody@example.org", body=body),
        envelope(body=body + b"spam\r\n"),
        envelope(body=body),
    ]
    handler = Picky(extensions=CHUNKING)
    statuses: list[EnvelopeStatus] = []

    async def use(client: Client) -> None:
        if many:
            statuses.extend([s async for s in client.send_many(batch)])
        else:
            statuses.extend([await client.send(e) for e in batch])

    run = await in_memory(handler, use, config=ALWAYS)
    assert run.error is None, run.error
    assert [type(s) for s in statuses] == [
        RejectedSender,
        RejectedAllRecipients,
        RejectedBody,
        Accepted,
    ]
    assert statuses[2].reply.code == 554
    assert [m.data for m in handler.messages] == [body]
    # The RCPT after a refused MAIL and a chunk after refusals are refused, as they should
    # be; MAIL never is: RSET went first where a transaction was left open.
    assert not [e for e in handler.errors if "MAIL" in str(e)]


async def test_a_refused_chunk_ends_the_message_and_rset_follows() -> None:
    class RefusesSecondChunk(Handler):
        def end_of_chunk(self, last: bool) -> Reply:
            if sum(map(len, self._data)) > 300_000:
                return Reply.of(552, "too much", "5.3.4")
            return super().end_of_chunk(last)

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 200_000 + b"\r\n"

    for extensions in (CHUNKING, Extensions(eightbitmime=True, chunking=True)):
        handler = RefusesSecondChunk(extensions=extensions)
        run, statuses = await send(handler, (ENVELOPE.info, pieces()), ENVELOPE)
        assert isinstance(statuses[0], RejectedBody) and statuses[0].reply.code == 552
        assert isinstance(statuses[1], Accepted)
        assert [m.data for m in handler.messages] == [BODY]
        assert "C: RSET" in run.lines()
        if not extensions.pipelining:  # lockstep: nothing sent after the refusal
            assert not any(x.startswith("C: BDAT 200002") for x in run.lines())


# --- BINARYMIME ----------------------------------------------------------------------

BINARY_BODY = b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01bare\nCR\r" + b"z" * 2000


def binary_info() -> EnvelopeInfo:
    return EnvelopeInfo.create(
        sender="s@example.com",
        recipients=["r@example.org"],
        sender_args=MailParams(body="BINARYMIME"),
    )


async def test_binarymime_goes_byte_for_byte_with_bdat() -> None:
    handler = Handler(extensions=BINARY)
    run, (status,) = await send(
        handler, (binary_info(), BINARY_BODY), config=ClientConfig.for_testing()
    )
    assert status.ok
    assert handler.messages[0].data == BINARY_BODY
    assert handler.messages[0].mail.params.body == "BINARYMIME"
    assert "C: MAIL FROM:<s@example.com> BODY=BINARYMIME" in run.lines()


@pytest.mark.parametrize(
    ("extensions", "config"),
    [
        (CHUNKING, ALWAYS),  # no BINARYMIME offered
        (BINARY, ClientConfig.for_testing(chunking=False)),  # chunking turned off
    ],
    ids=["not-offered", "turned-off"],
)
async def test_binary_content_is_unsendable_without_binarymime(
    extensions: Extensions, config: ClientConfig
) -> None:
    handler = Handler(extensions=extensions)
    clean = b"Subject: fits\r\n\r\n\xc3\xa9\r\n"
    _, (binary, fits) = await send(
        handler, (binary_info(), BINARY_BODY), (binary_info(), clean), config=config
    )
    assert isinstance(binary, Unsendable)
    assert binary.reply.code == 554 and str(binary.reply.enhanced) == "5.6.3"
    # Declared binary, but 8bit-clean: it goes unchanged, as 8BITMIME.
    assert fits.ok
    assert [m.data for m in handler.messages] == [clean]
    assert handler.messages[0].mail.params.body == "8BITMIME"


async def test_a_wire_file_with_the_message_size_announced(tmp_path: Path) -> None:
    """``size`` is the SIZE to announce (the message's); the wire file's own octets, with
    their doubled dots, are what is read."""
    wire = wire_file(tmp_path, BODY)
    handler = Handler(extensions=CHUNKING)

    async def use(client: Client) -> None:
        assert (await client.send_envelope(ENVELOPE.info, wire, size=len(BODY))).ok

    run = await in_memory(handler, use, config=ALWAYS)
    assert run.error is None, run.error
    assert handler.messages[0].data == BODY
    assert f"C: MAIL FROM:<s@example.com> SIZE={len(BODY)}" in run.lines()
