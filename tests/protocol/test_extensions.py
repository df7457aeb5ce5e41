"""EHLO service extensions (RFC 5321 4.1.1.1; RFC 1870 SIZE, RFC 4954 AUTH, RFC 3030
CHUNKING/BINARYMIME, RFC 2920, RFC 6152, RFC 6531, RFC 2034, RFC 3461, RFC 3207)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.errors import ParseError
from smtpx.protocol import extensions as extensions_module
from smtpx.protocol import replies
from smtpx.protocol.extensions import Extensions
from smtpx.protocol.replies import Reply

POSTFIX_EHLO = (
    b"250-mail.example.org\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-VRFY\r\n"
    b"250-ETRN\r\n"
    b"250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250-AUTH=PLAIN LOGIN\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n"
    b"250-DSN\r\n"
    b"250-SMTPUTF8\r\n"
    b"250 CHUNKING\r\n"
)

FLAG_KEYWORDS = {
    "8BITMIME": "eightbitmime",
    "PIPELINING": "pipelining",
    "SMTPUTF8": "smtputf8",
    "ENHANCEDSTATUSCODES": "enhancedstatuscodes",
    "CHUNKING": "chunking",
    "BINARYMIME": "binarymime",
    "DSN": "dsn",
    "STARTTLS": "starttls",
}


def test_postfix_ehlo_reply() -> None:
    reply = Reply.parse(POSTFIX_EHLO)
    greeting, ext = Extensions.from_reply(reply)
    assert greeting == "mail.example.org"
    assert ext == Extensions(
        pipelining=True,
        size=10240000,
        starttls=True,
        auth=("PLAIN", "LOGIN"),  # the old AUTH= line adds nothing new
        enhancedstatuscodes=True,
        eightbitmime=True,
        dsn=True,
        smtputf8=True,
        chunking=True,
        other=("VRFY", "ETRN"),
    )
    assert not ext.binarymime
    for keyword in ("pipelining", "Size", "VRFY", "etrn", "STARTTLS", "AUTH", "chunking", "DSN"):
        assert ext.supports(keyword), keyword
    for keyword in ("BINARYMIME", "XCLIENT", "AUTH=PLAIN", "", "SIZ"):
        assert not ext.supports(keyword), keyword
    assert ext.params("SIZE") == ("10240000",)
    assert ext.params("auth") == ("PLAIN", "LOGIN")
    assert ext.params("VRFY") == ()
    assert ext.params("PIPELINING") == ()
    assert ext.params("BINARYMIME") is None
    assert ext.params("XFORWARD") is None


def test_from_reply_needs_250() -> None:
    with pytest.raises(ParseError):
        Extensions.from_reply(Reply(502, ("Command not implemented",)))
    with pytest.raises(ParseError):
        Extensions.from_reply(Reply(220, ("mx.example",)))


def test_from_reply_single_line() -> None:
    greeting, ext = Extensions.from_reply(Reply(250, ("mx.example Hello",)))
    assert greeting == "mx.example Hello"
    assert ext == Extensions()
    assert ext == extensions_module.NONE


def test_from_named_ehlo_reply() -> None:
    lines = ["PIPELINING", "SIZE 35882577", "AUTH LOGIN PLAIN XOAUTH2", "X-CUSTOM a b"]
    reply = replies.ehlo_ok("mx.example", "at your service", lines)
    greeting, ext = Extensions.from_reply(Reply.parse(reply.to_bytes()))
    assert greeting == "mx.example at your service"
    assert ext.size == 35882577
    assert ext.auth == ("LOGIN", "PLAIN", "XOAUTH2")
    assert ext.other == ("X-CUSTOM a b",)
    assert ext.params("x-custom") == ("a", "b")
    assert ext.to_lines() == lines


@pytest.mark.parametrize(
    ("line", "size", "other"),
    [
        ("SIZE", 0, ()),  # RFC 1870 section 4: advertised without a fixed limit
        ("SIZE 0", 0, ()),
        ("SIZE 52428800", 52428800, ()),
        ("size 1000", 1000, ()),
        ("SIZE   1000", 1000, ()),
        ("SIZE abc", None, ("SIZE abc",)),
        ("SIZE -1", None, ("SIZE -1",)),
    ],
)
def test_size(line: str, size: int | None, other: tuple[str, ...]) -> None:
    ext = Extensions.parse([line])
    assert ext.size == size
    assert ext.other == other


def test_size_absent_zero_and_limit_are_different() -> None:
    absent = Extensions.parse([])
    unlimited = Extensions.parse(["SIZE"])
    assert absent.size is None
    assert not absent.supports("SIZE")
    assert absent.params("SIZE") is None
    assert unlimited.size == 0
    assert unlimited.supports("SIZE")
    assert unlimited.params("SIZE") == ()
    assert unlimited.to_lines() == ["SIZE"]


@pytest.mark.parametrize("value", ["²", "١٠٠"])
def test_size_ascii_digits_only(value: str) -> None:
    ext = Extensions.parse([f"SIZE {value}"])
    assert ext.size is None
    assert ext.other == (f"SIZE {value}",)


@pytest.mark.parametrize(
    ("lines", "auth"),
    [
        (["AUTH PLAIN LOGIN"], ("PLAIN", "LOGIN")),
        (["AUTH=PLAIN LOGIN"], ("PLAIN", "LOGIN")),  # pre-RFC 4954 form (old Outlook)
        (["auth=login"], ("LOGIN",)),
        (["AUTH cram-md5 Plain"], ("CRAM-MD5", "PLAIN")),
        (["AUTH LOGIN PLAIN", "AUTH=PLAIN CRAM-MD5"], ("LOGIN", "PLAIN", "CRAM-MD5")),
        (["AUTH PLAIN PLAIN plain"], ("PLAIN",)),
        (["AUTH"], ()),
        (["AUTH="], ()),
    ],
)
def test_auth(lines: list[str], auth: tuple[str, ...]) -> None:
    ext = Extensions.parse(lines)
    assert ext.auth == auth
    assert ext.supports("AUTH") is bool(auth)
    assert ext.other == ()


@pytest.mark.parametrize(("keyword", "field"), sorted(FLAG_KEYWORDS.items()))
def test_flags(keyword: str, field: str) -> None:
    for spelled in (keyword, keyword.lower(), keyword.capitalize()):
        ext = Extensions.parse([spelled])
        assert getattr(ext, field) is True
        assert ext.supports(keyword)
        assert ext.supports(keyword.lower())
        assert ext.params(keyword) == ()
        others = [f for f in FLAG_KEYWORDS.values() if f != field]
        assert not any(getattr(ext, f) for f in others)
        assert ext.to_lines() == [keyword]


def test_every_flag_field_is_known_to_this_test() -> None:
    # a new flag in the module must be added to FLAG_KEYWORDS above
    fields = {f.name for f in dataclasses.fields(Extensions)} - {"auth", "size", "other"}
    assert fields == set(FLAG_KEYWORDS.values())


def test_unknown_keywords_are_kept_verbatim_in_order() -> None:
    lines = ["XCLIENT NAME ADDR PROTO", "X-EXPS LOGIN", "ETRN", "deliverby 300", "VRFY"]
    ext = Extensions.parse(lines)
    assert ext.other == tuple(lines)
    assert ext.supports("xclient")
    assert ext.supports("DELIVERBY")
    assert ext.params("XCLIENT") == ("NAME", "ADDR", "PROTO")
    assert ext.params("deliverby") == ("300",)
    assert ext.params("X-EXPS") == ("LOGIN",)
    assert ext.to_lines() == lines


def test_blank_lines_are_ignored() -> None:
    ext = Extensions.parse(["", "   ", "DSN"])
    assert ext == Extensions(dsn=True)


def test_to_lines_order() -> None:
    everything = Extensions(
        starttls=True,
        auth=("PLAIN", "LOGIN"),
        size=1000,
        eightbitmime=True,
        pipelining=True,
        smtputf8=True,
        enhancedstatuscodes=True,
        chunking=True,
        binarymime=True,
        dsn=True,
        other=("ETRN", "XFOO bar"),
    )
    assert everything.to_lines() == [
        "PIPELINING",
        "SIZE 1000",
        "STARTTLS",
        "AUTH PLAIN LOGIN",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "BINARYMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
        "ETRN",
        "XFOO bar",
    ]
    assert Extensions.parse(everything.to_lines()) == everything
    assert Extensions().to_lines() == []


def test_extensions_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Extensions().starttls = True  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Hypothesis: to_lines -> parse round trip
# ---------------------------------------------------------------------------------------

_KNOWN = {*FLAG_KEYWORDS, "SIZE", "AUTH"}
ehlo_keywords = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,12}", fullmatch=True).filter(
    lambda k: k.upper() not in _KNOWN
)
ehlo_params = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)
other_lines = st.builds(
    lambda keyword, params: " ".join([keyword, *params]),
    ehlo_keywords,
    st.lists(ehlo_params, max_size=3),
)
mechanisms = st.from_regex(r"[A-Z0-9_-]{1,20}", fullmatch=True)

extension_values = st.builds(
    Extensions,
    starttls=st.booleans(),
    auth=st.lists(mechanisms, max_size=4, unique=True).map(tuple),
    size=st.none() | st.integers(0, 10**12),
    eightbitmime=st.booleans(),
    pipelining=st.booleans(),
    smtputf8=st.booleans(),
    enhancedstatuscodes=st.booleans(),
    chunking=st.booleans(),
    binarymime=st.booleans(),
    dsn=st.booleans(),
    other=st.lists(other_lines, max_size=4).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(extension_values)
def test_round_trip(ext: Extensions) -> None:
    lines = ext.to_lines()
    assert Extensions.parse(lines) == ext
    # and through a whole EHLO reply on the wire
    wire = replies.ehlo_ok("mx.example", "hi", lines).to_bytes()
    greeting, parsed = Extensions.from_reply(Reply.parse(wire))
    assert greeting == "mx.example hi"
    assert parsed == ext


@settings(max_examples=100, deadline=None)
@given(extension_values)
def test_supports_and_params_agree_with_fields(ext: Extensions) -> None:
    for keyword, field in FLAG_KEYWORDS.items():
        assert ext.supports(keyword) is getattr(ext, field)
        assert ext.params(keyword) == (() if getattr(ext, field) else None)
    assert ext.supports("SIZE") is (ext.size is not None)
    assert ext.supports("AUTH") is bool(ext.auth)
    assert ext.params("AUTH") == (ext.auth or None)
    for line in ext.other:
        keyword = line.split()[0]
        assert ext.supports(keyword.lower())
        # the first line with this keyword wins
        first = next(o for o in ext.other if o.split()[0].upper() == keyword.upper())
        assert ext.params(keyword) == tuple(first.split()[1:])
