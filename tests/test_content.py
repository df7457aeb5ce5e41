"""Spilled message content: a file and a head, read a chunk at a time, never copied."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpx.content import _EMPTY, Spill, SpillClosed, SpilledMessage
from smtpx.envelope import Envelope, EnvelopeInfo
from smtpx.protocol.data import dot_stuff

LINES = st.lists(
    st.sampled_from([b"", b".", b"..dot", b"text", b"x" * 300, b"From: a@b.example"]),
    max_size=40,
).map(lambda lines: b"".join(line + b"\r\n" for line in lines))


@pytest.fixture
def spill() -> Iterator[Spill]:
    buffer = Spill(threshold=16)
    yield buffer
    buffer.close()


def test_small_content_stays_in_memory(spill: Spill) -> None:
    spill.add(b"0123456789")
    assert not spill.spilled and spill.in_memory == 10
    assert spill.result() == b"0123456789"


def test_content_past_the_threshold_goes_to_a_file(spill: Spill) -> None:
    spill.add(b"0123456789")
    spill.add(b"abcdefghij")
    assert spill.spilled and spill.in_memory == 0 and spill.size == 20
    result = spill.result()
    assert isinstance(result, SpilledMessage)
    assert result.read() == b"0123456789abcdefghij" and len(result) == 20


def test_a_forced_spill_goes_to_a_file_at_once(spill: Spill) -> None:
    spill.add(b"ab", force_spill=True)
    assert spill.spilled and spill.result() == b"ab"


def test_the_file_has_no_name_and_close_frees_it() -> None:
    before = len(os.listdir("/proc/self/fd"))
    buffer = Spill(threshold=0)
    buffer.add(b"x" * 100)
    assert len(os.listdir("/proc/self/fd")) == before + 1
    buffer.close()
    assert len(os.listdir("/proc/self/fd")) == before


@given(LINES, LINES, st.integers(1, 64))
def test_wire_chunks_are_the_stored_form(head: bytes, body: bytes, chunk: int) -> None:
    buffer = Spill(threshold=0)
    try:
        for start in range(0, len(body), chunk):
            buffer.add(body[start : start + chunk])
        content = buffer.result()
        assert isinstance(content, SpilledMessage) or not body
        spilled = content if isinstance(content, SpilledMessage) else SpilledMessage(_EMPTY, 0)
        message = spilled.prepend(head)
        assert message.read() == head + body
        assert b"".join(message.wire_chunks()) == dot_stuff(head + body)[:-3]
        assert message.skip(len(head)).read() == body
    finally:
        buffer.close()


def spilled_envelope(message: bytes) -> tuple[Envelope, Spill]:
    buffer = Spill(threshold=0)
    buffer.add(message)
    info = EnvelopeInfo.create(sender="a@example.com", recipients=["b@example.org"])
    return Envelope(info=info, content=buffer.result()), buffer


def test_an_envelope_reads_a_spilled_message_only_when_asked() -> None:
    text = b"Subject: big\r\nX-A: 1\r\n\r\n" + b"body line\r\n" * 1000
    envelope, buffer = spilled_envelope(text)
    try:
        assert envelope.size == len(text)
        assert envelope.last_header("Subject") == "big"
        assert envelope.start().endswith(b"\r\n\r\n")  # the header block only
        assert envelope.message == text
        traced = envelope.add_header("Received", "from somewhere")
        assert isinstance(traced.content, SpilledMessage)
        assert traced.content.file is buffer.result().file  # type: ignore[union-attr]
        assert traced.message.startswith(b"Received: from somewhere\r\nSubject: big\r\n")
        assert traced.message.endswith(text[len(b"Subject: big\r\nX-A: 1\r\n") :])
        assert b"".join(traced.chunks()) == traced.message
        assert envelope == Envelope(info=envelope.info, message=text)
        kept = envelope.in_memory()
    finally:
        buffer.close()
    with pytest.raises(SpillClosed, match="in_memory"):
        _ = envelope.message
    assert kept.message == text


def test_an_envelope_takes_message_or_content_not_both() -> None:
    info = EnvelopeInfo.create(sender="<>", recipients=[])
    with pytest.raises(TypeError):
        Envelope(info=info)
    with pytest.raises(TypeError):
        Envelope(info=info, message=b"x", content=b"x")


def _spilled(data: bytes) -> tuple[SpilledMessage, Spill]:
    buffer = Spill(threshold=0)
    buffer.add(data)
    result = buffer.result()
    assert isinstance(result, SpilledMessage)
    return result, buffer


def test_a_spilled_wire_form_is_written_as_it_is_until_its_head_or_file_part_is_not() -> None:
    body = b"Subject: x\r\n\r\nline one.\r\nline two\r\n"
    message, buffer = _spilled(body)
    try:
        taken = message.as_wire_form()
        assert taken.wire_form and not message.wire_form
        stuffed = dot_stuff(body)[:-3]
        assert list(taken.wire_chunks()) == list(taken.chunks())  # no pass over them
        assert b"".join(taken.wire_chunks()) == stuffed
        clean = taken.prepend(b"Received: by us\r\n")
        assert clean.wire_form and list(clean.wire_chunks()) == list(clean.chunks())
        for head in (b".X: y\r\n", b"X: y\n", b"X: y"):  # a head that is not one: stuffed
            edited = taken.prepend(head)
            assert b"".join(edited.wire_chunks()) == dot_stuff(head + body)[:-3]
        cut = taken.skip(3)  # into the file: its part is no longer known to be one
        assert not cut.wire_form
        assert b"".join(cut.wire_chunks()) == dot_stuff(body[3:])[:-3]
    finally:
        buffer.close()
