"""Envelope selectors (F12): the text form round-trips, and each term means what it says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.envelope import Envelope
from smtpx.errors import ParseError
from smtpx.selector import (
    AllEnvelopeRecipients,
    AllHeaders,
    And,
    Const,
    EnvelopeSender,
    ExistsEnvelopeRecipient,
    ExistsHeader,
    Fields,
    Not,
    Or,
    Selector,
    parse,
)

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@corp.example, carol@corp.example\r\n"
    b"Cc: dave@elsewhere.example\r\n"
    b"Cc: erin@corp.example\r\n"
    b"X-Spam: no\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"X-Spam: yes (a body line, not a header)\r\n"
)
ENVELOPE = Envelope.create(
    sender="<alice@example.com>",
    recipients=["bob@corp.example", "carol@corp.example"],
    message=MESSAGE,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("false", False),
        ("not false", True),
        (r"envelope_sender /^alice@example\.com$/", True),  # a bare address, no <>
        ("envelope_sender /^<>$/", False),
        (r"exists_envelope_recipient /^carol@/", True),
        (r"all_envelope_recipients /@corp\.example$/", True),
        (r"all_envelope_recipients /^bob@/", False),
        ("exists_header cc /^dave@/", True),  # the name in any case
        (r"all_headers Cc /@corp\.example$/", False),
        (r"all_headers Cc /\.example$/", True),
        ("all_headers X-Absent /never/", True),  # every one of none
        ("exists_header X-Absent /.*/", False),
        ("exists_header X-Spam /yes/", False),  # the body is not looked at
        ("exists_header Subject /(?i)HELLO/", True),
        ("exists_header Subject /HELLO/", False),  # case matters unless (?i)
        ("true and false or true", True),  # and binds tighter
        ("true and (false or false)", False),
        ("not true or true", True),  # not binds tighter than or
    ],
)
def test_terms_on_an_envelope(text: str, expected: bool) -> None:
    selector = parse(text)
    assert selector.matches(ENVELOPE) is expected
    # The header-only envelope answers the same.
    bodiless, _ = ENVELOPE.split_bodiless()
    assert selector.matches(bodiless) is expected


def test_the_null_sender_is_written_as_angle_brackets() -> None:
    bounce = Envelope.create(sender="<>", recipients=["a@b.example"], message=b"\r\n")
    assert parse("envelope_sender /^<>$/").matches(bounce)
    assert parse("envelope_sender /^<>$/").matches(Fields(sender="<>", recipients=[]))
    assert not parse("envelope_sender /@/").matches(bounce)


def test_fields_stand_for_a_spooled_record() -> None:
    fields = Fields(
        sender="<alice@example.com>",
        recipients=["bob@corp.example"],
        headers=[("Subject", "hi"), ("X-Tag", "one"), ("x-tag", "two")],
    )
    assert parse(r"envelope_sender /^alice@example\.com$/").matches(fields)
    assert parse("exists_header x-TAG /two/ and not all_headers X-Tag /one/").matches(fields)


def test_header_terms_are_known() -> None:
    assert parse("exists_header A /x/ or false").uses_headers
    assert not parse("envelope_sender /x/ and not exists_envelope_recipient /y/").uses_headers


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "character 1"),
        ("maybe", "character 1"),
        ("true and", "character 9"),
        ("(true", "character 6"),
        ("true)", "character 5"),
        ("envelope_sender x", "character 17"),
        ("envelope_sender /unclosed", "character 26"),
        ("envelope_sender /(/", "character 1"),  # the term whose expression is bad
        ("true or exists_header /x/ /y/", "character 23"),  # no name
        ("exists_header A:B /x/", "character 15"),  # a colon is no part of a name
        ("not " * 100 + "true", "nested"),
        ("(" * 100 + "true" + ")" * 100, "nested"),
    ],
)
def test_bad_text_is_refused_with_where(text: str, where: str) -> None:
    with pytest.raises(ParseError, match=where):
        parse(text)


def test_bad_trees_are_refused() -> None:
    with pytest.raises(ValueError, match="two terms"):
        And((Const(True),))
    with pytest.raises(ParseError, match="regular expression"):
        EnvelopeSender("a\\")
    with pytest.raises(ParseError, match="field name"):
        ExistsHeader("Sub ject", "x")


def test_a_slash_in_a_pattern() -> None:
    # Written \/ in the text form; to the regular expression \/ and / are the same.
    selector = parse(r"exists_header X-Path /^a\/b\\\/c$/")
    assert isinstance(selector, ExistsHeader)
    assert selector.pattern == r"^a/b\\/c$"
    assert selector.matches(Fields("<>", [], [("X-Path", "a/b\\/c")]))
    assert ExistsHeader("X-Path", r"a\/b") == ExistsHeader("X-Path", "a/b")
    assert str(ExistsHeader("X-Path", "a/b")) == r"exists_header X-Path /a\/b/"


# -- the round trip -------------------------------------------------------------------------

# Valid pieces, joined: slashes and backslashes in every position the text form must keep.
_PIECES = [
    "a",
    "b",
    ".",
    "\\.",
    "/",
    "\\/",
    "\\\\",
    "é",
    " ",
    "(a|/)",
    "x*",
    "^",
    "$",
    "[/]",
    "\\d",
]
patterns = st.lists(st.sampled_from(_PIECES), max_size=5).map("".join)
names = st.from_regex(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,10}", fullmatch=True)
leaves: st.SearchStrategy[Selector] = st.one_of(
    st.builds(Const, st.booleans()),
    st.builds(ExistsHeader, names, patterns),
    st.builds(AllHeaders, names, patterns),
    st.builds(EnvelopeSender, patterns),
    st.builds(ExistsEnvelopeRecipient, patterns),
    st.builds(AllEnvelopeRecipients, patterns),
)


def _extend(children: st.SearchStrategy[Selector]) -> st.SearchStrategy[Selector]:
    many = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, many), st.builds(Or, many))


selectors = st.recursive(leaves, _extend, max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(selectors)
def test_the_text_form_round_trips(selector: Selector) -> None:
    text = str(selector)
    assert parse(text) == selector
    assert parse(f"  ( {text} )  ") == selector


@settings(max_examples=100, deadline=None)
@given(selectors, st.booleans())
def test_the_text_form_means_the_same(selector: Selector, with_spam: bool) -> None:
    envelope = ENVELOPE.add_header("X-Spam", "yes") if with_spam else ENVELOPE
    assert parse(str(selector)).matches(envelope) is selector.matches(envelope)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        selector = parse(text)
    except ParseError:
        return
    assert parse(str(selector)) == selector
