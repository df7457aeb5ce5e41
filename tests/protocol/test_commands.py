"""SMTP commands (RFC 5321 4.1.1, RFC 3207 STARTTLS, RFC 4954 AUTH, RFC 3030 BDAT).

parse_command reads what real clients send; Command.to_bytes writes the RFC 5321 form.
Errors carry the reply to send: unknown verb 500 5.5.1, bad arguments 501 5.5.4, bad
address 501 5.1.3. Quirks of async_smtp's codec that smtpx deliberately fixes (reference
F14): lower-case ``auth`` is accepted, a bare ``HELO`` is a 501 (not 500), ``DATA `` with a
trailing space is DATA, and ``RCPT TO:Bye World!~`` is refused with a 501.
"""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.errors import ParseError
from smtpx.protocol import commands
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.commands import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
    parse_command,
)
from smtpx.protocol.params import MailParams, RcptParams
from smtpx.protocol.replies import EnhancedStatus

from .test_addresses import address_literals, addresses, domains
from .test_params import mail_params, rcpt_params

UNKNOWN = (500, EnhancedStatus(5, 5, 1))
SYNTAX = (501, EnhancedStatus(5, 5, 4))
ADDRESS = (501, EnhancedStatus(5, 1, 3))


def parse_error(line: str | bytes) -> tuple[int, EnhancedStatus | None]:
    with pytest.raises(ParseError) as info:
        parse_command(line)
    reply = info.value.reply
    assert reply is not None, "a command error must carry the reply to send"
    return reply.code, reply.enhanced


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------

A = Address("user", "example.com")


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (Helo("client.example"), b"HELO client.example"),
        (Ehlo("[192.0.2.1]"), b"EHLO [192.0.2.1]"),
        (Mail(Sender(A)), b"MAIL FROM:<user@example.com>"),
        (Mail(Sender.NULL), b"MAIL FROM:<>"),
        (Mail(Sender.NULL, MailParams(size=123)), b"MAIL FROM:<> SIZE=123"),
        (
            Mail(Sender(A), MailParams(size=1, body="8BITMIME", smtputf8=True)),
            b"MAIL FROM:<user@example.com> SIZE=1 BODY=8BITMIME SMTPUTF8",
        ),
        (Rcpt(A), b"RCPT TO:<user@example.com>"),
        (Rcpt(Address.postmaster()), b"RCPT TO:<Postmaster>"),
        (
            Rcpt(A, RcptParams(notify=("NEVER",))),
            b"RCPT TO:<user@example.com> NOTIFY=NEVER",
        ),
        (Rcpt(Address('a "b"', "x.example")), b'RCPT TO:<"a \\"b\\""@x.example>'),
        (Rcpt(Address("jürgen", "bücher.example")), "RCPT TO:<jürgen@bücher.example>".encode()),
        (Data(), b"DATA"),
        (Bdat(100, last=True), b"BDAT 100 LAST"),
        (Bdat(0), b"BDAT 0"),
        (Rset(), b"RSET"),
        (Noop(), b"NOOP"),
        (Noop("anything at all"), b"NOOP anything at all"),
        (Quit(), b"QUIT"),
        (Vrfy("postmaster"), b"VRFY postmaster"),
        (Expn("staff"), b"EXPN staff"),
        (Help(), b"HELP"),
        (Help("MAIL"), b"HELP MAIL"),
        (StartTls(), b"STARTTLS"),
        (Auth("PLAIN"), b"AUTH PLAIN"),
        (Auth("PLAIN", "dGVzdA=="), b"AUTH PLAIN dGVzdA=="),
        (Auth("PLAIN", "="), b"AUTH PLAIN ="),
    ],
)
def test_to_bytes(command: Command, wire: bytes) -> None:
    assert command.to_bytes() == wire + b"\r\n"
    assert str(command) == wire.decode()
    assert parse_command(wire) == command


@pytest.mark.parametrize(
    ("command", "argument"),
    [
        (Helo("h.example"), "h.example"),
        (Mail(Sender.NULL, MailParams(size=5)), "FROM:<> SIZE=5"),
        (Rcpt(A), "TO:<user@example.com>"),
        (Data(), ""),
        (Bdat(7, last=True), "7 LAST"),
        (Noop(), ""),
        (Auth("LOGIN", "dXNlcg=="), "LOGIN dXNlcg=="),
    ],
)
def test_argument(command: Command, argument: str) -> None:
    assert command.argument() == argument
    assert str(command) == f"{command.verb} {argument}".rstrip()


def test_auth_repr_hides_the_initial_response() -> None:
    secret = "AGpvZQBzM2NyM3Q="
    shown = repr(Auth("PLAIN", secret))
    assert secret not in shown
    assert "PLAIN" in shown
    assert "<hidden>" in shown
    assert "None" in repr(Auth("PLAIN"))


def test_commands_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Helo("a").domain = "b"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Parsing: the forms real clients send
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("MAIL FROM:<a@b.example>", Mail(Sender(Address("a", "b.example")))),
        ("MAIL FROM: <a@b.example>", Mail(Sender(Address("a", "b.example")))),
        ("MAIL FROM:   <a@b.example>", Mail(Sender(Address("a", "b.example")))),
        ("mail from:<a@b.example>", Mail(Sender(Address("a", "b.example")))),
        ("Mail From:<a@b.example>", Mail(Sender(Address("a", "b.example")))),
        ("MAIL  FROM:<a@b.example>", Mail(Sender(Address("a", "b.example")))),
        ("MAIL FROM:a@b.example", Mail(Sender(Address("a", "b.example")))),
        ("MAIL FROM:<a@b.example>   ", Mail(Sender(Address("a", "b.example")))),
        ("MAIL FROM:<a@b.example> \t", Mail(Sender(Address("a", "b.example")))),
        ("MAIL FROM:<>", Mail(Sender.NULL)),
        ("MAIL FROM: <>", Mail(Sender.NULL)),
        ("MAIL FROM:<> SIZE=0", Mail(Sender.NULL, MailParams(size=0))),
        (
            "MAIL FROM:<a@b.example>  SIZE=1000  BODY=8BITMIME ",
            Mail(Sender(Address("a", "b.example")), MailParams(size=1000, body="8BITMIME")),
        ),
        (
            "MAIL FROM:a@b.example SIZE=1000",
            Mail(Sender(Address("a", "b.example")), MailParams(size=1000)),
        ),
        (
            "MAIL FROM:<@a.example,@b.example:u@c.example>",
            Mail(Sender(Address("u", "c.example"))),
        ),
        (
            'MAIL FROM:<"a> b\\"c"@example.com> SIZE=9',
            Mail(Sender(Address('a> b"c', "example.com")), MailParams(size=9)),
        ),
        ('MAIL FROM:<"john doe"@example.com>', Mail(Sender(Address("john doe", "example.com")))),
        ('MAIL FROM:<"<>"@example.com>', Mail(Sender(Address("<>", "example.com")))),
        ("MAIL FROM:<u@[192.0.2.1]>", Mail(Sender(Address("u", "[192.0.2.1]")))),
        ("MAIL FROM:<u@[IPv6:2001:db8::1]>", Mail(Sender(Address("u", "[IPv6:2001:db8::1]")))),
        ("MAIL FROM:<u@[x-tag:abc]>", Mail(Sender(Address("u", "[x-tag:abc]")))),
        (
            "MAIL FROM:<用户@例子.广告> SMTPUTF8",
            Mail(Sender(Address("用户", "例子.广告")), MailParams(smtputf8=True)),
        ),
        (
            "MAIL FROM:<foo@bar.com> FOOBAR=foobar",  # kept for the server to refuse with 555
            Mail(Sender(Address("foo", "bar.com")), MailParams(extra=(("FOOBAR", "foobar"),))),
        ),
        ("RCPT TO:<Postmaster>", Rcpt(Address.postmaster())),
        ("RCPT TO:<postmaster>", Rcpt(Address("postmaster", ""))),
        ("rcpt to: <u@x.example>", Rcpt(Address("u", "x.example"))),
        ("RCPT TO:u@x.example", Rcpt(Address("u", "x.example"))),
        (
            "RCPT TO:<@a.example,@b.example:u@c.example> NOTIFY=SUCCESS,FAILURE",
            Rcpt(Address("u", "c.example"), RcptParams(notify=("SUCCESS", "FAILURE"))),
        ),
        (
            "RCPT TO:<u@x.example> ORCPT=rfc822;u+2Bx@x.example",
            Rcpt(Address("u", "x.example"), RcptParams(orcpt=("rfc822", "u+x@x.example"))),
        ),
        ("HELO client.example", Helo("client.example")),
        ("helo client.example  ", Helo("client.example")),
        ("EHLO [192.0.2.1]", Ehlo("[192.0.2.1]")),
        ("ehlo   client.example", Ehlo("client.example")),
        ("DATA", Data()),
        ("data", Data()),
        ("DATA ", Data()),  # async_smtp quirk fixed: trailing space
        ("RSET", Rset()),
        ("QUIT", Quit()),
        ("quit", Quit()),
        ("STARTTLS", StartTls()),
        ("starttls", StartTls()),
        ("NOOP", Noop()),
        ("NOOP anything", Noop("anything")),
        ("noop with several words", Noop("with several words")),
        ("HELP", Help()),
        ("HELP topic", Help("topic")),
        ("VRFY user", Vrfy("user")),
        ("VRFY John Smith", Vrfy("John Smith")),
        ("EXPN list", Expn("list")),
        ("BDAT 100 LAST", Bdat(100, last=True)),
        ("bdat 0 last", Bdat(0, last=True)),
        ("BDAT 86", Bdat(86)),
        ("BDAT 1 Last", Bdat(1, last=True)),
        ("BDAT " + "9" * 20, Bdat(10**20 - 1)),
        ("AUTH PLAIN", Auth("PLAIN")),
        ("AUTH PLAIN dGVzdA==", Auth("PLAIN", "dGVzdA==")),
        ("AUTH PLAIN =", Auth("PLAIN", "=")),  # RFC 4954 section 4: empty initial response
        ("auth plain dGVzdA==", Auth("PLAIN", "dGVzdA==")),  # async_smtp quirk fixed
        ("Auth login", Auth("LOGIN")),
        ("AUTH CRAM-MD5", Auth("CRAM-MD5")),
        ("AUTH X_OAUTH-2", Auth("X_OAUTH-2")),
        ("AUTH " + "A" * 20, Auth("A" * 20)),
    ],
)
def test_parse(line: str, expected: Command) -> None:
    got = parse_command(line)
    assert got == expected
    assert type(got) is type(expected)
    assert parse_command(line.encode()) == expected


def test_parse_mail_keeps_the_address_exactly() -> None:
    got = parse_command('MAIL FROM:<"a> b\\"c"@Example.COM>')
    assert isinstance(got, Mail)
    assert got.sender.address is not None
    assert got.sender.address.local_part == 'a> b"c'
    assert got.sender.address.domain == "Example.COM"
    assert str(got) == 'MAIL FROM:<"a> b\\"c"@Example.COM>'


def test_parse_auth_keeps_the_initial_response_case() -> None:
    got = parse_command("auth plain AGpvZQBzM2NyM3Q=")
    assert isinstance(got, Auth)
    assert (got.mechanism, got.initial_response) == ("PLAIN", "AGpvZQBzM2NyM3Q=")


# ---------------------------------------------------------------------------------------
# Parsing: errors, with the exact reply
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # unknown verbs
        pytest.param("XYZZY", UNKNOWN, id="unknown-verb"),
        pytest.param("XYZZY with args", UNKNOWN, id="unknown-verb-args"),
        pytest.param("", UNKNOWN, id="empty-line"),
        pytest.param("   ", UNKNOWN, id="blank-line"),
        pytest.param(" MAIL FROM:<a@b.example>", UNKNOWN, id="leading-space"),
        pytest.param("MAILFROM:<a@b.example>", UNKNOWN, id="verb-glued"),
        pytest.param("MAIL:<a@b.example>", UNKNOWN, id="verb-colon"),
        pytest.param("NO\x00OP", UNKNOWN, id="nul-in-verb"),
        pytest.param("TURN", UNKNOWN, id="turn"),
        pytest.param("HELOX client.example", UNKNOWN, id="verb-prefix-only"),
        pytest.param("ÉHLO x", UNKNOWN, id="non-ascii-verb"),
        # HELO / EHLO
        pytest.param("HELO", SYNTAX, id="helo-without-argument"),
        pytest.param("EHLO", SYNTAX, id="ehlo-without-argument"),
        pytest.param("EHLO   ", SYNTAX, id="ehlo-blank-argument"),
        pytest.param("EHLO a.example b.example", SYNTAX, id="ehlo-two-arguments"),
        # commands without arguments
        pytest.param("DATA now", SYNTAX, id="data-with-argument"),
        pytest.param("RSET x", SYNTAX, id="rset-with-argument"),
        pytest.param("QUIT now", SYNTAX, id="quit-with-argument"),
        pytest.param("STARTTLS x", SYNTAX, id="starttls-with-argument"),
        pytest.param("VRFY", SYNTAX, id="vrfy-without-argument"),
        pytest.param("EXPN", SYNTAX, id="expn-without-argument"),
        # MAIL / RCPT shape
        pytest.param("MAIL", SYNTAX, id="mail-without-from"),
        pytest.param("MAIL TO:<a@b.example>", SYNTAX, id="mail-to"),
        pytest.param("MAIL FROM <a@b.example>", SYNTAX, id="mail-from-no-colon"),
        pytest.param("MAIL FROM :<a@b.example>", SYNTAX, id="mail-from-space-colon"),
        pytest.param("RCPT FROM:<a@b.example>", SYNTAX, id="rcpt-from"),
        pytest.param("RCPT", SYNTAX, id="rcpt-without-to"),
        pytest.param("MAIL FROM:", ADDRESS, id="mail-without-address"),
        pytest.param("MAIL FROM:   ", ADDRESS, id="mail-blank-address"),
        pytest.param("RCPT TO:", ADDRESS, id="rcpt-without-address"),
        # paths
        pytest.param("RCPT TO:Bye World!~", ADDRESS, id="rcpt-bye-world"),
        pytest.param("RCPT TO:<>", ADDRESS, id="rcpt-null"),
        pytest.param("MAIL FROM:<Postmaster>", ADDRESS, id="mail-postmaster-no-domain"),
        pytest.param("MAIL FROM:<a@b.example", ADDRESS, id="unclosed-bracket"),
        pytest.param("MAIL FROM:a@b.example>", ADDRESS, id="unopened-bracket"),
        pytest.param("MAIL FROM:<<a@b.example>>", ADDRESS, id="double-brackets"),
        pytest.param('MAIL FROM:<"a>b@c.example>', ADDRESS, id="unclosed-quote"),
        pytest.param("MAIL FROM:<a@b.example>junk", ADDRESS, id="junk-after-path"),
        pytest.param("MAIL FROM:<a@b.example>SIZE=1", ADDRESS, id="param-glued-to-path"),
        pytest.param("MAIL FROM:<a b@c.example>", ADDRESS, id="space-in-local"),
        pytest.param("MAIL FROM:<a..b@c.example>", ADDRESS, id="double-dot"),
        pytest.param("MAIL FROM:<a@>", ADDRESS, id="no-domain"),
        pytest.param("MAIL FROM:<@a.example:>", ADDRESS, id="route-only"),
        pytest.param("MAIL FROM:<@a.example;u@c.example>", ADDRESS, id="bad-route"),
        pytest.param("MAIL FROM:<a@" + "l" * 64 + ".example>", ADDRESS, id="domain-label-64"),
        pytest.param("RCPT TO:<a@[256.0.0.1]>", ADDRESS, id="ipv4-literal-out-of-range"),
        pytest.param("RCPT TO:<a@[1.2.3]>", ADDRESS, id="ipv4-literal-short"),
        pytest.param("RCPT TO:<a@[IPv6:1::2::3]>", ADDRESS, id="ipv6-literal-bad"),
        pytest.param("MAIL FROM:<" + "a" * 250 + "@b.example>", ADDRESS, id="path-too-long"),
        # parameters
        pytest.param("MAIL FROM:<> <>", SYNTAX, id="second-path"),  # reference F9 vector
        pytest.param("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", SYNTAX, id="duplicate-param"),
        pytest.param("MAIL FROM:<a@b.example> size=1 SIZE=1", SYNTAX, id="duplicate-any-case"),
        pytest.param("MAIL FROM:<a@b.example> SIZE=big", SYNTAX, id="size-not-a-number"),
        pytest.param("MAIL FROM:<a@b.example> SIZE", SYNTAX, id="size-without-value"),
        pytest.param("MAIL FROM:<a@b.example> BODY=9BIT", SYNTAX, id="bad-body"),
        pytest.param("MAIL FROM:<a@b.example> RET=ALL", SYNTAX, id="bad-ret"),
        pytest.param("MAIL FROM:<a@b.example> ENVID=" + "e" * 101, SYNTAX, id="envid-over-100"),
        pytest.param("RCPT TO:<a@b.example> NOTIFY=NEVER,DELAY", SYNTAX, id="notify-never-combo"),
        pytest.param("RCPT TO:<a@b.example> NOTIFY=SOMETIMES", SYNTAX, id="notify-unknown"),
        pytest.param("RCPT TO:<a@b.example> ORCPT=rfc822", SYNTAX, id="orcpt-no-semicolon"),
        pytest.param("RCPT TO:<a@b.example> ORCPT=rfc822;a+zz", SYNTAX, id="orcpt-bad-xtext"),
        pytest.param("RCPT TO:<a@b.example> X=", SYNTAX, id="empty-value"),
        # BDAT
        pytest.param("BDAT", SYNTAX, id="bdat-without-size"),
        pytest.param("BDAT LAST", SYNTAX, id="bdat-last-only"),
        pytest.param("BDAT -1", SYNTAX, id="bdat-negative"),
        pytest.param("BDAT 1.5", SYNTAX, id="bdat-decimal"),
        pytest.param("BDAT 10 MORE", SYNTAX, id="bdat-not-last"),
        pytest.param("BDAT 10 LAST x", SYNTAX, id="bdat-three-words"),
        pytest.param("BDAT " + "9" * 21, SYNTAX, id="bdat-21-digits"),
        # AUTH
        pytest.param("AUTH", SYNTAX, id="auth-without-mechanism"),
        pytest.param("AUTH PLAIN a b", SYNTAX, id="auth-two-responses"),
        pytest.param("AUTH PL@IN", SYNTAX, id="auth-bad-mechanism-char"),
        pytest.param("AUTH PLÄIN", SYNTAX, id="auth-non-ascii-mechanism"),
        pytest.param("AUTH " + "A" * 21, SYNTAX, id="auth-mechanism-21-chars"),
    ],
)
def test_parse_errors(line: str, expected: tuple[int, EnhancedStatus]) -> None:
    assert parse_error(line) == expected
    assert parse_error(line.encode()) == expected


def test_unknown_verb_reply_names_the_verb_safely() -> None:
    with pytest.raises(ParseError) as info:
        parse_command("XYZZY hello")
    assert info.value.reply is not None
    assert "XYZZY" in info.value.reply.text
    # A long or non-ASCII verb is cut and made ASCII before it goes back to the client.
    with pytest.raises(ParseError) as info:
        parse_command("É" * 100)
    assert info.value.reply is not None
    assert info.value.reply.text.isascii()
    assert len(info.value.reply.text) < 60


NON_UTF8_LINES = [b"MAIL FROM:<\xff@b.example>", b"NOOP \xc3\x28", b"HELO \xed\xa0\x80"]
CONTROL_LINES = [
    "NOOP a\x00b",
    "MAIL FROM:<a@b.example>\x1b[31m",
    "HELO a\x7fb",
    "RCPT TO:<a@b.example>\rDATA",
    "EHLO a\nb",
    "MAIL FROM:\t<a@b.example>",
    "VRFY a\u200bb",  # zero-width space (Cf)
]


@pytest.mark.parametrize("line", NON_UTF8_LINES + [s.encode() for s in CONTROL_LINES])
def test_non_utf8_and_control_characters_are_refused(line: bytes) -> None:
    code, enhanced = parse_error(line)
    assert code in (500, 501)
    assert enhanced is not None
    assert (enhanced.klass, enhanced.subject) == (5, 5)


@pytest.mark.parametrize("line", NON_UTF8_LINES + [s.encode() for s in CONTROL_LINES])
def test_non_utf8_and_control_characters_are_500(line: bytes) -> None:
    assert parse_error(line)[0] == 500


@pytest.mark.parametrize("size", ["²", "١٢٣", "１２"])
def test_bdat_ascii_digits_only(size: str) -> None:
    assert parse_error(f"BDAT {size}") == SYNTAX


def test_mail_size_unicode_digit() -> None:
    assert parse_error("MAIL FROM:<a@b.example> SIZE=²") == SYNTAX


@pytest.mark.parametrize("param", ["ENVID=+ZZ", "AUTH=+4", "AUTH=+FF"])
def test_mail_bad_xtext_is_501(param: str) -> None:
    assert parse_error(f"MAIL FROM:<a@b.example> {param}") == SYNTAX


@pytest.mark.parametrize("param", ["ENVID=+ZZ", "AUTH=+4", "AUTH=+FF"])
def test_mail_bad_xtext_is_refused(param: str) -> None:
    with pytest.raises(ParseError, match="xtext"):
        parse_command(f"MAIL FROM:<a@b.example> {param}")


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("MAIL FROM:<a@[x-tag:>]>", Address("a", "[x-tag:>]")),
        ('MAIL FROM:<a@[x-tag:"]>', Address("a", '[x-tag:"]')),
        ('MAIL FROM:<""@[x-tag:"]> SIZE=1', Address("", '[x-tag:"]')),
        ("RCPT TO:<a@[x-tag:a>b]> NOTIFY=NEVER", Address("a", "[x-tag:a>b]")),
    ],
)
def test_general_literal_with_quote_or_angle_in_path(line: str, address: Address) -> None:
    command = parse_command(line)
    assert isinstance(command, (Mail, Rcpt))
    got = command.sender.address if isinstance(command, Mail) else command.recipient
    assert got == address
    assert parse_command(command.to_bytes()[:-2]) == command


# ---------------------------------------------------------------------------------------
# Hypothesis: every command type round-trips through its wire form
# ---------------------------------------------------------------------------------------

PRINTABLE = st.characters(
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"), include_characters=" "
)
words = st.text(PRINTABLE, min_size=1, max_size=30).map(lambda s: s.strip(" ")).filter(bool)
tokens = st.text(PRINTABLE.filter(lambda c: c != " "), min_size=1, max_size=30)


def _no_literal_bug(address: Address) -> bool:
    # Known bug (see test_general_literal_with_quote_or_angle_in_path): keep the round trip
    # clear of it so that it can find others.
    return not (address.domain.startswith("[") and ('"' in address.domain or ">" in address.domain))


paths = addresses().filter(_no_literal_bug)
recipients = paths | st.sampled_from([Address.postmaster(), Address("postmaster", "")])

STRATEGIES: dict[type[Command], st.SearchStrategy[Command]] = {
    Helo: st.builds(Helo, domains() | address_literals()),
    Ehlo: st.builds(Ehlo, domains() | address_literals()),
    Lhlo: st.builds(Lhlo, domains() | address_literals()),
    Mail: st.builds(Mail, st.just(Sender.NULL) | paths.map(Sender), mail_params()),
    Rcpt: st.builds(Rcpt, recipients, rcpt_params()),
    Data: st.just(Data()),
    Bdat: st.builds(Bdat, st.integers(0, 10**20 - 1), st.booleans()),
    Rset: st.just(Rset()),
    Noop: st.builds(Noop, st.just("") | words),
    Quit: st.just(Quit()),
    Vrfy: st.builds(Vrfy, words),
    Expn: st.builds(Expn, words),
    Help: st.builds(Help, st.just("") | words),
    StartTls: st.just(StartTls()),
    Auth: st.builds(
        Auth,
        st.from_regex(r"[A-Z0-9_-]{1,20}", fullmatch=True),
        st.none() | st.just("=") | tokens,
    ),
}


def test_every_command_type_has_a_strategy() -> None:
    defined = {
        cls
        for _, cls in inspect.getmembers(commands, inspect.isclass)
        if issubclass(cls, Command) and cls is not Command and cls.__module__ == commands.__name__
    }
    assert defined == set(STRATEGIES)
    # and every one of them is reachable from parse_command
    assert {cls.verb for cls in defined} == set(commands.VERBS)


def _lower_verb(command: Command) -> str:
    text = str(command)
    head = {Mail: len("MAIL FROM:"), Rcpt: len("RCPT TO:")}.get(type(command), len(command.verb))
    return text[:head].lower() + text[head:]


@settings(max_examples=40, deadline=None)
@given(st.data())
@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda cls: cls.__name__)
def test_round_trip(cls: type[Command], data: st.DataObject) -> None:
    command = data.draw(STRATEGIES[cls])
    wire = command.to_bytes()
    assert wire.endswith(b"\r\n")
    assert b"\r" not in wire[:-2]
    assert b"\n" not in wire[:-2]
    line = wire[:-2]
    assert parse_command(line) == command
    assert parse_command(line.decode()) == command
    assert parse_command(_lower_verb(command)) == command
    assert parse_command(str(command) + "  ") == command  # trailing blanks


@settings(max_examples=150, deadline=None)
@given(st.one_of(*STRATEGIES.values()))
def test_round_trip_any(command: Command) -> None:
    parsed = parse_command(command.to_bytes()[:-2])
    assert parsed == command
    assert parsed.to_bytes() == command.to_bytes()


@settings(max_examples=100, deadline=None)
@given(st.one_of(STRATEGIES[Mail], STRATEGIES[Rcpt]))
def test_round_trip_with_space_after_colon(command: Command) -> None:
    # async_smtp's client writes "MAIL FROM: <x>" (reference section 6, quirk 1)
    head = "MAIL FROM:" if isinstance(command, Mail) else "RCPT TO:"
    text = str(command)
    assert parse_command(head + " " + text[len(head) :]) == command
