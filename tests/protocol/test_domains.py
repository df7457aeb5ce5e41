"""Domain names to ASCII: IDNA 2008 with UTS 46 mapping, the one conversion (RFC 5891).

Python's "idna" codec is IDNA 2003; these tests pin the differences that matter to mail
(ß and ς are letters of their own, not "ss" and "σ"; symbols are refused) and the
mapping that makes fullwidth and A-label forms one domain.
"""

from __future__ import annotations

import string

import idna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.errors import ParseError
from smtpx.protocol import Address, domain_to_ascii, parse_path
from smtpx.protocol.commands import parse_command
from tests.protocol.test_addresses import ldh_labels


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        pytest.param("straße.de", "xn--strae-oqa.de", id="sharp-s"),  # IDNA 2003: strasse.de
        pytest.param("STRASSE.de", "STRASSE.de", id="ascii-as-written"),
        pytest.param("Straße.DE", "xn--strae-oqa.de", id="case-folded"),
        pytest.param("ς.gr", "xn--3xa.gr", id="final-sigma"),  # IDNA 2003: σ, xn--4xa
        pytest.param("σ.gr", "xn--4xa.gr", id="sigma"),
        pytest.param("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com", id="fullwidth"),
        pytest.param(
            "ＥＸＡＭＰＬＥ。ｃｏｍ", "example.com", id="fullwidth-upper-ideographic-stop"
        ),
        pytest.param("ｂüｃｈｅｒ｡example", "xn--bcher-kva.example", id="fullwidth-mixed"),
        pytest.param("bücher.example", "xn--bcher-kva.example", id="u-label"),
        pytest.param("क्\u200dष.example", "xn--11b2ezcw70k.example", id="zwj-after-virama"),
        pytest.param("аpple.com", "xn--pple-43d.com", id="mixed-cyrillic-latin"),
        pytest.param("a.עברית.example", "a.xn--5dbqzzl.example", id="rtl-label"),
        pytest.param("例子.测试", "xn--fsqu00a.xn--0zwm56d", id="cjk"),  # IANA's test name
        pytest.param("ﬀ.example", "ff.example", id="ligature-mapped"),
    ],
)
def test_examples(domain: str, expected: str) -> None:
    assert domain_to_ascii(domain) == expected


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        pytest.param("☃.net", "U+2603", id="symbol"),  # IDNA 2003 took it: xn--n3h.net
        pytest.param("\U0001f600.example", "U+1F600", id="emoji"),
        pytest.param("a\u200db.example", "U+200D", id="zwj-out-of-context"),
        pytest.param("a\u200cb.example", "U+200C", id="zwnj-out-of-context"),
        pytest.param("aא.example", "direction", id="mixed-ltr-rtl-label"),
        pytest.param("\u0663a.example", "directionality", id="bidi-digit-first"),
        pytest.param("-ü.example", "hyphen", id="leading-hyphen"),
        pytest.param("ab--ü.example", "hyphens", id="hyphens-3-4"),
        pytest.param("\u0301ü.example", "combining", id="leading-combining-mark"),
        pytest.param("ü..example", "empty label", id="empty-label"),
        pytest.param("ü.", "empty label", id="final-dot"),
        pytest.param("ü" * 64 + ".de", "too long", id="label-too-long"),
        pytest.param("ü\u0000.de", "U+0000", id="nul"),
        pytest.param("ü\n.de", "U+000A", id="newline"),
        pytest.param("a_b.bücher.example", "U+005F", id="underscore-beside-a-u-label"),
        pytest.param("ｅｘ：ａｍｐｌｅ.com", "U+003A", id="fullwidth-colon"),
        pytest.param("－ｘ.com", "hyphen", id="fullwidth-hyphen-first"),
        pytest.param("xn--zz.bücher.example", "A-label", id="bad-a-label-beside-a-u-label"),
    ],
)
def test_names_idna_2008_refuses(domain: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        domain_to_ascii(domain)
    message = str(info.value)
    assert "IDNA 2008" in message and reason.lower() in message.lower()
    assert message.isascii() and message.isprintable()  # fit for an SMTP reply


def test_too_long_after_conversion() -> None:
    nine = ".".join(["ü" * 20] * 9)  # nine A-labels of 26 characters
    assert len(domain_to_ascii(nine)) == 242
    with pytest.raises(ParseError, match="too long"):
        domain_to_ascii(nine + ".üü.ü")  # 242 + 9 + 8 = 259


@pytest.mark.parametrize(
    ("text", "reason"),
    [("u@☃.net", "U+2603"), ("u@aא.example", "direction"), ("u@ab--ü.example", "hyphens")],
)
def test_a_refused_domain_is_a_501_at_rcpt_and_mail(text: str, reason: str) -> None:
    for line in (f"RCPT TO:<{text}>", f"MAIL FROM:<{text}> SMTPUTF8"):
        with pytest.raises(ParseError) as info:
            parse_command(line.encode())
        reply = info.value.reply
        assert reply is not None
        assert (reply.code, str(reply.enhanced)) == (501, "5.1.3")
        assert "IDNA 2008" in reply.text and reason in reply.text
        assert reply.to_bytes().isascii()
    with pytest.raises(ParseError):
        Address.parse(text)
    with pytest.raises(ParseError):
        parse_path(f"<{text}>")


def test_a_joiner_never_reaches_idna_in_a_command() -> None:
    # Command lines refuse format characters (Cf) before any address is read: a 500, so
    # even a joiner IDNA 2008 allows (after a virama) cannot come in through RCPT.
    for domain in ("a\u200db.example", "क्\u200dष.example"):
        with pytest.raises(ParseError) as info:
            parse_command(f"RCPT TO:<u@{domain}>".encode())
        assert info.value.reply is not None and info.value.reply.code == 500
    assert Address.parse("u@क्\u200dष.example").ascii_domain == "xn--11b2ezcw70k.example"
    with pytest.raises(ParseError, match="U\\+200D"):
        Address.parse("u@a\u200db.example")


def test_address_ascii_domain_and_to_ascii_use_idna_2008() -> None:
    address = Address.parse("u@straße.de")
    assert address.ascii_domain == "xn--strae-oqa.de"
    assert address.to_ascii() == Address("u", "xn--strae-oqa.de")
    assert Address.parse("u@ｅｘａｍｐｌｅ．ｃｏｍ").ascii_domain == "example.com"


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

_FULLWIDTH = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in string.printable[:94]})

ldh_domains = (
    st.lists(ldh_labels(string.ascii_letters + string.digits, max_size=12), min_size=1, max_size=4)
    # IDNA 2008 reserves labels with hyphens in the 3rd and 4th positions (R-LDH, RFC 5890
    # 2.3.1): their fullwidth form is refused, as domain_to_ascii says. Not generated here.
    .filter(lambda labels: all(label[2:4] != "--" for label in labels))
    .map(".".join)
)


@settings(max_examples=200, deadline=None)
@given(ldh_domains)
def test_a_fullwidth_domain_is_its_ascii_form(domain: str) -> None:
    fullwidth = domain.translate(_FULLWIDTH)
    assert not fullwidth.isascii()
    assert domain_to_ascii(fullwidth) == domain.lower()
    assert domain_to_ascii(fullwidth.replace("．", "。")) == domain.lower()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_text_is_converted_or_refused_clearly(text: str) -> None:
    # Never another exception, never a non-ASCII answer; a converted name is stable.
    try:
        name = domain_to_ascii(text)
    except ParseError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert message.isascii() and message.isprintable()
        return
    assert name.isascii()
    assert domain_to_ascii(name) == name
    if not text.isascii():
        labels = name.split(".")
        assert all(0 < len(label) <= 63 for label in labels)
        # the same as the idna package's own whole-name encoding (IDNA 2008, UTS 46)
        assert name == idna.encode(text, uts46=True).decode("ascii")
        # and the U-labels it names convert back to the same A-labels
        assert domain_to_ascii(idna.decode(name)) == name


u_letters = st.sampled_from("abcxyzßςσäöüéàçñøåłžαβγабвгдеж中文例テスト한국अआकखעבר")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(u_letters, min_size=1, max_size=8), min_size=1, max_size=3))
def test_u_labels_convert_like_the_idna_package(labels: list[str]) -> None:
    domain = ".".join(labels)
    try:
        expected = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        with pytest.raises(ParseError):
            domain_to_ascii(domain)
        return
    assert domain_to_ascii(domain) == (domain if domain.isascii() else expected)
