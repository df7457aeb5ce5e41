"""async_smtp's address forms behind an option (F8, F10); strict RFC 5321 stays the default."""

from __future__ import annotations

import pytest

from smtpx.errors import ParseError
from smtpx.protocol import Address, Sender
from smtpx.protocol.commands import Mail, Rcpt, parse_command
from smtpx.protocol.lenient import AddressGrammar, parse_recipient, parse_sender

LENIENT = AddressGrammar(lenient=True)
DOMAIN = AddressGrammar(default_domain="example.com")


@pytest.mark.parametrize(
    "text", ["<>", '"Mailer Daemon" <>', "Mailer Daemon <>", '  "a \\" b" <>  ', "MAILER-DAEMON<>"]
)
def test_a_display_name_before_the_null_path_is_the_null_sender(text: str) -> None:
    assert Sender.parse(text) is Sender.NULL
    assert parse_sender(text, LENIENT) is Sender.NULL


@pytest.mark.parametrize("text", ["a@b <>", '"x" <> junk', "<><>", "x, y <>"])
def test_what_is_not_a_named_null_path_is_refused(text: str) -> None:
    with pytest.raises(ParseError):
        Sender.parse(text)


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("Joe <joe@a.example>", "joe", "a.example"),
        ('"Joe, Jr." <joe@a.example>', "joe", "a.example"),
        ("'joe@a.example'", "joe", "a.example"),
        ('"joe@a.example"', "joe", "a.example"),
        ("<jo(e)@a.example>", "jo(e)", "a.example"),
        ("jo\\ e@a.example", "jo e", "a.example"),
    ],
)
def test_lenient_forms(text: str, local: str, domain: str) -> None:
    address = parse_recipient(text, LENIENT)
    assert (address.local_part, address.domain) == (local, domain)
    # What the spool stores reads back strictly: nothing lenient is needed later.
    assert Address.parse(str(address)) == address
    with pytest.raises(ParseError):
        parse_recipient(text)


def test_default_domain_fills_in_a_missing_domain_only() -> None:
    assert parse_recipient("<joe>", DOMAIN) == Address("joe", "example.com")
    assert parse_recipient("joe", DOMAIN) == Address("joe", "example.com")
    assert parse_sender("<joe>", DOMAIN) == Sender(Address("joe", "example.com"))
    assert parse_recipient("<joe@other.example>", DOMAIN) == Address("joe", "other.example")
    assert parse_recipient("<Postmaster>", DOMAIN).is_postmaster
    # default_domain alone adds no other form.
    with pytest.raises(ParseError):
        parse_recipient("Joe <joe>", DOMAIN)
    both = AddressGrammar(lenient=True, default_domain="example.com")
    assert parse_recipient("Joe <jo(e)>", both) == Address("jo(e)", "example.com")


def test_without_a_default_domain_a_domainless_address_says_so() -> None:
    with pytest.raises(ParseError, match="no domain") as info:
        parse_recipient("<joe>", LENIENT)
    assert info.value.reply is not None and info.value.reply.code == 501


@pytest.mark.parametrize(
    "text", ["<joe@bad_domain>", "<jo\x01e@a.example>", "Joe <a@b> x", "<@a.example>", "<>x"]
)
def test_lenient_still_refuses(text: str) -> None:
    with pytest.raises(ParseError):
        parse_recipient(text, LENIENT)


def test_a_bad_default_domain_is_refused() -> None:
    with pytest.raises(ParseError):
        AddressGrammar(default_domain="not a domain")


def test_commands_are_strict_unless_a_grammar_widens_them() -> None:
    with pytest.raises(ParseError) as info:
        parse_command('MAIL FROM:"Mailer Daemon" <>')
    assert info.value.reply is not None and info.value.reply.code == 501
    mail = parse_command('MAIL FROM:"Mailer Daemon" <> BODY=8BITMIME', LENIENT)
    assert isinstance(mail, Mail) and mail.sender.is_null and mail.params.body == "8BITMIME"
    rcpt = parse_command("RCPT TO: Joe <joe@a.example>", LENIENT)
    assert isinstance(rcpt, Rcpt) and rcpt.recipient == Address("joe", "a.example")
    rcpt = parse_command("RCPT TO:<joe>", DOMAIN)
    assert isinstance(rcpt, Rcpt) and str(rcpt) == "RCPT TO:<joe@example.com>"
    # A null recipient stays refused whatever the grammar.
    with pytest.raises(ParseError):
        parse_command("RCPT TO:Joe <>", LENIENT)
