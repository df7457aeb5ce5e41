"""DATA framing: dot-stuffing both ways, the terminator, bare CR/LF, limits."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.protocol.data import (
    BareNewlines,
    DataReader,
    DotStuffer,
    DotUnstuffer,
    EightBitCheck,
    LineEndings,
    WireForm,
    dot_stuff,
    dot_unstuff,
    fits_8bit,
    has_bare_newline,
    is_wire_form,
    normalize_newlines,
    prepend_head,
    stored_form,
)


def decode_all(
    wire: bytes,
    step: int | None = None,
    *,
    max_line: int | None = 1000,
    max_size: int | None = None,
    bare_newlines: BareNewlines = BareNewlines.REJECT,
) -> tuple[bytes, bool, DataReader, bytes]:
    """Feed ``wire`` to a DataReader, whole or ``step`` bytes at a time, until it finishes.

    Returns (content, finished, reader, bytes not consumed).
    """
    reader = DataReader(max_line=max_line, max_size=max_size, bare_newlines=bare_newlines)
    buf = bytearray()
    out: list[bytes] = []
    size = step or max(len(wire), 1)
    pos = 0
    finished = False
    while pos < len(wire) and not finished:
        buf += wire[pos : pos + size]
        pos += size
        while True:
            content, finished = reader.read(buf)
            out.append(content)
            if finished or not content:
                break
    return b"".join(out), finished, reader, bytes(buf) + wire[pos:]


# Bodies as a client would hand them over: text lines ending in CRLF.
lines = st.lists(
    st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=60)
    .map(lambda s: s.encode("utf-8"))
    .map(lambda b: b[:990]),
    max_size=30,
)
crlf_bodies = lines.map(lambda ls: b"".join(line + b"\r\n" for line in ls))


@given(crlf_bodies, st.sampled_from([None, 1, 2, 3, 7, 64]))
@settings(max_examples=200)
def test_stuff_then_read_round_trips(body: bytes, step: int | None) -> None:
    wire = dot_stuff(body)
    content, finished, reader, rest = decode_all(wire, step)
    assert finished
    assert reader.error is None
    assert content == body
    assert rest == b""
    assert reader.size == len(body)


@given(st.binary(max_size=300), st.binary(max_size=3))
@settings(max_examples=300)
def test_stuffer_output_is_clean_and_reads_back_normalized(body: bytes, split: bytes) -> None:
    """Any bytes at all: the encoder never emits a bare CR or LF, and what the server reads
    back is the body with its line endings made CRLF (and a final CRLF)."""
    stuffer = DotStuffer()
    cut = len(body) // 2 + len(split)
    wire = stuffer.encode(body[:cut]) + stuffer.encode(body[cut:]) + stuffer.end()
    assert not has_bare_newline(wire)
    content, finished, reader, rest = decode_all(wire, max_line=None)
    assert finished and rest == b"" and reader.error is None
    expected = normalize_newlines(body)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert content == expected


@given(crlf_bodies, st.binary(max_size=40))
@settings(max_examples=100)
def test_bytes_after_the_terminator_stay_in_the_buffer(body: bytes, trailing: bytes) -> None:
    wire = dot_stuff(body)
    reader = DataReader()
    buf = bytearray(wire + trailing)
    out = []
    while True:
        content, finished = reader.read(buf)
        out.append(content)
        if finished:
            break
    assert b"".join(out) == body
    assert bytes(buf) == trailing


@pytest.mark.parametrize(
    ("data", "bare"),
    [
        (b"", False),
        (b"a\r\nb\r\n", False),
        (b"\r\n\r\n", False),
        (b"\r.\n", True),  # a CR and an LF, but not next to each other
        (b"\r\x00\x00\n", True),
        (b"\n\r", True),
        (b"a\r", True),
        (b"\nb", True),
        (b"\r\r\n", True),
        (b"\r\n\n", True),
    ],
)
def test_has_bare_newline(data: bytes, bare: bool) -> None:
    assert has_bare_newline(data) is bare


@given(st.binary(max_size=50))
def test_has_bare_newline_matches_its_definition(data: bytes) -> None:
    expected = any(
        (byte == 13 and data[i + 1 : i + 2] != b"\n") or (byte == 10 and data[i - 1 : i] != b"\r")
        for i, byte in enumerate(data)
    )
    assert has_bare_newline(data) is expected


def test_empty_message_right_after_data() -> None:
    content, finished, reader, rest = decode_all(b".\r\nQUIT\r\n")
    assert (content, finished, rest) == (b"", True, b"QUIT\r\n")
    assert reader.size == 0


def test_dot_lines_are_unstuffed() -> None:
    wire = b"..leading\r\nmiddle\r\n...two\r\n.\r\n"
    content, finished, _, _ = decode_all(wire, step=1)
    assert finished
    assert content == b".leading\r\nmiddle\r\n..two\r\n"


def test_unstuffed_single_dot_from_sloppy_client_loses_its_dot() -> None:
    # RFC 5321 4.5.2: the receiver deletes the first dot of any line that starts with one.
    assert dot_unstuff(b".x\r\n.y\r\n") == b"x\r\ny\r\n"


def test_reference_body_round_trips_with_leading_and_trailing_newlines() -> None:
    # Reference 3.1: "Simple NON SSL round trip test\n" and "\nSimple NON SSL round trip test\n"
    for text in (b"Simple NON SSL round trip test\n", b"\nSimple NON SSL round trip test\n"):
        wire = dot_stuff(text)
        assert wire.endswith(b"\r\n.\r\n")
        content, finished, _, _ = decode_all(wire)
        assert finished
        assert content == normalize_newlines(text)


def test_stuffer_handles_cr_split_from_lf_across_chunks() -> None:
    stuffer = DotStuffer()
    wire = (
        stuffer.encode(b"a\r") + stuffer.encode(b"\n.b\r") + stuffer.encode(b"\n") + stuffer.end()
    )
    assert wire == b"a\r\n..b\r\n.\r\n"


def test_stuffer_end_adds_missing_crlf() -> None:
    stuffer = DotStuffer()
    assert stuffer.encode(b"no newline") + stuffer.end() == b"no newline\r\n.\r\n"
    stuffer = DotStuffer()
    assert stuffer.end() == b".\r\n"  # an empty body


# --- SMTP smuggling (CVE-2023-51764 family) ------------------------------------------

SMUGGLING_ENDINGS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r\n\x00.\r\n",
]


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDINGS)
@pytest.mark.parametrize("step", [None, 1, 5])
def test_smuggled_terminator_never_ends_the_data_reject(fake_end: bytes, step: int | None) -> None:
    smuggled = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    wire = b"Subject: one\r\n\r\nbody" + fake_end + smuggled + b"spoofed\r\n.\r\nQUIT\r\n"
    content, finished, reader, rest = decode_all(wire, step)
    assert finished
    # Everything up to the real CRLF.CRLF was one message; what follows is the next command.
    assert rest == b"QUIT\r\n"
    if b"\x00" in fake_end:
        assert reader.error is None
        assert smuggled in content
    else:
        assert reader.error is not None
        assert reader.error.code == 500
        assert str(reader.error.enhanced) == "5.5.2"
        # Content before the bad line may have been handed on already (the server drops it
        # when the refusal comes); nothing after it ever is.
        assert smuggled not in content
        assert b"Subject: one\r\n\r\nbody\r\n".startswith(content)


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDINGS)
def test_smuggled_terminator_never_ends_the_data_normalize(fake_end: bytes) -> None:
    smuggled = b"MAIL FROM:<evil@example.com>\r\n"
    wire = b"body" + fake_end + smuggled + b".\r\nQUIT\r\n"
    content, finished, reader, rest = decode_all(wire, bare_newlines=BareNewlines.NORMALIZE)
    assert finished
    assert reader.error is None
    assert rest == b"QUIT\r\n"
    assert smuggled in content
    assert not has_bare_newline(content)


def test_bare_lf_line_in_normalize_mode_is_unstuffed() -> None:
    content, finished, _, _ = decode_all(b"a\n..b\r\n.\r\n", bare_newlines=BareNewlines.NORMALIZE)
    assert finished
    assert content == b"a\r\n.b\r\n"


# --- limits ------------------------------------------------------------------------


def test_line_limit_counts_crlf() -> None:
    ok = b"x" * 998 + b"\r\n"
    content, finished, reader, _ = decode_all(ok + b".\r\n", step=100)
    assert finished and reader.error is None and content == ok
    too_long = b"x" * 999 + b"\r\n"
    content, finished, reader, rest = decode_all(too_long + b".\r\nNEXT\r\n", step=100)
    assert finished and rest == b"NEXT\r\n"
    assert reader.error is not None and reader.error.code == 500
    assert content == b""


def test_long_line_still_arriving_is_refused_and_drained() -> None:
    reader = DataReader(max_line=100)
    buf = bytearray(b"y" * 150)
    assert reader.read(buf) == (b"", False)
    assert reader.error is not None
    assert len(buf) <= 4  # drained, not accumulated
    buf += b"z" * 10_000 + b"\r\n.\r\nRSET\r\n"
    assert reader.read(buf) == (b"", True)
    assert bytes(buf) == b"RSET\r\n"


def test_no_line_limit_passes_huge_lines_in_pieces() -> None:
    line = b"q" * 300_000 + b"\r\n"
    content, finished, reader, _ = decode_all(line + b".\r\n", step=70_000, max_line=None)
    assert finished and reader.error is None and content == line


def test_size_limit() -> None:
    body = b"0123456789\r\n" * 10  # 120 octets
    content, finished, reader, _ = decode_all(dot_stuff(body), max_size=120)
    assert finished and reader.error is None and content == body
    content, finished, reader, rest = decode_all(dot_stuff(body) + b"X", step=13, max_size=119)
    assert finished and rest == b"X"
    assert reader.error is not None and reader.error.code == 552
    assert str(reader.error.enhanced) == "5.3.4"


def test_discarding_keeps_memory_bounded() -> None:
    reader = DataReader(max_size=10)
    buf = bytearray()
    for _ in range(100):
        buf += b"a" * 900 + b"\r\n"
        assert reader.read(buf) == (b"", False)
        assert len(buf) <= 1000
    buf += b".\r\n"
    assert reader.read(buf) == (b"", True)


def test_terminator_split_across_discard_boundary() -> None:
    reader = DataReader(max_size=0)
    buf = bytearray(b"abc\r\n")
    assert reader.read(buf) == (b"", False)
    results = []
    for byte in b".\r\n":
        buf.append(byte)
        results.append(reader.read(buf))
    assert results == [(b"", False), (b"", False), (b"", True)]
    assert reader.error is not None and reader.error.code == 552


@given(st.binary(max_size=200), st.integers(1, 9))
@settings(max_examples=300)
def test_arbitrary_bytes_never_crash_and_never_end_early(junk: bytes, step: int) -> None:
    """Whatever the content, the reader only stops at a real CRLF.CRLF (or the start)."""
    reader = DataReader()
    buf = bytearray()
    consumed = 0
    for i in range(0, len(junk), step):
        buf += junk[i : i + step]
        while True:
            before = len(buf)
            content, finished = reader.read(buf)
            consumed += before - len(buf)
            if finished:
                seen = junk[:consumed]
                assert seen.endswith(b"\r\n.\r\n") or seen == b".\r\n"
                return
            if not content:
                break
    assert b"\r\n.\r\n" not in junk and not junk.startswith(b".\r\n")


# --- BDAT content: CRLF line endings without the dots ----------------------------------


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
@settings(max_examples=200)
def test_line_endings_deliver_what_data_would(body: bytes, cuts: list[int]) -> None:
    """Whatever the chunking, LineEndings gives the content a server decodes from DATA."""
    endings = LineEndings()
    bounds = sorted({0, len(body), *(c for c in cuts if c <= len(body))})
    out = b"".join(endings.encode(body[a:b]) for a, b in itertools.pairwise(bounds))
    out += endings.end()
    content, finished, _, _ = decode_all(dot_stuff(body))
    assert finished and out == content
    assert not has_bare_newline(out)


def test_line_endings_end_closes_an_open_line_only() -> None:
    endings = LineEndings()
    assert endings.encode(b"a\r\nb") == b"a\r\nb"
    assert endings.end() == b"\r\n"
    assert endings.encode(b"a\r") == b"a"  # the CR waits for a possible LF
    assert endings.encode(b"\nb\r\n") == b"\r\nb\r\n"
    assert endings.end() == b""
    assert endings.encode(b"x\r") == b"x" and endings.end() == b"\r\n"


@pytest.mark.parametrize(
    ("data", "fits"),
    [
        (b"", True),
        (b"Subject: x\r\n\r\n\xc3\xa9t\xc3\xa9\r\n", True),  # 8bit is fine
        (b"a\x00b\r\n", False),  # NUL
        (b"a\nb\r\n", False),  # bare LF
        (b"a\rb\r\n", False),  # bare CR
        (b"x" * 998 + b"\r\n", True),
        (b"x" * 999 + b"\r\n", False),  # 1001 octets with CRLF
        (b"x" * 998, True),  # an open last line: its CRLF will make 1000
        (b"x" * 999, False),
        (b"ok\r\n" + b"y" * 999, False),
    ],
)
def test_fits_8bit(data: bytes, fits: bool) -> None:
    assert fits_8bit(data) is fits


# -- the streaming decoders: the same answers as the whole-content functions --------------


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into chunks of the given sizes, in turn (the last: what is left)."""
    chunks: list[bytes] = []
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(data):
            return chunks
        chunks.append(data[start : start + size])
        start += size
    raise AssertionError  # (cycle never ends)


def test_the_unstuffer_turns_stored_content_back_into_the_message() -> None:
    stored = b"..a\r\nb\r\n...\r\n"  # the lines ".a", "b", ".."
    decoder = DotUnstuffer()
    got = b"".join(decoder.decode(c) for c in _cut(stored, [1, 2])) + decoder.end()
    assert got == b".a\r\nb\r\n..\r\n"


_LINES = st.lists(st.sampled_from([b"", b".", b"..", b"a.b", b".x", b"\r", b"y" * 9]))
_SIZES = st.lists(st.integers(1, 9), min_size=1, max_size=5)


@given(_LINES, _SIZES)
@settings(max_examples=300, deadline=None)
def test_the_unstuffer_agrees_with_dot_unstuff_however_the_chunks_are_cut(
    lines: list[bytes], sizes: list[int]
) -> None:
    stored = dot_stuff(b"\r\n".join(lines))[:-3]  # as the spool keeps it: no terminator
    decoder = DotUnstuffer()
    got = b"".join(decoder.decode(c) for c in _cut(stored, sizes)) + decoder.end()
    assert got == dot_unstuff(stored)


@given(
    st.lists(st.sampled_from([b"x" * 400, b"x" * 598, b"\r\n", b"\r", b"\n", b"\0", b"e"])),
    st.lists(st.integers(1, 1200), min_size=1, max_size=4),
)
@settings(max_examples=300, deadline=None)
def test_the_8bit_check_agrees_with_fits_8bit_however_the_chunks_are_cut(
    parts: list[bytes], sizes: list[int]
) -> None:
    content = b"".join(parts)
    check = EightBitCheck()
    for chunk in _cut(content, sizes):
        check.feed(chunk)
    assert check.result() == fits_8bit(content)


@pytest.mark.parametrize(
    ("content", "fits"),
    [(b"x" * 998 + b"\r\n", True), (b"x" * 999 + b"\r\n", False), (b"x" * 998, True)],
)
def test_the_8bit_check_knows_the_longest_line(content: bytes, fits: bool) -> None:
    check = EightBitCheck()
    for chunk in _cut(content, [7]):
        check.feed(chunk)
    assert check.result() is fits is fits_8bit(content)


def test_the_8bit_check_keeps_no_more_than_a_line() -> None:
    tracemalloc.start()
    try:
        check = EightBitCheck()
        chunk = b"z" * (1 << 20)  # 16 MiB of one line, a MiB at a time
        tracemalloc.reset_peak()
        for _ in range(16):
            check.feed(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not check.result()
    assert peak < 3 << 20


# -- content that is its own DATA form (WireForm) ---------------------------------------

# Lines as a client may send them: some start with a dot, some end bare (NORMALIZE).
_LINE = st.sampled_from([b"", b".", b"..", b".x", b"x.", b"a b", b"\xc3\xa9", b"x\r", b"\ry"])
_END = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
any_bodies = st.lists(st.tuples(_LINE, _END), max_size=12).map(
    lambda ls: b"".join(line + end for line, end in ls)
)


@given(any_bodies, st.sampled_from([None, 1, 2, 3, 5]))
@settings(max_examples=300)
def test_content_taken_verbatim_is_exactly_its_own_data_form(body: bytes, step: int | None) -> None:
    """The reader says the content was taken as it came exactly when the octets on the
    wire (a client's DotStuffer, or a sloppy client's raw lines) were the content and
    its terminator; then the content is a WireForm, and stored as it is."""
    for wire in (dot_stuff(body), normalize_newlines(body) + b".\r\n"):
        if not wire.endswith(b"\r\n.\r\n") and wire != b".\r\n":
            continue  # (a raw body without a final line break has no terminator)
        content, finished, reader, rest = decode_all(
            wire, step, max_line=None, bare_newlines=BareNewlines.NORMALIZE
        )
        assert finished
        taken = wire[: len(wire) - len(rest)]  # (a raw "." line ends the data early)
        assert reader.verbatim == (taken == content + b".\r\n")
        if reader.verbatim:
            assert is_wire_form(content)
            assert stored_form(WireForm(content)) == dot_stuff(content)[:-3] == content
            assert dot_stuff(WireForm(content)) == dot_stuff(content)


@pytest.mark.parametrize(
    ("wire", "verbatim"),
    [
        (b"a\r\nb\r\n.\r\n", True),
        (b".\r\n", True),  # no content at all
        (b"..a\r\n.\r\n", False),  # a stuffed first line
        (b"a\r\n..\r\n.\r\n", False),  # a stuffed line
        (b".a\r\n.\r\n", False),  # a sloppy client's dot, dropped
        (b"a\nb\r\n.\r\n", False),  # a bare LF made CRLF
    ],
)
def test_verbatim(wire: bytes, verbatim: bool) -> None:
    _, finished, reader, _ = decode_all(wire, bare_newlines=BareNewlines.NORMALIZE)
    assert finished and reader.verbatim is verbatim


@pytest.mark.parametrize(
    ("data", "ready"),
    [
        (b"", True),
        (b"a\r\n", True),
        (b"a\r\nb.c\r\n", True),
        (b"a", False),  # no final CRLF
        (b".a\r\n", False),
        (b"a\r\n.b\r\n", False),
        (b"a\nb\r\n", False),
        (b"a\rb\r\n", False),
    ],
)
def test_is_wire_form(data: bytes, ready: bool) -> None:
    assert is_wire_form(data) is ready
    assert (dot_stuff(data)[:-3] == data) is ready


def test_a_head_keeps_the_wire_form_only_when_it_is_one_too() -> None:
    content = WireForm(b"Subject: x\r\n\r\nbody\r\n")
    kept = prepend_head(b"Received: from a\r\n\tby b\r\n", content)
    assert type(kept) is WireForm and kept == b"Received: from a\r\n\tby b\r\n" + content
    for head in (b".X: y\r\n", b"X: y\n", b"X: y"):
        joined = prepend_head(head, content)
        assert type(joined) is bytes and joined == head + content
        assert stored_form(joined) == dot_stuff(head + content)[:-3]
    plain = prepend_head(b"X: y\r\n", bytes(content))
    assert type(plain) is bytes
    assert prepend_head(b"", content) is content


def test_whatever_is_done_to_a_wire_form_gives_plain_bytes() -> None:
    content = WireForm(b"a\r\nb\r\n")
    for edited in (
        content + b".x\r\n",
        b".x\r\n" + content,
        content[2:],
        content.replace(b"b", b"."),
    ):
        assert type(edited) is bytes
    assert stored_form(b".x\r\n" + content) == b"..x\r\na\r\nb\r\n"
