"""The reference's AUTH acceptance table (section 3.3, rows 1-13), client against server.

The test server offers AUTH with the user ``username`` / ``password``; ``tls=True``
means the server offers STARTTLS (emulated over memory). Transcripts use standard reply
texts; the exchanges and outcomes are the reference's.
"""

from __future__ import annotations

from smtpx.auth import Credentials
from smtpx.errors import AuthFailed, NoCommonMechanism
from smtpx.protocol import Extensions
from smtpx.testing import Handler
from tests.client.helpers import Run, in_memory

VALID = Credentials.login("username", "password")
INVALID = Credentials.login("username", "Xpassword")
DELEGATED = Credentials.login("username", "password", on_behalf_of="bob")


def server(*mechanisms: str, tls: bool) -> Handler:
    return Handler(
        extensions=Extensions(eightbitmime=True),
        auth={"username": "password"},
        auth_mechanisms=mechanisms,
        tls=tls,
    )


def after_ehlo(run: Run) -> list[str]:
    """The lines after the (last) EHLO reply: the AUTH exchange and the QUIT."""
    lines = run.lines()
    last = max(i for i, line in enumerate(lines) if line.startswith("S: 250 "))
    ehlo = max(i for i, line in enumerate(lines) if line.startswith("C: EHLO"))
    assert ehlo < last
    return lines[last + 1 :]


async def test_row_1_no_tls_means_no_plain_or_login() -> None:
    run = await in_memory(server("PLAIN", "LOGIN", tls=False), credentials=VALID)
    assert {"S: 250-AUTH PLAIN LOGIN", "S: 250 8BITMIME"} <= set(run.lines())
    assert after_ehlo(run) == ["C: QUIT", "S: 221 2.0.0 Bye"]
    assert isinstance(run.error, NoCommonMechanism)
    assert run.error.client_mechanisms == ()
    assert run.error.server_mechanisms == ("PLAIN", "LOGIN")
    assert str(run.error).startswith(
        "No common auth mechanism available and ANON authentication not allowed by client"
    )


async def test_row_2_tls_but_no_mechanisms_advertised() -> None:
    run = await in_memory(server(tls=True), credentials=VALID)
    assert "S: 250 8BITMIME" in run.lines()
    assert "C: STARTTLS" in run.lines()
    assert after_ehlo(run) == ["C: QUIT", "S: 221 2.0.0 Bye"]
    assert isinstance(run.error, NoCommonMechanism)
    assert run.error.client_mechanisms == ("PLAIN", "LOGIN")
    assert run.error.server_mechanisms == ()


async def test_row_3_tls_no_mechanisms_anonymous_is_fine() -> None:
    run = await in_memory(server(tls=True), credentials=Credentials.anonymous())
    assert run.error is None
    assert after_ehlo(run) == ["C: QUIT", "S: 221 2.0.0 Bye"]


async def test_row_4_login_success() -> None:
    run = await in_memory(server("LOGIN", tls=True), credentials=VALID)
    assert run.error is None
    assert after_ehlo(run) == [
        "C: AUTH LOGIN",
        "S: 334 VXNlcm5hbWU6",
        "C: dXNlcm5hbWU=",
        "S: 334 UGFzc3dvcmQ6",
        "C: cGFzc3dvcmQ=",
        "S: 235 2.7.0 Authentication successful",
        "C: QUIT",
        "S: 221 2.0.0 Bye",
    ]


async def test_row_5_login_bad_password() -> None:
    run = await in_memory(server("LOGIN", tls=True), credentials=INVALID)
    assert after_ehlo(run) == [
        "C: AUTH LOGIN",
        "S: 334 VXNlcm5hbWU6",
        "C: dXNlcm5hbWU=",
        "S: 334 UGFzc3dvcmQ6",
        "C: WHBhc3N3b3Jk",
        "S: 535 5.7.8 Authentication credentials invalid",
        "C: QUIT",
        "S: 221 2.0.0 Bye",
    ]
    assert isinstance(run.error, AuthFailed)
    assert str(run.error) == "AUTH failed: 535 5.7.8 Authentication credentials invalid"


async def test_row_6_plain_success() -> None:
    run = await in_memory(server("PLAIN", tls=True), credentials=VALID)
    assert run.error is None
    assert after_ehlo(run)[:2] == [
        "C: AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3Jk",
        "S: 235 2.7.0 Authentication successful",
    ]


async def test_row_7_plain_bad_password() -> None:
    run = await in_memory(server("PLAIN", tls=True), credentials=INVALID)
    assert after_ehlo(run) == [
        "C: AUTH PLAIN AHVzZXJuYW1lAFhwYXNzd29yZA==",
        "S: 535 5.7.8 Authentication credentials invalid",
        "C: QUIT",
        "S: 221 2.0.0 Bye",
    ]
    assert isinstance(run.error, AuthFailed)


async def test_row_8_both_offered_plain_first() -> None:
    run = await in_memory(server("PLAIN", "LOGIN", tls=True), credentials=VALID)
    assert after_ehlo(run)[0] == "C: AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3Jk"


async def test_server_order_picks_the_mechanism() -> None:
    run = await in_memory(server("LOGIN", "PLAIN", tls=True), credentials=VALID)
    assert after_ehlo(run)[0] == "C: AUTH LOGIN"


async def test_row_9_plain_with_delegation() -> None:
    run = await in_memory(server("PLAIN", "LOGIN", tls=True), credentials=DELEGATED)
    assert run.error is None
    assert after_ehlo(run)[:2] == [
        "C: AUTH PLAIN Ym9iAHVzZXJuYW1lAHBhc3N3b3Jk",
        "S: 235 2.7.0 Authentication successful",
    ]


async def test_row_10_delegation_cannot_use_login() -> None:
    run = await in_memory(server("LOGIN", tls=True), credentials=DELEGATED)
    assert isinstance(run.error, NoCommonMechanism)
    assert run.error.client_mechanisms == ("PLAIN",)
    assert run.error.server_mechanisms == ("LOGIN",)
    assert after_ehlo(run) == ["C: QUIT", "S: 221 2.0.0 Bye"]


async def test_row_11_anonymous_or_valid_prefers_auth() -> None:
    credentials = Credentials.anonymous() + VALID
    run = await in_memory(server("PLAIN", "LOGIN", tls=True), credentials=credentials)
    assert run.error is None
    assert after_ehlo(run)[0] == "C: AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3Jk"


async def test_row_12_anonymous_or_delegated_with_only_login_goes_on_unauthenticated() -> None:
    credentials = Credentials.anonymous() + DELEGATED
    run = await in_memory(server("LOGIN", tls=True), credentials=credentials)
    assert run.error is None
    assert after_ehlo(run) == ["C: QUIT", "S: 221 2.0.0 Bye"]


async def test_row_13_anonymous_never_masks_a_failed_auth() -> None:
    credentials = Credentials.anonymous() + INVALID
    run = await in_memory(server("PLAIN", "LOGIN", tls=True), credentials=credentials)
    assert isinstance(run.error, AuthFailed)
    assert after_ehlo(run)[1] == "S: 535 5.7.8 Authentication credentials invalid"
    assert after_ehlo(run)[-2:] == ["C: QUIT", "S: 221 2.0.0 Bye"]


async def test_starttls_then_ehlo_again_then_auth() -> None:
    run = await in_memory(server("PLAIN", tls=True), credentials=VALID)
    lines = run.lines()
    starttls = lines.index("C: STARTTLS")
    assert lines[starttls + 1] == "S: 220 2.0.0 Ready to start TLS"
    assert lines[starttls + 2].startswith("C: EHLO ")
    assert lines.index("C: AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3Jk") > starttls
