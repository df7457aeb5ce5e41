"""The reference's AUTH acceptance cases (async_smtp.md section 3.3), as transcripts.

The reference's test plugin accepts user ``username`` with password ``password`` and lets
it act on behalf of anyone. Our replies carry enhanced status codes, and PLAIN without an
initial response gets the empty challenge of RFC 4954 section 4 rather than the
reference's ``Require ${ON_BEHALF}\\NULL...`` text.
"""

from __future__ import annotations

import base64

import pytest

from smtpx.auth import (
    AuthFailed,
    Credentials,
    Login,
    LoginServer,
    NoCommonMechanism,
    Plain,
    PlainServer,
)
from tests.auth.wire import Session, converse, expect, record_user, script_server

USER, PASSWORD = "username", "password"


def check_login(session: Session, username: str, password: str) -> bool:
    return (username, password) == (USER, PASSWORD)


def check_plain(session: Session, username: str, password: str, on_behalf_of: str | None) -> bool:
    return check_login(session, username, password)


PLAIN = PlainServer(check_plain, on_success=record_user)
LOGIN = LoginServer(check_login, on_success=record_user)
BOTH = (PLAIN, LOGIN)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_reference_base64_constants() -> None:
    # The exact strings of the reference's transcripts, recomputed.
    assert b64("Username:") == "VXNlcm5hbWU6"
    assert b64("Password:") == "UGFzc3dvcmQ6"
    assert b64(USER) == "dXNlcm5hbWU="
    assert b64("Xpassword") == "WHBhc3N3b3Jk"
    assert b64("\0username\0password") == "AHVzZXJuYW1lAHBhc3N3b3Jk"
    assert b64("bob\0username\0password") == "Ym9iAHVzZXJuYW1lAHBhc3N3b3Jk"


# -- row 1-3: nothing in common --------------------------------------------------------


def test_row_1_no_tls_means_no_login_mechanism() -> None:
    creds = Credentials.login(USER, PASSWORD)
    with pytest.raises(NoCommonMechanism) as info:
        creds.select(["PLAIN", "LOGIN"], tls=False)
    assert info.value.client_mechanisms == ()
    assert info.value.server_mechanisms == ("PLAIN", "LOGIN")
    assert str(info.value).startswith(
        "No common auth mechanism available and ANON authentication not allowed by client"
    )


def test_row_2_tls_but_the_server_offers_nothing() -> None:
    creds = Credentials.login(USER, PASSWORD)
    with pytest.raises(NoCommonMechanism) as info:
        creds.select([], tls=True)
    assert info.value.client_mechanisms == ("PLAIN", "LOGIN")
    assert info.value.server_mechanisms == ()


def test_row_3_anonymous_proceeds_without_auth() -> None:
    assert Credentials.anonymous().select([], tls=True) is None


# -- rows 4-9: exchanges ---------------------------------------------------------------


async def test_row_4_login_success() -> None:
    outcome = await converse(Login(USER, PASSWORD), BOTH)
    assert outcome.transcript == expect(
        "C: AUTH LOGIN",
        "S: 334 VXNlcm5hbWU6",
        "C: dXNlcm5hbWU=",
        "S: 334 UGFzc3dvcmQ6",
        "C: cGFzc3dvcmQ=",
        "S: 235 2.7.0 Authentication successful",
    )
    assert outcome.client_error is None
    assert outcome.client_reply is not None and outcome.client_reply.code == 235
    assert outcome.session == Session(authenticated=USER)


async def test_row_5_login_bad_password() -> None:
    outcome = await converse(Login(USER, "Xpassword"), BOTH)
    assert outcome.transcript == expect(
        "C: AUTH LOGIN",
        "S: 334 VXNlcm5hbWU6",
        "C: dXNlcm5hbWU=",
        "S: 334 UGFzc3dvcmQ6",
        "C: WHBhc3N3b3Jk",
        "S: 535 5.7.8 Authentication credentials invalid",
    )
    assert isinstance(outcome.client_error, AuthFailed)
    assert str(outcome.client_error) == "AUTH failed: 535 5.7.8 Authentication credentials invalid"
    assert outcome.client_error.reply is not None and outcome.client_error.reply.code == 535
    assert outcome.session == Session()  # unchanged


async def test_row_6_plain_success() -> None:
    outcome = await converse(Plain(USER, PASSWORD), BOTH)
    assert outcome.transcript == expect(
        "C: AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3Jk",
        "S: 235 2.7.0 Authentication successful",
    )
    assert outcome.session == Session(authenticated=USER)


async def test_row_7_plain_bad_password() -> None:
    outcome = await converse(Plain(USER, "Xpassword"), BOTH)
    assert outcome.transcript == expect(
        "C: AUTH PLAIN AHVzZXJuYW1lAFhwYXNzd29yZA==",
        "S: 535 5.7.8 Authentication credentials invalid",
    )
    assert isinstance(outcome.client_error, AuthFailed)
    assert str(outcome.client_error) == "AUTH failed: 535 5.7.8 Authentication credentials invalid"


async def test_row_8_both_offered_the_server_order_picks() -> None:
    creds = Credentials.login(USER, PASSWORD)
    chosen = creds.select(["PLAIN", "LOGIN"], tls=True)
    assert chosen == Plain(USER, PASSWORD)
    outcome = await converse(chosen, BOTH)
    assert outcome.lines[0] == "C: AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3Jk"
    assert outcome.client_error is None
    # The server's order wins, not the client's.
    assert creds.select(["LOGIN", "PLAIN"], tls=True) == Login(USER, PASSWORD)


async def test_row_9_plain_on_behalf_of() -> None:
    seen: list[tuple[str, str, str | None]] = []

    def authenticate(session: Session, username: str, password: str, behalf: str | None) -> bool:
        seen.append((username, password, behalf))
        return check_login(session, username, password)

    creds = Credentials.login(USER, PASSWORD, on_behalf_of="bob")
    chosen = creds.select(["PLAIN", "LOGIN"], tls=True)
    assert chosen == Plain(USER, PASSWORD, on_behalf_of="bob")
    outcome = await converse(chosen, [PlainServer(authenticate, on_success=record_user)])
    assert outcome.transcript == expect(
        "C: AUTH PLAIN Ym9iAHVzZXJuYW1lAHBhc3N3b3Jk",
        "S: 235 2.7.0 Authentication successful",
    )
    assert seen == [(USER, PASSWORD, "bob")]
    # The session acts as the authorization identity.
    assert outcome.session == Session(authenticated="bob")


# -- rows 10-13: choice with delegation and anonymous ------------------------------------


def test_row_10_delegation_has_no_login_mechanism() -> None:
    creds = Credentials.login(USER, PASSWORD, on_behalf_of="bob")
    with pytest.raises(NoCommonMechanism) as info:
        creds.select(["LOGIN"], tls=True)
    assert info.value.client_mechanisms == ("PLAIN",)
    assert info.value.server_mechanisms == ("LOGIN",)


async def test_row_11_auth_is_preferred_over_anonymous() -> None:
    creds = Credentials.anonymous() + Credentials.login(USER, PASSWORD)
    chosen = creds.select(["PLAIN", "LOGIN"], tls=True)
    assert chosen == Plain(USER, PASSWORD)
    outcome = await converse(chosen, BOTH)
    assert outcome.client_error is None
    assert outcome.session == Session(authenticated=USER)


def test_row_12_anonymous_with_delegation_and_only_login() -> None:
    creds = Credentials.anonymous() + Credentials.login(USER, PASSWORD, on_behalf_of="bob")
    assert creds.select(["LOGIN"], tls=True) is None


async def test_row_13_anonymous_does_not_mask_a_failure() -> None:
    creds = Credentials.anonymous() + Credentials.login(USER, "Xpassword")
    chosen = creds.select(["PLAIN", "LOGIN"], tls=True)
    assert chosen is not None
    outcome = await converse(chosen, BOTH)
    assert isinstance(outcome.client_error, AuthFailed)
    assert outcome.lines[-1] == "S: 535 5.7.8 Authentication credentials invalid"


# -- rows 14-16: hand-written clients ----------------------------------------------------


async def test_row_14_login_initial_response_skips_username() -> None:
    outcome = await script_server(LOGIN, "AUTH LOGIN dXNlcm5hbWU=", ["cGFzc3dvcmQ="])
    assert outcome.transcript == expect(
        "C: AUTH LOGIN dXNlcm5hbWU=",
        "S: 334 UGFzc3dvcmQ6",
        "C: cGFzc3dvcmQ=",
        "S: 235 2.7.0 Authentication successful",
    )
    assert outcome.session == Session(authenticated=USER)


async def test_row_15_plain_without_initial_response_gets_an_empty_challenge() -> None:
    outcome = await script_server(PLAIN, "AUTH PLAIN", ["AHVzZXJuYW1lAHBhc3N3b3Jk"])
    assert outcome.transcript == expect(
        "C: AUTH PLAIN",
        "S: 334 ",  # RFC 4954 section 4: an empty challenge
        "C: AHVzZXJuYW1lAHBhc3N3b3Jk",
        "S: 235 2.7.0 Authentication successful",
    )
    assert outcome.session == Session(authenticated=USER)


async def test_row_16_unadvertised_mechanism() -> None:
    # Dispatch is the server layer's; the wire's stand-in answers 504 (RFC 4954 section 4).
    outcome = await converse(Login(USER, PASSWORD), [PLAIN])
    assert outcome.transcript == expect(
        "C: AUTH LOGIN",
        "S: 504 5.5.4 Unrecognized authentication type: LOGIN",
    )
    assert isinstance(outcome.client_error, AuthFailed)
    assert outcome.client_error.reply is not None and outcome.client_error.reply.code == 504
