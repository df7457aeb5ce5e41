"""Mailboxes and paths (RFC 5321 sections 4.1.2, 4.1.3, 4.5.3.1; RFC 6531 section 3.3).

The Hypothesis strategies at the top are also used by ``test_commands.py``.
"""

from __future__ import annotations

import pickle
import string

import idna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.errors import ParseError
from smtpx.protocol.addresses import MAX_PATH, Address, Sender, match_path, parse_path
from smtpx.protocol.domains import domain_to_ascii
from smtpx.protocol.replies import EnhancedStatus

# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

ATEXT_ASCII = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
# Printable characters (str.isprintable) without ASCII: what a UTF-8 command line may hold.
PRINTABLE_NON_ASCII = st.characters(
    min_codepoint=0x80, exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
)
ANY_NON_ASCII = st.characters(min_codepoint=0x80, exclude_categories=["Cs"])
# Letters that IDNA 2008 takes in any order (no bidi, no joiners, no mapping to nothing).
U_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789äöüéèàçñøåæłžαβγδεабвгдеж中文例テスト"
LDH = string.ascii_lowercase + string.digits


def _atom(non_ascii: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(ATEXT_ASCII) | non_ascii, min_size=1, max_size=8)


def dot_strings(non_ascii: st.SearchStrategy[str] = PRINTABLE_NON_ASCII) -> st.SearchStrategy[str]:
    return st.lists(_atom(non_ascii), min_size=1, max_size=3).map(".".join)


def quoted_contents(
    non_ascii: st.SearchStrategy[str] = PRINTABLE_NON_ASCII,
) -> st.SearchStrategy[str]:
    """Any local part that needs quoting: spaces, '"', '\\', '>', '@', ',', empty ..."""
    ascii_q = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    return st.text(ascii_q | non_ascii, max_size=12)


def local_parts(non_ascii: st.SearchStrategy[str] = PRINTABLE_NON_ASCII) -> st.SearchStrategy[str]:
    return dot_strings(non_ascii) | quoted_contents(non_ascii)


@st.composite
def ldh_labels(draw: st.DrawFn, alphabet: str = LDH, max_size: int = 10) -> str:
    """let-dig [*(let-dig / "-") let-dig]"""
    first = draw(st.sampled_from(alphabet))
    middle = draw(st.text(st.sampled_from(alphabet + "-"), max_size=max_size - 2))
    last = draw(st.text(st.sampled_from(alphabet), max_size=1))
    return first + middle + last if last else first


def _idna_ok(label: str) -> bool:
    try:
        return 0 < len(domain_to_ascii(label)) <= 63
    except ParseError:
        return False


u_labels = ldh_labels(U_LABEL_CHARS, max_size=8).filter(_idna_ok)
ascii_labels = ldh_labels(LDH + string.ascii_uppercase)


def domains() -> st.SearchStrategy[str]:
    return st.lists(ascii_labels | u_labels, min_size=1, max_size=3).map(".".join)


def address_literals() -> st.SearchStrategy[str]:
    dcontent = st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="[\\]"),
        min_size=1,
        max_size=10,
    )
    general = st.builds(
        lambda tag, content: f"[{tag}:{content}]",
        ldh_labels(LDH + "ABCDEFGHXYZ").filter(lambda t: t.upper() != "IPV6"),
        dcontent,
    )
    return st.one_of(
        st.ip_addresses(v=4).map(lambda ip: f"[{ip}]"),
        st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip}]"),
        st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip.exploded.upper()}]"),
        general,
    )


def addresses(
    non_ascii: st.SearchStrategy[str] = PRINTABLE_NON_ASCII,
) -> st.SearchStrategy[Address]:
    return st.builds(Address, local_parts(non_ascii), domains() | address_literals())


def quoted_strings(non_ascii: st.SearchStrategy[str] = ANY_NON_ASCII) -> st.SearchStrategy[str]:
    """A quoted local part as a client may write it: qtext and quoted-pairs of any
    printable ASCII character, needed (``\\"``, ``\\\\``) or not (``\\a``)."""
    qtext = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\')
    pair = st.characters(min_codepoint=0x20, max_codepoint=0x7E).map(lambda c: "\\" + c)
    pieces = st.lists(qtext | non_ascii | pair | st.sampled_from([" ", '\\"', "\\\\"]), max_size=12)
    return pieces.map(lambda p: '"' + "".join(p) + '"')


def mailbox_texts(non_ascii: st.SearchStrategy[str] = ANY_NON_ASCII) -> st.SearchStrategy[str]:
    """``local@domain`` as a client may write it, in any form the grammar allows."""
    local = dot_strings(non_ascii) | quoted_strings(non_ascii)
    return st.builds("{}@{}".format, local, domains() | address_literals())


# ---------------------------------------------------------------------------------------
# Address.parse: valid forms
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("user@example.com", "user", "example.com"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag", "sub.example.co.uk"),
        ("!#$%&'*+-/=?^_`{|}~@example.com", "!#$%&'*+-/=?^_`{|}~", "example.com"),
        ("u@a", "u", "a"),
        ("u@a-b.c-d", "u", "a-b.c-d"),
        ("u@123.example", "u", "123.example"),
        ('"john doe"@example.com', "john doe", "example.com"),
        ('"a>b"@example.com', "a>b", "example.com"),
        ('"a@b,c"@example.com', "a@b,c", "example.com"),
        ('"say \\"hi\\""@example.com', 'say "hi"', "example.com"),
        ('"back\\\\slash"@example.com', "back\\slash", "example.com"),
        ('"\\a\\b"@example.com', "ab", "example.com"),  # any quoted-pair, not only \" and \\
        ('""@example.com', "", "example.com"),
        ('"plain"@example.com', "plain", "example.com"),
        ("用户@例子.广告", "用户", "例子.广告"),  # RFC 6531
        ("δοκιμή@παράδειγμα.δοκιμή", "δοκιμή", "παράδειγμα.δοκιμή"),
        ("jürgen@bücher.example", "jürgen", "bücher.example"),
        ('"ü ü"@example.com', "ü ü", "example.com"),
        ("user@[192.0.2.1]", "user", "[192.0.2.1]"),
        ("user@[0.0.0.0]", "user", "[0.0.0.0]"),
        ("user@[255.255.255.255]", "user", "[255.255.255.255]"),
        ("user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]"),
        ("user@[IPv6:::1]", "user", "[IPv6:::1]"),
        ("user@[ipv6:::ffff:192.0.2.1]", "user", "[ipv6:::ffff:192.0.2.1]"),
        ("user@[x-tag:any+content!]", "user", "[x-tag:any+content!]"),
    ],
)
def test_parse_valid(text: str, local: str, domain: str) -> None:
    address = Address.parse(text)
    assert address.local_part == local
    assert address.domain == domain


def test_domain_length_limits() -> None:
    label63 = "a" * 63
    assert Address.parse(f"u@{label63}.example").domain == f"{label63}.example"
    # RFC 5321 4.5.3.1.2 allows a 255-octet domain, but a path is at most 256 octets with
    # its brackets (4.5.3.1.3): the longest domain an address can have is 252 octets.
    domain252 = ".".join([label63] * 3 + ["a" * 60])
    assert Address.parse(f"u@{domain252}").domain == domain252
    domain255 = ".".join([label63] * 4)
    assert len(domain255) == 255
    for parse in (Address.parse, parse_path):
        with pytest.raises(ParseError, match="path longer than 256 octets"):
            parse(f"u@{domain255}")
    u_label = "ü" * 20  # xn--... well within 63 octets
    assert Address.parse(f"u@{u_label}.de").domain == f"{u_label}.de"


# ---------------------------------------------------------------------------------------
# Address.parse: errors (always 501 5.1.3)
# ---------------------------------------------------------------------------------------

ADDRESS_ERROR = (501, EnhancedStatus(5, 1, 3))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("user", id="no-domain"),
        pytest.param("user@", id="empty-domain"),
        pytest.param("@example.com", id="empty-local"),
        pytest.param("a@b@c", id="two-ats"),
        pytest.param("a b@c", id="space-in-local"),
        pytest.param("a@b c", id="space-in-domain"),
        pytest.param(".a@b", id="leading-dot"),
        pytest.param("a.@b", id="trailing-dot"),
        pytest.param("a..b@c", id="double-dot"),
        pytest.param("a(b)@c", id="parens"),
        pytest.param("a[b]@c", id="brackets"),
        pytest.param("a\\b@c", id="backslash-unquoted"),
        pytest.param('a"b@c', id="stray-quote"),
        pytest.param('"unterminated@c', id="unterminated-quote"),
        pytest.param('"a"b"@c', id="quote-in-quoted"),
        pytest.param('"a\\"@c', id="escaped-closing-quote"),
        pytest.param('"a\tb"@c', id="tab-in-quoted"),
        pytest.param('"a\x7fb"@c', id="del-in-quoted"),
        pytest.param('"a\\\x01"@c', id="control-quoted-pair"),
        pytest.param("a@b.", id="domain-trailing-dot"),
        pytest.param("a@.b", id="domain-leading-dot"),
        pytest.param("a@b..c", id="domain-empty-label"),
        pytest.param("a@-b", id="label-leading-hyphen"),
        pytest.param("a@b-", id="label-trailing-hyphen"),
        pytest.param("a@b_c", id="underscore-in-domain"),
        pytest.param("a@b\x00c", id="nul-in-domain"),
        pytest.param("<a@b>", id="angle-brackets"),
        pytest.param("a@" + "a" * 64 + ".com", id="label-64"),
        pytest.param("a@x." + "a" * 64, id="last-label-64"),
        pytest.param("a@" + ".".join(["a" * 63] * 4) + ".b", id="domain-257"),
        pytest.param("a@" + "ü" * 64 + ".de", id="u-label-too-long"),
        pytest.param("a@\u0080x.de", id="u-label-prohibited-char"),
        pytest.param("a@[]", id="empty-literal"),
        pytest.param("a@[256.1.1.1]", id="ipv4-octet-256"),
        pytest.param("a@[1.2.3.999]", id="ipv4-octet-999"),
        pytest.param("a@[1.2.3]", id="ipv4-three-octets"),
        pytest.param("a@[1.2.3.4.5]", id="ipv4-five-octets"),
        pytest.param("a@[1.2.3.-4]", id="ipv4-negative"),
        pytest.param("a@[IPv6:2001:db8::g]", id="ipv6-bad-hex"),
        pytest.param("a@[IPv6:1:2:3:4:5:6:7:8:9]", id="ipv6-nine-groups"),
        pytest.param("a@[IPv6:]", id="ipv6-empty"),
        pytest.param("a@[:content]", id="general-no-tag"),
        pytest.param("a@[tag:]", id="general-no-content"),
        pytest.param("a@[ta_g:x]", id="general-bad-tag"),
        pytest.param("a@[a[b]", id="literal-bracket"),
        pytest.param("a@[1.2.3.4", id="literal-unclosed"),
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(ParseError) as info:
        Address.parse(text)
    reply = info.value.reply
    assert reply is not None
    assert (reply.code, reply.enhanced) == ADDRESS_ERROR


# ---------------------------------------------------------------------------------------
# Formatting, equality, properties
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "domain", "text"),
    [
        ("user", "example.com", "user@example.com"),
        ("a.b.c", "x", "a.b.c@x"),
        ("john doe", "x", '"john doe"@x'),
        ('say "hi"', "x", '"say \\"hi\\""@x'),
        ("back\\slash", "x", '"back\\\\slash"@x'),
        ("a>b", "x", '"a>b"@x'),
        (".lead", "x", '".lead"@x'),
        ("trail.", "x", '"trail."@x'),
        ("a..b", "x", '"a..b"@x'),
        ("", "x", '""@x'),
        ("jürgen", "bücher.example", "jürgen@bücher.example"),
        ("Postmaster", "", "Postmaster"),
    ],
)
def test_str_quotes_only_when_needed(local: str, domain: str, text: str) -> None:
    address = Address(local, domain)
    assert str(address) == text
    assert address.path() == f"<{text}>"
    assert repr(address) == f"Address({text!r})"


def test_equality_domain_caseless_local_case_sensitive() -> None:
    # RFC 5321 section 2.4
    assert Address("User", "Example.COM") == Address("User", "example.com")
    assert hash(Address("User", "Example.COM")) == hash(Address("User", "example.com"))
    assert Address("User", "example.com") != Address("user", "example.com")
    assert Address.parse('"user"@EXAMPLE.com') == Address.parse("user@example.com")
    assert Address.parse("u@[IPv6:::1]") == Address.parse("u@[ipv6:::1]")
    assert Address("a", "b") != "a@b"
    assert len({Address("a", "B"), Address("a", "b"), Address("A", "b")}) == 2


def test_ordering() -> None:
    items = [Address("b", "x"), Address("a", "Y"), Address("a", "x")]
    assert sorted(items) == [Address("a", "x"), Address("a", "y"), Address("b", "x")]


def test_immutable_and_picklable() -> None:
    address = Address("jürgen", "Bücher.example")
    with pytest.raises(AttributeError):
        address.domain = "evil.example"
    with pytest.raises(AttributeError):
        address.local_part = "root"
    copy = pickle.loads(pickle.dumps(address))
    assert copy == address
    assert (copy.local_part, copy.domain) == ("jürgen", "Bücher.example")


def test_postmaster() -> None:
    pm = Address.postmaster()
    assert (pm.local_part, pm.domain) == ("Postmaster", "")
    assert pm.is_postmaster
    assert str(pm) == "Postmaster"
    assert pm.path() == "<Postmaster>"
    assert Address("postMASTER", "").is_postmaster  # case-insensitive (RFC 5321 4.5.1)
    assert not Address("postmaster", "example.com").is_postmaster
    assert not Address("webmaster", "").is_postmaster


@pytest.mark.parametrize(
    ("address", "utf8"),
    [
        (Address("user", "example.com"), False),
        (Address("jürgen", "example.com"), True),
        (Address("user", "bücher.example"), True),
        (Address("user", "xn--bcher-kva.example"), False),
        (Address("user", "[192.0.2.1]"), False),
    ],
)
def test_is_utf8(address: Address, utf8: bool) -> None:
    assert address.is_utf8 is utf8


def test_ascii_domain_and_to_ascii() -> None:
    address = Address("user", "bücher.example")
    assert address.ascii_domain == "xn--bcher-kva.example"
    ascii_address = address.to_ascii()
    assert (ascii_address.local_part, ascii_address.domain) == ("user", "xn--bcher-kva.example")
    assert not ascii_address.is_utf8
    plain = Address("user", "Example.com")
    assert plain.ascii_domain == "Example.com"
    assert plain.to_ascii() == plain
    with pytest.raises(ParseError, match="UTF-8 local part"):
        Address("jürgen", "example.com").to_ascii()


# ---------------------------------------------------------------------------------------
# parse_path
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<user@example.com>", Address("user", "example.com")),
        ("user@example.com", Address("user", "example.com")),  # bare, from an old client
        ("<@a.example,@b.example:u@c.example>", Address("u", "c.example")),
        ("<@relay.example:u@c.example>", Address("u", "c.example")),
        ('<"a> b\\"c"@example.com>', Address('a> b"c', "example.com")),
        ("<u@[IPv6:2001:db8::1]>", Address("u", "[IPv6:2001:db8::1]")),
        ("<用户@例子.广告>", Address("用户", "例子.广告")),
    ],
)
def test_parse_path(text: str, expected: Address) -> None:
    got = parse_path(text)
    assert got == expected
    assert got is not None
    assert got.local_part == expected.local_part


def test_parse_path_null() -> None:
    assert parse_path("<>", allow_null=True) is None
    with pytest.raises(ParseError) as info:
        parse_path("<>")
    assert info.value.reply is not None
    assert (info.value.reply.code, info.value.reply.enhanced) == ADDRESS_ERROR


@pytest.mark.parametrize("text", ["<Postmaster>", "<postmaster>", "POSTMASTER", "Postmaster"])
def test_parse_path_postmaster(text: str) -> None:
    got = parse_path(text, allow_postmaster=True)
    assert got is not None
    assert got.is_postmaster
    assert got.domain == ""
    with pytest.raises(ParseError):
        parse_path(text)  # only RCPT allows it


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<user@example.com", id="unclosed"),
        pytest.param("user@example.com>", id="unopened"),
        pytest.param("<<user@example.com>>", id="double"),
        pytest.param("<@a.example:>", id="route-without-mailbox"),
        pytest.param("<@a.example>", id="route-without-colon"),
        pytest.param("<@:u@c.example>", id="empty-route-domain"),
        pytest.param("<@a.example;@b.example:u@c.example>", id="route-bad-separator"),
        pytest.param("<@a.example,b.example:u@c.example>", id="route-missing-at"),
        pytest.param("<@[1.2.3.4]:u@c.example>", id="route-literal"),
        pytest.param("< user@example.com>", id="space-inside"),
        pytest.param("<user@example.com >", id="space-before-close"),
        pytest.param("<Postmaster@>", id="postmaster-empty-domain"),
    ],
)
def test_parse_path_invalid(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_path(text, allow_null=True, allow_postmaster=True)
    assert info.value.reply is not None
    assert (info.value.reply.code, info.value.reply.enhanced) == ADDRESS_ERROR


def test_parse_path_length_limit() -> None:
    # RFC 5321 4.5.3.1.3: 256 octets "including the punctuation" (the angle brackets);
    # counted in octets, so UTF-8 counts more
    domain = "example.com"
    fits = "a" * (MAX_PATH - 2 - len(domain) - 1) + "@" + domain
    assert parse_path(f"<{fits}>") == Address.parse(fits)
    for too_long in ("a" + fits, "é" * 130 + "@" + domain):
        with pytest.raises(ParseError) as info:
            parse_path(f"<{too_long}>")
        assert info.value.reply is not None
        assert (info.value.reply.code, info.value.reply.enhanced) == ADDRESS_ERROR


# ---------------------------------------------------------------------------------------
# Sender
# ---------------------------------------------------------------------------------------


def test_sender_null() -> None:
    assert Sender.NULL.is_null
    assert Sender.NULL.address is None
    assert Sender() == Sender.NULL
    assert str(Sender.NULL) == Sender.NULL.path() == "<>"
    assert Sender.parse("<>") is Sender.NULL
    assert Sender.parse("  <>  ") is Sender.NULL
    assert Sender.of(None) is Sender.NULL


def test_sender_address() -> None:
    sender = Sender.parse("<user@Example.com>")
    assert not sender.is_null
    assert sender.address == Address("user", "example.com")
    assert str(sender) == sender.path() == "<user@Example.com>"
    assert Sender.parse(" user@example.com ") == sender  # bare and padded
    assert Sender.parse("<@relay.example:user@example.com>") == sender
    assert hash(Sender.parse("<user@example.com>")) == hash(sender)


def test_sender_of() -> None:
    address = Address("a", "b.example")
    sender = Sender(address)
    assert Sender.of(sender) is sender
    assert Sender.of(address) == sender
    assert Sender.of("<a@b.example>") == sender
    assert Sender.of("a@b.example") == sender


@pytest.mark.parametrize("text", ["", "<", "<a@b", "Postmaster", "<Postmaster>", "a b"])
def test_sender_parse_invalid(text: str) -> None:
    with pytest.raises(ParseError):
        Sender.parse(text)


def test_sender_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Sender.NULL.address = Address("a", "b")  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Hypothesis round trips
# ---------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(addresses(ANY_NON_ASCII))
def test_round_trip_str_parse(address: Address) -> None:
    text = str(address)
    parsed = Address.parse(text)
    assert parsed == address
    # Exact, not just equal: the local part's value and the domain as written survive.
    assert parsed.local_part == address.local_part
    assert parsed.domain == address.domain
    assert str(parsed) == text


@settings(max_examples=300, deadline=None)
@given(mailbox_texts())
def test_whatever_a_parser_accepts_formats_and_parses_back_equal(text: str) -> None:
    # Every way in (a bare mailbox, a path, a sender, RCPT's parser) gives the same
    # address, and every way of writing it (str, path) reads back exactly, through every
    # way in again: the spool stores str(address) and the envelope reads it with parse_path.
    address = Address.parse(text)
    assert parse_path(text) == address
    assert parse_path(f"<{text}>", allow_postmaster=True) == address
    assert Sender.parse(text).address == address
    assert match_path(f"{text} NOTIFY=NEVER", allow_postmaster=True) == (address, len(text))
    formatted = str(address)
    assert len(formatted) <= len(text)
    for again in (
        Address.parse(formatted),
        parse_path(formatted, allow_postmaster=True),
        parse_path(address.path()),
        Sender.parse(formatted).address,
        Sender.parse(Sender(address).path()).address,
    ):
        assert again is not None
        assert (again.local_part, again.domain) == (address.local_part, address.domain)
        assert str(again) == formatted


@pytest.mark.parametrize(
    ("text", "local", "formatted"),
    [
        ('"john smith"@example.net', "john smith", '"john smith"@example.net'),
        ('"a\\"b\\\\c"@example.net', 'a"b\\c', '"a\\"b\\\\c"@example.net'),
        ('"\\j\\o\\e"@example.net', "joe", "joe@example.net"),
        ('" a  b "@example.net', " a  b ", '" a  b "@example.net'),
        ('"jürgen müller"@bücher.example', "jürgen müller", '"jürgen müller"@bücher.example'),
        ('"a@b>c"@[192.0.2.1]', "a@b>c", '"a@b>c"@[192.0.2.1]'),
        ('" "@[IPv6:2001:db8::1]', " ", '" "@[IPv6:2001:db8::1]'),
    ],
)
def test_bare_quoted_local_parts_with_spaces(text: str, local: str, formatted: str) -> None:
    # A bare mailbox ends where the grammar ends, not at the first space.
    address = parse_path(text)
    assert address is not None
    assert address.local_part == local
    assert str(address) == formatted
    assert parse_path(formatted) == address
    assert match_path(text + " SIZE=10") == (address, len(text))
    with pytest.raises(ParseError):
        parse_path(text + ">")  # a bare mailbox is followed by a space or nothing


def test_surrogates_are_refused() -> None:
    # No UTF-8 text holds one (the server decodes strictly); the spool could not store it.
    for text in ("\udc80@example.net", '"\udc80"@example.net', "u@\udc80.example"):
        with pytest.raises(ParseError):
            Address.parse(text)


@settings(max_examples=150, deadline=None)
@given(addresses())
def test_round_trip_path(address: Address) -> None:
    assert parse_path(address.path()) == address
    assert Sender.parse(address.path()) == Sender(address)
    route = "<@relay.example,@x.example:"
    assert parse_path(route + address.path()[1:]) == address


@settings(max_examples=100, deadline=None)
@given(dot_strings(ANY_NON_ASCII), domains())
def test_dot_string_is_never_quoted(local: str, domain: str) -> None:
    assert str(Address(local, domain)) == f"{local}@{domain}"


@settings(max_examples=100, deadline=None)
@given(domains())
def test_generated_domains_are_valid_idna(domain: str) -> None:
    address = Address.parse(f"u@{domain}")
    ascii_domain = address.ascii_domain
    assert ascii_domain.isascii()
    expected = domain if domain.isascii() else idna.encode(domain, uts46=True).decode("ascii")
    assert ascii_domain == expected
    assert address.is_utf8 is (not domain.isascii())
