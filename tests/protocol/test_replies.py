"""Replies (RFC 5321 section 4.2) and enhanced status codes (RFC 3463, RFC 2034).

Covers the Reply record, its wire format, the incremental ReplyParser (whole, byte by byte,
with trailing bytes, bare LF), parse errors, and every named constructor in ``replies``.
"""

from __future__ import annotations

import importlib.util
import inspect
import pickle
import re
import sys
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.errors import ParseError
from smtpx.protocol import replies
from smtpx.protocol.replies import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    EnhancedStatus,
    Reply,
    ReplyParser,
    parse_replies,
)

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def feed_whole(data: bytes) -> tuple[list[Reply], ReplyParser]:
    parser = ReplyParser()
    parser.feed(data)
    return list(parser), parser


def feed_bytewise(data: bytes) -> tuple[list[Reply], ReplyParser]:
    parser = ReplyParser()
    out: list[Reply] = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        out.extend(parser)
    return out, parser


def feed_chunks(data: bytes, size: int) -> tuple[list[Reply], ReplyParser]:
    parser = ReplyParser()
    out: list[Reply] = []
    for i in range(0, len(data), size):
        parser.feed(data[i : i + size])
        out.extend(parser)
    return out, parser


FEEDERS: list[Callable[[bytes], tuple[list[Reply], ReplyParser]]] = [
    feed_whole,
    feed_bytewise,
    lambda data: feed_chunks(data, 3),
    lambda data: feed_chunks(data, 7),
]
FEEDER_IDS = ["whole", "bytewise", "chunks3", "chunks7"]


# ---------------------------------------------------------------------------------------
# EnhancedStatus
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.0.0", EnhancedStatus(2, 0, 0)),
        ("5.1.1", EnhancedStatus(5, 1, 1)),
        ("4.7.0", EnhancedStatus(4, 7, 0)),
        ("5.7.11", EnhancedStatus(5, 7, 11)),
        ("5.999.999", EnhancedStatus(5, 999, 999)),
    ],
)
def test_enhanced_status_parse_and_str(text: str, expected: EnhancedStatus) -> None:
    status = EnhancedStatus.parse(text)
    assert status == expected
    assert str(status) == text


@pytest.mark.parametrize(
    "text",
    ["", "2.0", "2.0.0.0", "3.0.0", "1.0.0", "6.0.0", "2.1000.0", "2.0.1000", "2..0", "x.y.z",
     " 2.0.0", "2.0.0 ", "22.0.0", "2.a.0"],
)  # fmt: skip
def test_enhanced_status_parse_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        EnhancedStatus.parse(text)


@pytest.mark.parametrize(
    ("klass", "subject", "detail"),
    [
        (3, 0, 0),
        (1, 0, 0),
        (6, 0, 0),
        (0, 0, 0),
        (2, -1, 0),
        (2, 0, -1),
        (2, 1000, 0),
        (5, 0, 1000),
    ],
)
def test_enhanced_status_constructor_validates(klass: int, subject: int, detail: int) -> None:
    with pytest.raises(ValueError, match="enhanced status"):
        EnhancedStatus(klass, subject, detail)


def test_enhanced_status_is_hashable_value() -> None:
    assert {EnhancedStatus(2, 0, 0), EnhancedStatus.parse("2.0.0")} == {EnhancedStatus(2, 0, 0)}
    assert EnhancedStatus(5, 1, 1) != EnhancedStatus(5, 1, 2)


# ---------------------------------------------------------------------------------------
# Reply record
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 100, 199, 600, 999, -250])
def test_reply_code_must_be_200_to_599(code: int) -> None:
    with pytest.raises(ValueError, match=r"200\.\.599"):
        Reply(code)


def test_reply_needs_a_line() -> None:
    with pytest.raises(ValueError, match="at least one line"):
        Reply(250, ())


@pytest.mark.parametrize("line", ["a\rb", "a\nb", "\r\n", "tail\n"])
def test_reply_text_may_not_hold_cr_or_lf(line: str) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        Reply(250, ("ok", line))


@pytest.mark.parametrize(
    ("code", "enhanced"), [(250, "5.0.0"), (550, "2.0.0"), (450, "5.1.1"), (550, "4.0.0")]
)
def test_reply_enhanced_class_must_match_code(code: int, enhanced: str) -> None:
    with pytest.raises(ValueError, match="does not match"):
        Reply(code, ("x",), EnhancedStatus.parse(enhanced))


def test_reply_3xx_cannot_carry_enhanced_status() -> None:
    # There is no enhanced class 3 (RFC 3463 section 3.1), so no status can match a 3xx.
    for klass in (2, 4, 5):
        with pytest.raises(ValueError, match="does not match"):
            Reply(354, ("go",), EnhancedStatus(klass, 0, 0))


def test_reply_defaults() -> None:
    reply = Reply(250)
    assert reply.lines == ("",)
    assert reply.enhanced is None
    assert reply.text == ""
    assert reply.to_bytes() == b"250 \r\n"


def test_reply_of_splits_newlines_and_parses_enhanced() -> None:
    reply = Reply.of(250, "one\ntwo\nthree", "2.1.0")
    assert reply.lines == ("one", "two", "three")
    assert reply.enhanced == EnhancedStatus(2, 1, 0)
    assert reply.text == "one\ntwo\nthree"
    assert Reply.of(354).lines == ("",)
    assert Reply.of(550, "x", EnhancedStatus(5, 7, 1)).enhanced == EnhancedStatus(5, 7, 1)
    assert Reply.of(250, "a\n").lines == ("a", "")


# (is_positive, is_completion, is_intermediate, is_transient, is_permanent, is_error)
@pytest.mark.parametrize(
    ("code", "flags"),
    [
        (220, (True, True, False, False, False, False)),
        (250, (True, True, False, False, False, False)),
        (299, (True, True, False, False, False, False)),
        (334, (True, False, True, False, False, False)),
        (354, (True, False, True, False, False, False)),
        (421, (False, False, False, True, False, True)),
        (499, (False, False, False, True, False, True)),
        (500, (False, False, False, False, True, True)),
        (554, (False, False, False, False, True, True)),
    ],
)
def test_reply_class_properties(code: int, flags: tuple[bool, ...]) -> None:
    reply = Reply(code)
    got = (
        reply.is_positive,
        reply.is_completion,
        reply.is_intermediate,
        reply.is_transient,
        reply.is_permanent,
        reply.is_error,
    )
    assert got == flags


def test_with_lines_and_with_text_keep_code_and_status() -> None:
    base = Reply(550, ("No such user",), EnhancedStatus(5, 1, 1))
    more = base.with_lines("see https://example.org", "bye")
    assert more.lines == ("No such user", "see https://example.org", "bye")
    assert (more.code, more.enhanced) == (550, EnhancedStatus(5, 1, 1))
    assert base.lines == ("No such user",)  # the original is untouched
    other = base.with_text("a\nb")
    assert other.lines == ("a", "b")
    assert (other.code, other.enhanced) == (550, EnhancedStatus(5, 1, 1))
    assert base.with_text("").lines == ("",)


def test_reply_is_immutable() -> None:
    reply = Reply(250, ("ok",))
    with pytest.raises(AttributeError):
        reply.code = 550  # type: ignore[misc]


def test_wire_cache_does_not_affect_equality_hash_or_pickle() -> None:
    a = Reply(250, ("ok",), EnhancedStatus(2, 0, 0))
    b = Reply(250, ("ok",), EnhancedStatus(2, 0, 0))
    assert a.to_bytes() == b"250 2.0.0 ok\r\n"
    assert a.to_bytes() is a.to_bytes()  # made once
    assert a == b  # b has no cached wire form yet
    assert hash(a) == hash(b)
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a
    assert copy.to_bytes() == a.to_bytes()
    assert "_wire" not in repr(a)


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------


def test_format_single_line() -> None:
    assert Reply(250, ("Ok",)).to_bytes() == b"250 Ok\r\n"
    assert str(Reply(250, ("Ok",))) == "250 Ok"


def test_format_multi_line() -> None:
    reply = Reply(250, ("mail.example.org", "PIPELINING", "SIZE 10240000"))
    assert reply.to_bytes() == b"250-mail.example.org\r\n250-PIPELINING\r\n250 SIZE 10240000\r\n"
    assert str(reply) == "250-mail.example.org\n250-PIPELINING\n250 SIZE 10240000"


def test_format_writes_enhanced_status_on_every_line() -> None:
    # RFC 2034 section 4: every line of a multi-line reply carries the status code.
    reply = Reply(550, ("No such user", "", "Try again"), EnhancedStatus(5, 1, 1))
    assert reply.to_bytes() == (b"550-5.1.1 No such user\r\n550-5.1.1 \r\n550 5.1.1 Try again\r\n")
    assert str(reply) == "550-5.1.1 No such user\n550-5.1.1 \n550 5.1.1 Try again"


def test_format_334_with_empty_text() -> None:
    # RFC 4954 section 4: an empty challenge is "334 " (the space stays).
    assert Reply(334, ("",)).to_bytes() == b"334 \r\n"
    assert replies.auth_challenge("").to_bytes() == b"334 \r\n"


def test_format_utf8_and_surrogate_escaped_text() -> None:
    assert Reply(250, ("héllo",)).to_bytes() == "250 héllo\r\n".encode()
    raw = b"250 caf\xe9\r\n"  # Latin-1 from an old server survives a parse-format round trip
    assert Reply.parse(raw).to_bytes() == raw


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------


def test_reference_vector_multi_line() -> None:
    # async_smtp's inline test (reference section 3.7): no trailing CRLF on the last line.
    reply = Reply.parse(b"250-Ok: test1\r\n250-test2\r\n250 test3")
    assert reply.code == 250
    assert reply.lines == ("Ok: test1", "test2", "test3")
    assert reply.enhanced is None
    assert reply == Reply.of(250, "Ok: test1\ntest2\ntest3")


def test_parse_accepts_str_and_bytes() -> None:
    assert Reply.parse("250 ok") == Reply.parse(b"250 ok\r\n") == Reply(250, ("ok",))


@pytest.mark.parametrize("raw", [b"334 \r\n", b"334\r\n", b"334 ", b"334"])
def test_parse_334_with_empty_text(raw: bytes) -> None:
    assert Reply.parse(raw) == Reply(334, ("",))


def test_parse_line_with_code_only() -> None:
    reply = Reply.parse(b"250\r\n")
    assert reply == Reply(250, ("",))
    assert Reply.parse(b"250-first\r\n250\r\n").lines == ("first", "")


def test_parse_keeps_text_verbatim() -> None:
    assert Reply.parse(b"250  two leading, two trailing  \r\n").lines == (
        " two leading, two trailing  ",
    )
    assert Reply.parse(b"250 a\tb\r\n").lines == ("a\tb",)


def test_parse_extracts_enhanced_status_from_every_line() -> None:
    raw = b"550-5.1.1 The email account that you tried to reach does not exist.\r\n" + (
        b"550-5.1.1 \r\n550 5.1.1 https://support.example.com/mail\r\n"
    )
    reply = Reply.parse(raw)
    assert reply.enhanced == EnhancedStatus(5, 1, 1)
    assert reply.lines == (
        "The email account that you tried to reach does not exist.",
        "",
        "https://support.example.com/mail",
    )
    assert reply.to_bytes() == raw  # and re-emitted on every line


def test_parse_enhanced_status_alone_on_a_line() -> None:
    reply = Reply.parse(b"250-2.1.5\r\n250 2.1.5 Ok\r\n")
    assert reply.enhanced == EnhancedStatus(2, 1, 5)
    assert reply.lines == ("", "Ok")
    assert Reply.parse(b"250 2.0.0").lines == ("",)


def test_parse_enhanced_status_with_leading_zeros_normalises() -> None:
    reply = Reply.parse(b"250 2.00.01 ok\r\n")
    assert reply.enhanced == EnhancedStatus(2, 0, 1)
    assert reply.lines == ("ok",)


@pytest.mark.parametrize(
    ("raw", "lines"),
    [
        (b"250 5.1.1 class differs from the code\r\n", ("5.1.1 class differs from the code",)),
        (b"550 2.0.0 class differs\r\n", ("2.0.0 class differs",)),
        (b"250 2.0.0x not followed by a space\r\n", ("2.0.0x not followed by a space",)),
        (b"250 2.0 too short\r\n", ("2.0 too short",)),
        (b"250 2.1000.0 subject too long\r\n", ("2.1000.0 subject too long",)),
        (b"250 text 2.0.0 not at the start\r\n", ("text 2.0.0 not at the start",)),
    ],
)
def test_parse_text_that_is_not_an_enhanced_status(raw: bytes, lines: tuple[str, ...]) -> None:
    reply = Reply.parse(raw)
    assert reply.enhanced is None
    assert reply.lines == lines


@pytest.mark.parametrize("raw", [b"354 2.0.0 go ahead\r\n", b"334 5.0.0\r\n", b"334 4.1.1 x\r\n"])
def test_parse_3xx_never_has_an_enhanced_status(raw: bytes) -> None:
    reply = Reply.parse(raw)
    assert reply.enhanced is None
    assert reply.lines == (raw[4:].decode().rstrip("\r\n"),)


def test_parse_enhanced_status_only_if_on_first_line() -> None:
    reply = Reply.parse(b"250-hello\r\n250 2.0.0 ok\r\n")
    assert reply.enhanced is None
    assert reply.lines == ("hello", "2.0.0 ok")


def test_parse_line_not_repeating_the_status_keeps_its_text() -> None:
    reply = Reply.parse(b"550-5.1.1 first\r\n550 second\r\n")
    assert reply.enhanced == EnhancedStatus(5, 1, 1)
    assert reply.lines == ("first", "second")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"250-a\r\n251 b\r\n", id="mismatched-code"),
        pytest.param(b"250-a\r\n550 b\r\n", id="mismatched-class"),
        pytest.param(b"250*a\r\n", id="bad-separator-star"),
        pytest.param(b"250x\r\n", id="bad-separator-letter"),
        pytest.param(b"250\tok\r\n", id="bad-separator-tab"),
        pytest.param(b"250_ok\r\n", id="bad-separator-underscore"),
        pytest.param(b"25\r\n", id="short-code"),
        pytest.param(b"\r\n", id="empty-line"),
        pytest.param(b"abc ok\r\n", id="letters"),
        pytest.param(b"2x0 ok\r\n", id="letter-in-code"),
        pytest.param(b" 250 ok\r\n", id="leading-space"),
        pytest.param(b"199 ok\r\n", id="code-below-200"),
        pytest.param(b"600 ok\r\n", id="code-above-599"),
        pytest.param(b"050 ok\r\n", id="code-0xx"),
        pytest.param("２５０ ok\r\n".encode(), id="non-ascii-digits"),
    ],
)
def test_parse_errors(raw: bytes) -> None:
    with pytest.raises(ParseError):
        Reply.parse(raw)
    with pytest.raises(ParseError):
        feed_whole(raw)


def test_parse_bare_cr_in_text_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        Reply.parse(b"250 a\rb\r\n")


def test_parse_requires_exactly_one_reply() -> None:
    with pytest.raises(ParseError, match="exactly one"):
        Reply.parse(b"250 a\r\n250 b\r\n")
    with pytest.raises(ParseError, match="exactly one"):
        Reply.parse(b"250-a\r\n250-b\r\n")  # never finished
    with pytest.raises(ParseError):
        Reply.parse(b"")


def test_line_length_limit() -> None:
    # MAX_REPLY_LINE octets including the CRLF are accepted; one more is refused.
    ok_line = b"250 " + b"x" * (MAX_REPLY_LINE - 6) + b"\r\n"
    assert len(ok_line) == MAX_REPLY_LINE
    assert Reply.parse(ok_line).lines == ("x" * (MAX_REPLY_LINE - 6),)
    too_long = b"250 " + b"x" * (MAX_REPLY_LINE - 5) + b"\r\n"
    with pytest.raises(ParseError, match="longer than"):
        Reply.parse(too_long)


@pytest.mark.parametrize("feeder", FEEDERS, ids=FEEDER_IDS)
def test_line_length_limit_whole_and_incremental(
    feeder: Callable[[bytes], tuple[list[Reply], ReplyParser]],
) -> None:
    with pytest.raises(ParseError, match="longer than"):
        feeder(b"250 " + b"y" * 5000 + b"\r\n")


def test_line_length_limit_without_newline_yet() -> None:
    # A reader must not buffer an endless line waiting for its LF.
    parser = ReplyParser()
    parser.feed(b"250 " + b"z" * MAX_REPLY_LINE)
    with pytest.raises(ParseError, match="longer than"):
        parser.next_reply()


def test_too_many_lines() -> None:
    ok = b"250-x\r\n" * (MAX_REPLY_LINES - 1) + b"250 end\r\n"
    assert len(Reply.parse(ok).lines) == MAX_REPLY_LINES
    with pytest.raises(ParseError, match="more than"):
        Reply.parse(b"250-x\r\n" * MAX_REPLY_LINES + b"250 end\r\n")


# ---------------------------------------------------------------------------------------
# The incremental parser
# ---------------------------------------------------------------------------------------

EHLO_WIRE = (
    b"250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
)
STREAM = (
    b"220 mail.example.org ESMTP\r\n"
    + EHLO_WIRE
    + b"250 2.1.0 Ok\r\n"
    + b"550-5.1.1 No such\r\n550 5.1.1 user\r\n"
    + b"354 End data with <CR><LF>.<CR><LF>\r\n"
    + "250 2.0.0 Ok: queued as 4BX3Kd1z ✓\r\n".encode()
)
STREAM_REPLIES = [
    Reply(220, ("mail.example.org ESMTP",)),
    Reply(250, ("mail.example.org", "PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES",
                "CHUNKING")),
    Reply(250, ("Ok",), EnhancedStatus(2, 1, 0)),
    Reply(550, ("No such", "user"), EnhancedStatus(5, 1, 1)),
    Reply(354, ("End data with <CR><LF>.<CR><LF>",)),
    Reply(250, ("Ok: queued as 4BX3Kd1z ✓",), EnhancedStatus(2, 0, 0)),
]  # fmt: skip


@pytest.mark.parametrize("feeder", FEEDERS, ids=FEEDER_IDS)
def test_parser_stream(feeder: Callable[[bytes], tuple[list[Reply], ReplyParser]]) -> None:
    got, parser = feeder(STREAM)
    assert got == STREAM_REPLIES
    assert parser.buffered == 0
    assert not parser.in_progress
    assert parser.take_buffer() == b""


@pytest.mark.parametrize("feeder", FEEDERS, ids=FEEDER_IDS)
def test_parser_stream_with_bare_lf(
    feeder: Callable[[bytes], tuple[list[Reply], ReplyParser]],
) -> None:
    got, parser = feeder(STREAM.replace(b"\r\n", b"\n"))
    assert got == STREAM_REPLIES
    assert parser.buffered == 0


def test_parser_mixed_line_endings() -> None:
    got, _ = feed_whole(b"250-a\n250-b\r\n250 c\n")
    assert got == [Reply(250, ("a", "b", "c"))]


@pytest.mark.parametrize("feeder", FEEDERS, ids=FEEDER_IDS)
@pytest.mark.parametrize("trailing", [b"2", b"25", b"250", b"250 partial", b"250-more", b"\r"])
def test_parser_trailing_partial_line_stays_buffered(
    feeder: Callable[[bytes], tuple[list[Reply], ReplyParser]], trailing: bytes
) -> None:
    got, parser = feeder(STREAM + trailing)
    assert got == STREAM_REPLIES
    assert parser.in_progress
    assert parser.buffered == len(trailing)
    assert parser.take_buffer() == trailing
    assert parser.buffered == 0
    assert not parser.in_progress


def test_parser_trailing_complete_reply_is_not_consumed_early() -> None:
    parser = ReplyParser()
    parser.feed(b"250 first\r\n221 2.0.0 Bye\r\n")
    assert parser.next_reply() == Reply(250, ("first",))
    assert parser.buffered == len(b"221 2.0.0 Bye\r\n")  # the second is still raw bytes
    assert parser.next_reply() == Reply(221, ("Bye",), EnhancedStatus(2, 0, 0))
    assert parser.next_reply() is None
    assert parser.buffered == 0


def test_parser_trailing_bytes_then_completed() -> None:
    parser = ReplyParser()
    parser.feed(b"250 first\r\n250-sec")
    assert parser.next_reply() == Reply(250, ("first",))
    assert parser.next_reply() is None
    parser.feed(b"ond\r\n250 third\r\n")
    assert parser.next_reply() == Reply(250, ("second", "third"))
    assert parser.next_reply() is None
    assert not parser.in_progress


def test_parser_needs_more_data() -> None:
    parser = ReplyParser()
    assert parser.next_reply() is None
    assert not parser.in_progress
    parser.feed(b"250-a\r\n")
    assert parser.next_reply() is None
    assert parser.in_progress  # a continuation line was read, the reply is not finished
    parser.feed(b"250 b\r\n")
    assert parser.next_reply() == Reply(250, ("a", "b"))
    assert not parser.in_progress


def test_parser_buffered_counts_bytes_of_an_unfinished_multiline_reply() -> None:
    parser = ReplyParser()
    trailing = "250-abc\r\n250-é\r\n250 d".encode()
    parser.feed(b"250 ok\r\n" + trailing)
    assert parser.next_reply() == Reply(250, ("ok",))
    assert parser.next_reply() is None
    assert parser.buffered == len(trailing)


def test_parser_take_buffer_returns_unfinished_multiline_reply() -> None:
    parser = ReplyParser()
    trailing = b"250-abc\r\n250 d"
    parser.feed(b"250 ok\r\n" + trailing)
    assert parser.next_reply() == Reply(250, ("ok",))
    assert parser.next_reply() is None
    assert parser.take_buffer() == trailing
    assert not parser.in_progress
    parser.feed(b"220 fresh\r\n")
    assert parser.next_reply() == Reply(220, ("fresh",))


def test_parser_iterates_over_complete_replies_only() -> None:
    parser = ReplyParser()
    parser.feed(b"250 a\r\n251 b\r\n252-c")
    assert list(parser) == [Reply(250, ("a",)), Reply(251, ("b",))]
    assert list(parser) == []
    parser.feed(b"\r\n252 d\r\n")
    assert list(parser) == [Reply(252, ("c", "d"))]


def test_parse_replies() -> None:
    assert parse_replies(b"") == []
    assert parse_replies(STREAM) == STREAM_REPLIES
    with pytest.raises(ParseError, match="incomplete"):
        parse_replies(b"250 a\r\n250 b")
    with pytest.raises(ParseError, match="incomplete"):
        parse_replies(b"250 a\r\n250-b\r\n")


# ---------------------------------------------------------------------------------------
# Hypothesis: format -> parse round trip
# ---------------------------------------------------------------------------------------

# Printable text: no C* (controls, format, surrogates, private use, unassigned) and no
# Z* other than the ASCII space.
TEXT_CHARS = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),
                           include_characters=" ")  # fmt: skip
_LOOKS_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")


@st.composite
def reply_values(draw: st.DrawFn) -> Reply:
    code = draw(st.integers(200, 599))
    lines = draw(st.lists(st.text(TEXT_CHARS, max_size=40), min_size=1, max_size=5))
    enhanced = None
    if code // 100 != 3 and draw(st.booleans()):
        enhanced = EnhancedStatus(code // 100, draw(st.integers(0, 999)), draw(st.integers(0, 999)))
    if enhanced is None and code // 100 != 3 and _LOOKS_ENHANCED.match(lines[0]):
        # "250 2.0.0 x" is a reply with an enhanced status whatever the sender meant.
        lines[0] = "_" + lines[0]
    return Reply(code, tuple(lines), enhanced)


@settings(max_examples=300, deadline=None)
@given(reply_values())
def test_round_trip_reply(reply: Reply) -> None:
    wire = reply.to_bytes()
    assert wire.endswith(b"\r\n")
    assert wire.count(b"\r\n") == len(reply.lines)
    assert Reply.parse(wire) == reply
    if reply.enhanced is not None:
        prefix = f"{reply.enhanced} ".encode()
        assert all(line[4:].startswith(prefix) for line in wire.split(b"\r\n")[:-1])


@settings(max_examples=100, deadline=None)
@given(st.lists(reply_values(), min_size=1, max_size=4), st.integers(1, 9), st.booleans())
def test_round_trip_reply_stream_in_chunks(replies_: list[Reply], size: int, lf: bool) -> None:
    wire = b"".join(r.to_bytes() for r in replies_)
    if lf:
        wire = wire.replace(b"\r\n", b"\n")
    got, parser = feed_chunks(wire, size)
    assert got == replies_
    assert parser.buffered == 0


@settings(max_examples=100, deadline=None)
@given(reply_values(), st.binary(max_size=20).filter(lambda b: b"\n" not in b))
def test_round_trip_with_trailing_bytes(reply: Reply, trailing: bytes) -> None:
    got, parser = feed_bytewise(reply.to_bytes() + trailing)
    assert got == [reply]
    assert parser.buffered == len(trailing)
    assert parser.take_buffer() == trailing


@settings(max_examples=100, deadline=None)
@given(st.integers(200, 599), st.lists(st.text(TEXT_CHARS, max_size=20), min_size=1, max_size=3))
def test_of_round_trip_every_code(code: int, lines: list[str]) -> None:
    # reference section 3.7: every code with 1 and several lines
    reply = Reply.of(code, "\n".join("_" + line for line in lines))
    assert Reply.parse(reply.to_bytes()) == reply
    assert len(reply.lines) == len(lines)


# ---------------------------------------------------------------------------------------
# Named constructors (found with inspect, so new ones are covered automatically)
# ---------------------------------------------------------------------------------------

_SAMPLE_STR = {
    "domain": "mx.example.org",
    "greeting": "ESMTP ready",
    "queue_id": "4BX3Kd1z",
    "base64_text": "VXNlcm5hbWU6",
    "verb": "XYZZY",
    "mechanism": "GSSAPI",
}


def _source_of(module: ModuleType) -> ModuleType:
    """``module``, or, when it is compiled (the compiled build: tests/test_compiled.py),
    its source loaded apart: compiled functions carry no annotations to be found by. The
    functions found are then called in ``module`` itself."""
    assert module.__file__ is not None
    if module.__file__.endswith(".py"):
        return module
    path = Path(module.__file__).with_name(module.__name__.rsplit(".", 1)[1] + ".py")
    spec = importlib.util.spec_from_file_location(module.__name__ + "_source", path)
    assert spec is not None and spec.loader is not None
    source = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = source  # dataclasses look their module up
    spec.loader.exec_module(source)
    return source


SOURCE = _source_of(replies)


def _named_constructors() -> list[tuple[str, Callable[..., Reply]]]:
    """The named constructors, as (name, the function of the source: for its signature)."""
    found: list[tuple[str, Callable[..., Reply]]] = []
    for name, fn in inspect.getmembers(SOURCE, inspect.isfunction):
        if name.startswith("_") or fn.__module__ != SOURCE.__name__:
            continue
        if typing.get_type_hints(fn).get("return") is not SOURCE.Reply:
            continue
        found.append((name, fn))
    return found


def _sample_args(fn: Callable[..., Reply]) -> dict[str, object]:
    hints = typing.get_type_hints(fn)
    args: dict[str, object] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.default is not inspect.Parameter.empty:
            continue
        hint = hints[name]
        if hint is str:
            args[name] = _SAMPLE_STR.get(name, "sample text")
        elif hint is int:
            args[name] = 1234
        elif hint == Iterable[str]:
            args[name] = ["PIPELINING", "SIZE 10240000", "8BITMIME"]
        else:  # pragma: no cover - a new parameter type: teach this test about it
            pytest.fail(f"no sample value for {fn.__name__}({name}: {hint})")
    return args


def _takes_no_enhanced_status(name: str, fn: Callable[..., Reply]) -> bool:
    """Greetings and HELO/EHLO replies (RFC 2034 section 3); 3xx are checked by code."""
    return "greeting" in (fn.__doc__ or "").lower() or name.startswith(("helo", "ehlo"))


NAMED = _named_constructors()


def test_named_constructors_are_found() -> None:
    names = {name for name, _ in NAMED}
    assert {"service_ready", "ehlo_ok", "ok", "syntax_error", "auth_challenge"} <= names
    assert "parse_replies" not in names
    assert len(names) >= 40


@pytest.mark.parametrize(
    ("name", "fn"),
    [pytest.param(name, fn, id=name) for name, fn in NAMED],
)
def test_named_constructor_is_well_formed(name: str, fn: Callable[..., Reply]) -> None:
    reply = getattr(replies, name)(**_sample_args(fn))
    assert isinstance(reply, Reply)
    assert 2 <= reply.code // 100 <= 5
    if reply.enhanced is not None:
        assert reply.enhanced.klass == reply.code // 100
    if reply.is_intermediate:
        assert reply.enhanced is None
    # The wire form parses back to the same reply.
    assert Reply.parse(reply.to_bytes()) == reply


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        pytest.param(
            name,
            fn,
            id=name,
        )
        for name, fn in NAMED
        if _takes_no_enhanced_status(name, fn)
    ],
)
def test_greeting_and_helo_replies_have_no_enhanced_status(
    name: str, fn: Callable[..., Reply]
) -> None:
    assert getattr(replies, name)(**_sample_args(fn)).enhanced is None


def test_greeting_and_helo_constructors_are_classified() -> None:
    classified = {name for name, fn in NAMED if _takes_no_enhanced_status(name, fn)}
    assert {"service_ready", "service_refused", "helo_ok", "ehlo_ok"} <= classified
    assert "ok" not in classified


@pytest.mark.parametrize(
    ("reply", "code", "enhanced"),
    [
        # RFC 5321 section 4.2.2/4.2.3 codes; RFC 3463/5248 enhanced codes
        (replies.service_ready("mx.example"), 220, None),
        (replies.service_refused("mx.example"), 554, ...),
        (replies.closing(), 221, "2.0.0"),
        (replies.helo_ok("mx.example"), 250, None),
        (replies.ehlo_ok("mx.example", "hi", ["DSN"]), 250, None),
        (replies.ok(), 250, "2.0.0"),
        (replies.sender_ok(), 250, "2.1.0"),
        (replies.recipient_ok(), 250, "2.1.5"),
        (replies.queued("Q1"), 250, "2.0.0"),
        (replies.chunk_ok(10), 250, "2.0.0"),
        (replies.cannot_verify(), 252, "2.5.2"),
        (replies.help_text(), 214, "2.0.0"),
        (replies.auth_succeeded(), 235, "2.7.0"),  # RFC 4954 section 6
        (replies.auth_challenge("abc"), 334, None),
        (replies.start_mail_input(), 354, None),
        (replies.ready_to_start_tls(), 220, "2.0.0"),  # RFC 3207 section 4
        (replies.service_unavailable(), 421, "4.3.2"),
        (replies.command_timeout(), 421, "4.4.2"),
        (replies.data_timeout(), 421, "4.4.2"),
        (replies.local_error(), 451, "4.3.0"),
        (replies.insufficient_storage(), 452, "4.3.1"),
        (replies.too_many_recipients(), 452, "4.5.3"),  # RFC 5321 4.5.3.1.10
        (replies.tls_not_available(), 454, "4.7.0"),  # RFC 3207 section 4
        (replies.auth_temporary_failure(), 454, "4.7.0"),  # RFC 4954 section 6
        (replies.command_unrecognized("X"), 500, "5.5.1"),
        (replies.line_too_long(), 500, "5.5.2"),
        (replies.syntax_error(), 501, "5.5.4"),
        (replies.address_syntax_error(), 501, "5.1.3"),
        (replies.not_implemented(), 502, "5.5.1"),
        (replies.bad_sequence(), 503, "5.5.1"),
        (replies.parameter_not_implemented(), 504, "5.5.4"),
        (replies.unrecognized_auth_mechanism(), 504, "5.5.4"),  # RFC 4954 section 6
        (replies.auth_required(), 530, "5.7.0"),  # RFC 4954 section 6
        (replies.starttls_required(), 530, "5.7.0"),  # RFC 3207 section 4
        (replies.auth_too_weak(), 534, "5.7.9"),  # RFC 4954 section 6
        (replies.auth_failed(), 535, "5.7.8"),  # RFC 4954 section 6
        (replies.encryption_required(), 538, "5.7.11"),  # RFC 4954 section 6
        (replies.mailbox_unavailable(), 550, "5.1.1"),
        (replies.relay_denied(), 550, "5.7.1"),
        (replies.message_too_big(), 552, "5.3.4"),  # RFC 1870 section 6
        (replies.non_ascii_not_permitted(), 553, "5.6.7"),  # RFC 6531 section 3.5
        (replies.transaction_failed(), 554, "5.0.0"),
        (replies.no_valid_recipients(), 554, "5.5.1"),
        (replies.parameters_not_recognized(), 555, "5.5.4"),  # RFC 5321 4.1.1.11
    ],
)
def test_named_constructor_codes(reply: Reply, code: int, enhanced: object) -> None:
    assert reply.code == code
    if enhanced is not ...:  # service_refused: see the greeting test above
        assert reply.enhanced == (None if enhanced is None else EnhancedStatus.parse(str(enhanced)))


def test_named_constructor_texts() -> None:
    assert replies.service_ready("mx.example").lines == ("mx.example ESMTP smtpx",)
    assert replies.service_ready("mx.example", "").lines == ("mx.example",)
    assert replies.helo_ok("mx.example").lines == ("mx.example",)
    ehlo = replies.ehlo_ok("mx.example", "greets client.example", ["PIPELINING", "SIZE 1000"])
    assert ehlo.lines == ("mx.example greets client.example", "PIPELINING", "SIZE 1000")
    assert replies.ehlo_ok("mx.example", "", []).lines == ("mx.example",)
    assert replies.queued("ABC123").lines == ("Ok: queued as ABC123",)
    assert replies.chunk_ok(4096).lines == ("Ok: 4096 octets received",)
    assert replies.command_unrecognized("FOO").lines == ("Command unrecognized: FOO",)
    assert replies.command_unrecognized().lines == ("Command unrecognized",)
    assert replies.not_implemented("TURN").lines == ("Command not implemented: TURN",)
    assert replies.unrecognized_auth_mechanism("X").lines == (
        "Unrecognized authentication type: X",
    )
    assert replies.auth_challenge("").lines == ("",)
    assert replies.ok("a\nb").lines == ("a", "b")  # text with newlines becomes several lines
    assert replies.ok("x", "2.1.5").enhanced == EnhancedStatus(2, 1, 5)
    assert replies.insufficient_storage().text == "Insufficient system storage"  # sic fixed
