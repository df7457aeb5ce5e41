"""Credentials and the choice of mechanism (reference F52, F53) beyond the section 3.3 rows."""

from __future__ import annotations

import pytest

from smtpx.auth import (
    BaseClientMechanism,
    CramMD5,
    Credentials,
    Logger,
    Login,
    NoCommonMechanism,
    Plain,
    SendResponseAndExpectChallenge,
    XOAuth2,
)


class Custom(BaseClientMechanism):
    def __init__(self, name: str, require_tls: bool) -> None:
        self.mechanism = name
        self.require_tls = require_tls

    async def negotiate(
        self,
        *,
        log: Logger,
        remote: str | None,
        send_response_and_expect_challenge: SendResponseAndExpectChallenge,
    ) -> None:
        raise NotImplementedError


def test_login_offers_plain_then_login_only_with_tls() -> None:
    creds = Credentials.login("u", "p")
    assert creds.mechanisms(tls=True) == (Plain("u", "p"), Login("u", "p"))
    assert creds.mechanisms(tls=False) == ()
    delegated = Credentials.login("u", "p", on_behalf_of="bob")
    assert delegated.mechanisms(tls=True) == (Plain("u", "p", "bob"),)


def test_custom_mechanisms_follow_their_require_tls() -> None:
    secure, lax = Custom("X-SECURE", True), Custom("X-LAX", False)
    creds = Credentials.custom(secure) + Credentials.custom(lax)
    assert creds.mechanisms(tls=True) == (secure, lax)
    assert creds.mechanisms(tls=False) == (lax,)
    assert creds.select(["X-SECURE", "X-LAX"], tls=False) is lax
    assert creds.select(["X-SECURE", "X-LAX"], tls=True) is secure


def test_cram_md5_works_without_tls_and_xoauth2_does_not() -> None:
    creds = Credentials.xoauth2("u", "tok") + Credentials.cram_md5("u", "p")
    assert creds.select(["XOAUTH2", "CRAM-MD5"], tls=False) == CramMD5("u", "p")
    assert creds.select(["XOAUTH2", "CRAM-MD5"], tls=True) == XOAuth2("u", "tok")


def test_names_compare_case_insensitively() -> None:
    creds = Credentials.login("u", "p")
    assert creds.select(["login", "Plain"], tls=True) == Login("u", "p")


def test_first_matching_element_wins_for_a_name() -> None:
    creds = Credentials.login("first", "p") + Credentials.login("second", "p")
    assert creds.select(["PLAIN"], tls=True) == Plain("first", "p")


def test_error_lists_each_client_mechanism_once_in_order() -> None:
    creds = (
        Credentials.login("a", "p")
        + Credentials.cram_md5("a", "p")
        + Credentials.login("b", "p")
        + Credentials.custom(Custom("X-SECURE", True))
    )
    with pytest.raises(NoCommonMechanism) as info:
        creds.select(["GSSAPI", "NTLM"], tls=True)
    assert info.value.client_mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5", "X-SECURE")
    assert info.value.server_mechanisms == ("GSSAPI", "NTLM")


def test_anonymous_anywhere_in_the_list_allows_going_on() -> None:
    creds = Credentials.login("u", "p") + Credentials.anonymous()
    assert creds.allows_anonymous
    assert creds.select(["GSSAPI"], tls=True) is None
    assert not Credentials.login("u", "p").allows_anonymous


def test_empty_credentials() -> None:
    creds = Credentials()
    assert len(creds) == 0 and list(creds) == []
    with pytest.raises(NoCommonMechanism) as info:
        creds.select(["PLAIN"], tls=True)
    assert info.value.client_mechanisms == ()


def test_combining_keeps_order_and_is_immutable() -> None:
    a, b = Credentials.anonymous(), Credentials.login("u", "p")
    combined = a + b
    assert len(combined) == 2
    assert list(combined) == [*a, *b]
    assert len(a) == 1  # unchanged
    assert combined == Credentials.anonymous() + Credentials.login("u", "p")
    assert combined != b + a


def test_login_credentials_validate_early() -> None:
    with pytest.raises(ValueError, match="NUL"):
        Credentials.login("u\0", "p")
