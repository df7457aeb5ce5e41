"""MAIL FROM / RCPT TO parameters (RFC 5321 4.1.2, RFC 1870 SIZE, RFC 6152/3030 BODY,
RFC 6531 SMTPUTF8, RFC 4954 AUTH=, RFC 3461 RET/ENVID/NOTIFY/ORCPT and xtext, RFC 6533).

The Hypothesis strategies at the top are also used by ``test_commands.py``.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.errors import ParseError
from smtpx.protocol.params import (
    BODY_TYPES,
    MAX_ENVID,
    NOTIFY_VALUES,
    MailParams,
    RcptParams,
    split_params,
    xtext_decode,
    xtext_encode,
)
from smtpx.protocol.replies import EnhancedStatus

# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

MAIL_KEYWORDS = {"SIZE", "BODY", "SMTPUTF8", "AUTH", "RET", "ENVID"}
RCPT_KEYWORDS = {"NOTIFY", "ORCPT"}

# esmtp-value characters that are also printable (a command line holds no controls, and
# str.split() would cut at Unicode spaces).
VALUE_CHARS = st.characters(
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"), exclude_characters="="
)
esmtp_values = st.text(VALUE_CHARS, min_size=1, max_size=12)
keywords = st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,11}", fullmatch=True)


def extras(known: set[str]) -> st.SearchStrategy[tuple[tuple[str, str | None], ...]]:
    return st.lists(
        st.tuples(keywords.filter(lambda k: k not in known), st.none() | esmtp_values),
        max_size=3,
        unique_by=lambda pair: pair[0],
    ).map(tuple)


def mail_params() -> st.SearchStrategy[MailParams]:
    return st.builds(
        MailParams,
        size=st.none() | st.integers(0, 10**20 - 1),
        body=st.none() | st.sampled_from(BODY_TYPES),
        smtputf8=st.booleans(),
        auth=st.none() | st.just("<>") | st.text(min_size=1, max_size=20),
        ret=st.none() | st.sampled_from(["FULL", "HDRS"]),
        envid=st.none() | st.text(min_size=1, max_size=MAX_ENVID),
        extra=extras(MAIL_KEYWORDS),
    )


def rcpt_params() -> st.SearchStrategy[RcptParams]:
    notify = st.one_of(
        st.none(),
        st.just(("NEVER",)),
        st.lists(st.sampled_from(NOTIFY_VALUES), min_size=1, max_size=3, unique=True).map(tuple),
    )
    addr_types = st.sampled_from(["rfc822", "utf-8", "x400"]) | st.from_regex(
        r"[a-z][a-z0-9-]{0,8}", fullmatch=True
    )
    orcpt = st.none() | st.tuples(addr_types, st.text(min_size=1, max_size=20))
    return st.builds(RcptParams, notify=notify, orcpt=orcpt, extra=extras(RCPT_KEYWORDS))


SYNTAX_ERROR = (501, EnhancedStatus(5, 5, 4))


def assert_syntax_error(exc: ParseError) -> None:
    assert exc.reply is not None, "a parameter error must carry the reply to send"
    assert (exc.reply.code, exc.reply.enhanced) == SYNTAX_ERROR


# ---------------------------------------------------------------------------------------
# xtext (RFC 3461 section 4)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", ""),
        ("plain@example.com", "plain@example.com"),
        ("a+b", "a+2Bb"),
        ("a=b", "a+3Db"),
        ("a b", "a+20b"),
        ("tab\t", "tab+09"),
        ("é", "+C3+A9"),
        ("\x00\x7f", "+00+7F"),
        ("<>", "<>"),
        ("!~", "!~"),
        ("+++", "+2B+2B+2B"),
    ],
)
def test_xtext_vectors(text: str, encoded: str) -> None:
    assert xtext_encode(text) == encoded
    assert xtext_decode(encoded) == text


def test_xtext_decode_is_liberal_about_hex_case() -> None:
    assert xtext_decode("a+2bb+3d") == "a+b="
    assert xtext_decode("+c3+a9") == "é"


@pytest.mark.parametrize("text", ["+", "a+", "+2", "a+2", "+ZZ", "+2G", "+ 2", "+-1", "+FF", "+C3"])
def test_xtext_decode_errors(text: str) -> None:
    with pytest.raises(ParseError, match="xtext"):
        xtext_decode(text)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert xtext_decode(encoded) == text
    assert encoded.isascii()
    assert all(33 <= ord(c) <= 126 for c in encoded)
    assert "=" not in encoded
    # Every '+' starts an escape of two upper-case hex digits.
    assert re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*", encoded)


# ---------------------------------------------------------------------------------------
# split_params
# ---------------------------------------------------------------------------------------


def test_split_params() -> None:
    assert split_params("") == []
    assert split_params("size=10  Body=8BITMIME   smtputf8") == [
        ("SIZE", "10"),
        ("BODY", "8BITMIME"),
        ("SMTPUTF8", None),
    ]
    # values keep their case, keywords are upper-cased
    assert split_params("x-Mixed=CaSe") == [("X-MIXED", "CaSe")]
    with pytest.raises(ParseError):
        split_params("X-Y=a=")


# ---------------------------------------------------------------------------------------
# MailParams
# ---------------------------------------------------------------------------------------


def test_mail_params_empty() -> None:
    assert MailParams.parse("") == MailParams()
    assert str(MailParams()) == ""
    assert MailParams().keywords() == []


def test_mail_params_all_known() -> None:
    params = MailParams.parse(
        "SIZE=10240000 BODY=8bitmime SMTPUTF8 AUTH=joe+2Bsmtp@example.com RET=hdrs ENVID=QQ+3D314"
    )
    assert params == MailParams(
        size=10240000,
        body="8BITMIME",
        smtputf8=True,
        auth="joe+smtp@example.com",
        ret="HDRS",
        envid="QQ=314",
    )
    assert str(params) == (
        "SIZE=10240000 BODY=8BITMIME SMTPUTF8 AUTH=joe+2Bsmtp@example.com RET=HDRS ENVID=QQ+3D314"
    )
    assert params.keywords() == ["SIZE", "BODY", "SMTPUTF8", "AUTH", "RET", "ENVID"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SIZE=0", MailParams(size=0)),
        ("size=12345", MailParams(size=12345)),
        ("SIZE=" + "9" * 20, MailParams(size=10**20 - 1)),
        ("SIZE=007", MailParams(size=7)),
        ("BODY=7BIT", MailParams(body="7BIT")),
        ("body=binarymime", MailParams(body="BINARYMIME")),
        ("SmtpUtf8", MailParams(smtputf8=True)),
        ("AUTH=<>", MailParams(auth="<>")),  # RFC 4954 section 5: submitter unknown
        ("AUTH=e+3Dmc2@example.com", MailParams(auth="e=mc2@example.com")),
        ("RET=FULL", MailParams(ret="FULL")),
        ("ENVID=" + "x" * MAX_ENVID, MailParams(envid="x" * MAX_ENVID)),
        ("ENVID=" + "+41" * MAX_ENVID, MailParams(envid="A" * MAX_ENVID)),
    ],
)
def test_mail_params_known(text: str, expected: MailParams) -> None:
    assert MailParams.parse(text) == expected


def test_mail_params_extra_kept_in_order() -> None:
    params = MailParams.parse("x-foo=Bar SIZE=1 XVERP MT-PRIORITY=-3 HOLDFOR=60")
    assert params.size == 1
    assert params.extra == (
        ("X-FOO", "Bar"),
        ("XVERP", None),
        ("MT-PRIORITY", "-3"),
        ("HOLDFOR", "60"),
    )
    assert str(params) == "SIZE=1 X-FOO=Bar XVERP MT-PRIORITY=-3 HOLDFOR=60"
    assert params.keywords() == ["SIZE", "X-FOO", "XVERP", "MT-PRIORITY", "HOLDFOR"]


def test_mail_params_utf8_extra_value() -> None:
    # RFC 6531 section 3.3: esmtp-value may hold UTF-8
    assert MailParams.parse("X-NAME=jürgen").extra == (("X-NAME", "jürgen"),)


def test_mail_params_extra_whitespace_between_params() -> None:
    assert MailParams.parse("  SIZE=5   BODY=7BIT  ") == MailParams(size=5, body="7BIT")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("SIZE=1 SIZE=2", id="duplicate"),
        pytest.param("size=1 SIZE=1", id="duplicate-any-case"),
        pytest.param("X-A=1 x-a=2", id="duplicate-extra"),
        pytest.param("SMTPUTF8 SMTPUTF8", id="duplicate-flag"),
        pytest.param("SIZE=abc", id="size-not-a-number"),
        pytest.param("SIZE=-1", id="size-negative"),
        pytest.param("SIZE=1.5", id="size-decimal"),
        pytest.param("SIZE=1e6", id="size-exponent"),
        pytest.param("SIZE", id="size-without-value"),
        pytest.param("SIZE=", id="size-empty-value"),
        pytest.param("SIZE=" + "9" * 21, id="size-21-digits"),
        pytest.param("BODY=8BIT", id="body-unknown"),
        pytest.param("BODY", id="body-without-value"),
        pytest.param("SMTPUTF8=yes", id="smtputf8-with-value"),
        pytest.param("AUTH", id="auth-without-value"),
        pytest.param("RET=NONE", id="ret-unknown"),
        pytest.param("RET", id="ret-without-value"),
        pytest.param("ENVID", id="envid-without-value"),
        pytest.param("ENVID=" + "x" * (MAX_ENVID + 1), id="envid-101"),
        pytest.param("ENVID=" + "+41" * (MAX_ENVID + 1), id="envid-101-decoded"),
        pytest.param("-X=1", id="keyword-leading-hyphen"),
        pytest.param("=1", id="empty-keyword"),
        pytest.param("X_Y=1", id="keyword-underscore"),
        pytest.param("KÉY=1", id="keyword-non-ascii"),
        pytest.param("X=a=b", id="value-with-equals"),
        pytest.param("X=", id="empty-value"),
        pytest.param("<a@b>", id="second-path"),
    ],
)
def test_mail_params_errors(text: str) -> None:
    with pytest.raises(ParseError) as info:
        MailParams.parse(text)
    assert_syntax_error(info.value)


@pytest.mark.parametrize("text", ["ENVID=+ZZ", "ENVID=abc+", "AUTH=+4", "AUTH=+FF@example.com"])
def test_mail_params_bad_xtext_is_a_501(text: str) -> None:
    with pytest.raises(ParseError) as info:
        MailParams.parse(text)
    assert_syntax_error(info.value)


def test_mail_params_bad_xtext_is_refused() -> None:
    # Whatever the reply, bad xtext never passes.
    for text in ("ENVID=+ZZ", "AUTH=+4", "AUTH=+FF"):
        with pytest.raises(ParseError, match="xtext"):
            MailParams.parse(text)


@pytest.mark.parametrize("digits", ["²", "١٢٣", "１２"])
def test_mail_params_size_ascii_digits_only(digits: str) -> None:
    with pytest.raises(ParseError) as info:
        MailParams.parse(f"SIZE={digits}")
    assert_syntax_error(info.value)


def test_mail_params_only_space_separates_params() -> None:
    assert MailParams.parse("X-FOO=a\u00a0b").extra == (("X-FOO", "a\u00a0b"),)


# ---------------------------------------------------------------------------------------
# RcptParams
# ---------------------------------------------------------------------------------------


def test_rcpt_params_empty() -> None:
    assert RcptParams.parse("") == RcptParams()
    assert str(RcptParams()) == ""
    assert RcptParams().keywords() == []


@pytest.mark.parametrize(
    ("text", "notify"),
    [
        ("NOTIFY=NEVER", ("NEVER",)),
        ("notify=never", ("NEVER",)),
        ("NOTIFY=SUCCESS", ("SUCCESS",)),
        ("NOTIFY=FAILURE,DELAY", ("FAILURE", "DELAY")),
        ("NOTIFY=delay,Success,FAILURE", ("DELAY", "SUCCESS", "FAILURE")),
    ],
)
def test_rcpt_notify(text: str, notify: tuple[str, ...]) -> None:
    params = RcptParams.parse(text)
    assert params.notify == notify
    assert str(params) == "NOTIFY=" + ",".join(notify)


@pytest.mark.parametrize(
    ("text", "orcpt", "wire"),
    [
        ("ORCPT=rfc822;joe@example.com", ("rfc822", "joe@example.com"), None),
        ("ORCPT=RFC822;joe+2Bsmtp@example.com", ("rfc822", "joe+smtp@example.com"),
         "ORCPT=rfc822;joe+2Bsmtp@example.com"),
        ("ORCPT=rfc822;a+20b@example.com", ("rfc822", "a b@example.com"), None),
        # RFC 6533: non-ASCII as \x{HEX}; plain UTF-8 accepted too
        ("ORCPT=utf-8;j\\x{FC}rgen@example.com", ("utf-8", "jürgen@example.com"), None),
        ("ORCPT=UTF-8;jürgen@example.com", ("utf-8", "jürgen@example.com"),
         "ORCPT=utf-8;j\\x{FC}rgen@example.com"),
        ("ORCPT=utf-8;a\\x{2B}b@x", ("utf-8", "a+b@x"), None),
        ("ORCPT=x400;a;b", ("x400", "a;b"), None),
    ],
)  # fmt: skip
def test_rcpt_orcpt(text: str, orcpt: tuple[str, str], wire: str | None) -> None:
    params = RcptParams.parse(text)
    assert params.orcpt == orcpt
    assert str(params) == (wire or text)
    assert RcptParams.parse(str(params)) == params


def test_rcpt_params_full() -> None:
    params = RcptParams.parse("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.example X-Z=1 XFLAG")
    assert params == RcptParams(
        notify=("SUCCESS", "FAILURE"),
        orcpt=("rfc822", "a@b.example"),
        extra=(("X-Z", "1"), ("XFLAG", None)),
    )
    assert str(params) == "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.example X-Z=1 XFLAG"
    assert params.keywords() == ["NOTIFY", "ORCPT", "X-Z", "XFLAG"]
    # MAIL parameters are not RCPT parameters: they stay unknown here
    assert RcptParams.parse("SIZE=1").extra == (("SIZE", "1"),)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("NOTIFY=NEVER,SUCCESS", id="never-with-success"),
        pytest.param("NOTIFY=FAILURE,NEVER", id="failure-with-never"),
        pytest.param("NOTIFY=NEVER,NEVER", id="never-twice"),
        pytest.param("NOTIFY=SUCCESS,SUCCESS", id="success-twice"),
        pytest.param("NOTIFY=SOMETIMES", id="unknown-value"),
        pytest.param("NOTIFY=SUCCESS,,DELAY", id="empty-item"),
        pytest.param("NOTIFY=SUCCESS,", id="trailing-comma"),
        pytest.param("NOTIFY", id="notify-without-value"),
        pytest.param("NOTIFY=NEVER NOTIFY=NEVER", id="notify-twice"),
        pytest.param("ORCPT", id="orcpt-without-value"),
        pytest.param("ORCPT=rfc822", id="orcpt-without-semicolon"),
        pytest.param("ORCPT=;a@b", id="orcpt-without-type"),
        pytest.param("ORCPT=rfc822;", id="orcpt-without-address"),
        pytest.param("ORCPT=rfc822;a+ZZ@b", id="orcpt-bad-xtext"),
        pytest.param("ORCPT=rfc822;a+FF@b", id="orcpt-xtext-not-utf8"),
        pytest.param("ORCPT=utf-8;a\\x{110000}@b", id="orcpt-utf8-code-point-too-big"),
        pytest.param("ORCPT=utf-8;a+Z@b", id="orcpt-utf8-bad-xtext"),
        pytest.param("X-A X-A", id="duplicate-extra"),
    ],
)
def test_rcpt_params_errors(text: str) -> None:
    with pytest.raises(ParseError) as info:
        RcptParams.parse(text)
    assert_syntax_error(info.value)


# ---------------------------------------------------------------------------------------
# Hypothesis round trips
# ---------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(mail_params())
def test_mail_params_round_trip(params: MailParams) -> None:
    text = str(params)
    assert MailParams.parse(text) == params
    assert text.isprintable()
    assert params.keywords() == [token.partition("=")[0] for token in text.split(" ") if token]


@settings(max_examples=300, deadline=None)
@given(rcpt_params())
def test_rcpt_params_round_trip(params: RcptParams) -> None:
    text = str(params)
    assert RcptParams.parse(text) == params
    assert text.isprintable()
    if params.orcpt is not None:
        # the address part is xtext / utf-8-addr-xtext: printable ASCII, no '=' or space
        value = text.split("ORCPT=", 1)[1].split(" ", 1)[0]
        assert value.isascii()
        assert "=" not in value


@settings(max_examples=100, deadline=None)
@given(st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10), st.booleans())
def test_keywords_are_case_insensitive(keyword: str, has_value: bool) -> None:
    keyword = "X" + keyword
    text = f"{keyword.lower()}=v" if has_value else keyword.lower()
    assert MailParams.parse(text).extra == ((keyword.upper(), "v" if has_value else None),)
