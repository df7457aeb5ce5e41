"""The built-in mechanisms beyond the reference's cases: CRAM-MD5 (against RFC 2195's own
example), XOAUTH2, and the edges of PLAIN and LOGIN."""

from __future__ import annotations

import base64

import pytest

from smtpx.auth import (
    AuthFailed,
    AuthProtocolError,
    CramMD5,
    CramMD5Server,
    Login,
    LoginServer,
    Plain,
    PlainServer,
    XOAuth2,
    XOAuth2Server,
)
from tests.auth.wire import Session, converse, expect, record_user, script_client, script_server

# RFC 2195 section 2, the example exchange.
RFC2195_CHALLENGE = "<1896.697170952@postoffice.reston.mci.net>"
RFC2195_CHALLENGE_B64 = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
RFC2195_RESPONSE = "tim b913a602c7eda7a495b4e6e7334d3890"
RFC2195_RESPONSE_B64 = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def cram_server(secrets: dict[str, str]) -> CramMD5Server[Session]:
    return CramMD5Server(
        secrets.get,
        "postoffice.reston.mci.net",
        lambda: "1896.697170952",
        on_success=record_user,
    )


# -- CRAM-MD5 --------------------------------------------------------------------------


def test_rfc2195_example_encodings() -> None:
    assert b64(RFC2195_CHALLENGE) == RFC2195_CHALLENGE_B64
    assert b64(RFC2195_RESPONSE) == RFC2195_RESPONSE_B64


async def test_cram_md5_client_answers_the_rfc2195_example() -> None:
    outcome = await script_client(
        CramMD5("tim", "tanstaaftanstaaf"),
        [f"334 {RFC2195_CHALLENGE_B64}", "235 2.7.0 Authentication successful"],
    )
    assert outcome.client_error is None
    assert outcome.transcript == expect(
        "C: AUTH CRAM-MD5",
        f"S: 334 {RFC2195_CHALLENGE_B64}",
        f"C: {RFC2195_RESPONSE_B64}",
        "S: 235 2.7.0 Authentication successful",
    )


async def test_cram_md5_server_issues_and_checks_the_rfc2195_example() -> None:
    server = cram_server({"tim": "tanstaaftanstaaf"})
    outcome = await script_server(server, "AUTH CRAM-MD5", [RFC2195_RESPONSE_B64])
    assert outcome.transcript == expect(
        "C: AUTH CRAM-MD5",
        f"S: 334 {RFC2195_CHALLENGE_B64}",
        f"C: {RFC2195_RESPONSE_B64}",
        "S: 235 2.7.0 Authentication successful",
    )
    assert outcome.session == Session(authenticated="tim")


async def test_cram_md5_end_to_end_and_without_tls() -> None:
    assert CramMD5("tim", "x").require_tls is False
    outcome = await converse(
        CramMD5("tim", "tanstaaftanstaaf"), [cram_server({"tim": "tanstaaftanstaaf"})]
    )
    assert outcome.client_error is None
    assert outcome.lines[1] == f"S: 334 {RFC2195_CHALLENGE_B64}"
    assert outcome.lines[2] == f"C: {RFC2195_RESPONSE_B64}"
    assert outcome.session == Session(authenticated="tim")


@pytest.mark.parametrize(
    ("user", "password"),
    [("tim", "wrong"), ("nobody", "tanstaaftanstaaf"), ("nobody", "")],
    # An unknown user's digest is checked against an empty secret (for even timing): a
    # client using the empty password must still be turned away.
    ids=["bad", "unknown", "unknown-empty-password"],
)
async def test_cram_md5_wrong_secret_or_unknown_user(user: str, password: str) -> None:
    outcome = await converse(CramMD5(user, password), [cram_server({"tim": "tanstaaftanstaaf"})])
    assert isinstance(outcome.client_error, AuthFailed)
    assert outcome.lines[-1] == "S: 535 5.7.8 Authentication credentials invalid"
    assert outcome.session == Session()


async def test_cram_md5_async_secret_lookup() -> None:
    async def lookup(username: str) -> str | None:
        return {"tim": "tanstaaftanstaaf"}.get(username)

    server: CramMD5Server[Session] = CramMD5Server(
        lookup, "postoffice.reston.mci.net", lambda: "1896.697170952", on_success=record_user
    )
    outcome = await script_server(server, "AUTH CRAM-MD5", [RFC2195_RESPONSE_B64])
    assert outcome.session == Session(authenticated="tim")


async def test_cram_md5_username_with_spaces() -> None:
    outcome = await converse(CramMD5("tim t", "pw"), [cram_server({"tim t": "pw"})])
    assert outcome.session == Session(authenticated="tim t")


@pytest.mark.parametrize(
    "answer",
    [
        "tim",
        "tim b913a602",
        " b913a602c7eda7a495b4e6e7334d3890",
        "tim zz13a602c7eda7a495b4e6e7334d3890",
    ],
)
async def test_cram_md5_malformed_response(answer: str) -> None:
    outcome = await script_server(cram_server({"tim": "x"}), "AUTH CRAM-MD5", [b64(answer)])
    assert outcome.server_reply is not None
    assert (outcome.server_reply.code, str(outcome.server_reply.enhanced)) == (501, "5.5.2")
    assert outcome.session == Session()


async def test_cram_md5_client_refuses_an_immediate_success() -> None:
    outcome = await script_client(CramMD5("tim", "x"), ["235 2.7.0 Authentication successful"])
    assert isinstance(outcome.client_error, AuthProtocolError)


# -- XOAUTH2 ---------------------------------------------------------------------------


def check_token(session: Session, username: str, token: str) -> bool:
    return (username, token) == (
        "user@example.com",
        "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
    )


XOAUTH2 = XOAuth2Server(check_token, on_success=record_user)
GOOD = XOAuth2("user@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")


def test_xoauth2_initial_response_format() -> None:
    # Google's documented example of the SASL XOAUTH2 initial client response.
    assert GOOD.message() == (
        b"user=user@example.com\x01"
        b"auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
    )
    assert b64(GOOD.message()) == (
        "dXNlcj11c2VyQGV4YW1wbGUuY29tAWF1dGg9QmVhcmVyIHlhMjkudkY5ZGZ0NHFtVGMyTnZiM1JsY2tCaGRI"
        "UmhkbWx6ZEdFdVkyOXRDZwEB"
    )


async def test_xoauth2_success() -> None:
    outcome = await converse(GOOD, [XOAUTH2])
    assert outcome.transcript == expect(
        f"C: AUTH XOAUTH2 {b64(GOOD.message())}",
        "S: 235 2.7.0 Authentication successful",
    )
    assert outcome.session == Session(authenticated="user@example.com")


async def test_xoauth2_failure_dance() -> None:
    outcome = await converse(XOAuth2("user@example.com", "expired"), [XOAUTH2])
    error = b'{"status":"401","schemes":"bearer"}'
    assert outcome.lines[1:] == [
        f"S: 334 {b64(error)}",
        "C: ",  # the empty response the protocol asks for
        "S: 535 5.7.8 Authentication credentials invalid",
    ]
    assert isinstance(outcome.client_error, AuthFailed)
    assert str(outcome.client_error) == "AUTH failed: 535 5.7.8 Authentication credentials invalid"
    # The server's JSON is logged (it is not a secret); the token is not.
    assert '"status":"401"' in outcome.client_log.text
    assert "expired" not in outcome.client_log.text + outcome.server_log.text


# An access token of 2 KB, as long as some providers' are reported to be.
LONG = XOAuth2("user@example.com", "eyJ0eXAiOiJKV1Qi." + "x" * 2000)


def check_long_token(session: Session, username: str, token: str) -> bool:
    return (username, token) == ("user@example.com", LONG.token)


async def test_a_long_initial_response_waits_for_the_empty_challenge() -> None:
    """RFC 4954 section 4: an initial response that would make the AUTH command longer
    than SMTP's 512 octets is not sent with it, but after the server's empty 334."""
    outcome = await converse(LONG, [XOAuth2Server(check_long_token, on_success=record_user)])
    assert outcome.client_error is None
    assert outcome.transcript == expect(
        "C: AUTH XOAUTH2",
        "S: 334 ",
        f"C: {b64(LONG.message())}",
        "S: 235 2.7.0 Authentication successful",
    )
    assert outcome.session == Session(authenticated="user@example.com")


async def test_a_long_initial_response_that_fails() -> None:
    outcome = await converse(LONG, [XOAUTH2])  # that server knows another token
    assert [line[:8] for line in outcome.lines] == [
        "C: AUTH ",
        "S: 334 ",
        "C: dXNlc",
        "S: 334 e",
        "C: ",
        "S: 535 5",
    ]
    assert isinstance(outcome.client_error, AuthFailed)


@pytest.mark.parametrize(("password", "octets", "alone"), [(369, 509, False), (370, 513, True)])
async def test_the_512_octet_line_decides(password: int, octets: int, alone: bool) -> None:
    """``AUTH PLAIN <response>`` CRLF: up to 512 octets with the command, then alone
    (base64 makes the line grow by four: 509, then 513)."""
    plain = Plain("u", "p" * password)
    line = f"AUTH PLAIN {b64(plain.message())}"
    assert len(line) + 2 == octets
    outcome = await script_client(plain, ["334 ", "235 2.7.0 ok"] if alone else ["235 2.7.0 ok"])
    assert outcome.client_error is None
    assert outcome.lines[0] == ("C: AUTH PLAIN" if alone else f"C: {line}")
    assert outcome.lines[-1] == "S: 235 2.7.0 ok"


async def test_a_refused_bare_command_fails_as_the_long_one_would() -> None:
    outcome = await script_client(LONG, ["504 5.5.4 Unrecognized authentication type"])
    assert outcome.lines == ["C: AUTH XOAUTH2", "S: 504 5.5.4 Unrecognized authentication type"]
    assert isinstance(outcome.client_error, AuthFailed)


async def test_xoauth2_client_refuses_a_second_challenge() -> None:
    outcome = await script_client(
        GOOD, ["334 e30=", "334 e30=", "501 5.7.0 Authentication cancelled"]
    )
    assert isinstance(outcome.client_error, AuthProtocolError)
    assert outcome.lines[-2:] == ["C: *", "S: 501 5.7.0 Authentication cancelled"]


@pytest.mark.parametrize(
    "message",
    [
        b"user=a\x01auth=Bearer t\x01",  # one ^A short
        b"user=a\x01auth=Basic t\x01\x01",
        b"auth=Bearer t\x01\x01",
        b"user=a\x01auth=Bearer \x01\x01",
        b"user=a\x01user=b\x01auth=Bearer t\x01\x01",
        b"user=a\x01junk\x01auth=Bearer t\x01\x01",
        b"\xff\x01\x01",
    ],
)
async def test_xoauth2_malformed(message: bytes) -> None:
    outcome = await script_server(XOAUTH2, f"AUTH XOAUTH2 {b64(message)}", [])
    assert outcome.server_reply is not None
    assert (outcome.server_reply.code, str(outcome.server_reply.enhanced)) == (501, "5.5.2")


async def test_xoauth2_without_initial_response_and_case_insensitive_scheme() -> None:
    message = GOOD.message().replace(b"auth=Bearer ", b"auth=bearer ")
    assert b"auth=bearer ya29." in message
    outcome = await script_server(XOAUTH2, "AUTH XOAUTH2", [b64(message)])
    assert outcome.lines[1] == "S: 334 "
    assert outcome.session == Session(authenticated="user@example.com")


def test_xoauth2_rejects_separator_in_fields() -> None:
    with pytest.raises(ValueError, match="XOAUTH2"):
        XOAuth2("a\x01b", "t")


# -- PLAIN and LOGIN edges -------------------------------------------------------------


def test_plain_rejects_nul_in_fields() -> None:
    with pytest.raises(ValueError, match="NUL"):
        Plain("a\0b", "pw")
    with pytest.raises(ValueError, match="NUL"):
        Plain("a", "pw", on_behalf_of="\0")


async def test_plain_client_refuses_a_challenge_and_cancels() -> None:
    outcome = await script_client(Plain("u", "p"), ["334 ", "501 5.7.0 Authentication cancelled"])
    assert isinstance(outcome.client_error, AuthProtocolError)
    assert outcome.transcript == expect(
        "C: AUTH PLAIN AHUAcA==",
        "S: 334 ",
        "C: *",
        "S: 501 5.7.0 Authentication cancelled",
    )


@pytest.mark.parametrize(
    "message",
    [b"user\0pass", b"a\0b\0c\0d", b"\0\0pass", b"\0user\0", b"\0us\xffer\0pass"],
    ids=["two-fields", "four-fields", "no-user", "no-password", "not-utf8"],
)
async def test_plain_server_malformed(message: bytes) -> None:
    called: list[str] = []

    def authenticate(session: Session, user: str, password: str, behalf: str | None) -> bool:
        called.append(user)
        return True

    server = PlainServer(authenticate)
    outcome = await script_server(server, f"AUTH PLAIN {b64(message)}", [])
    assert outcome.server_reply is not None
    assert (outcome.server_reply.code, str(outcome.server_reply.enhanced)) == (501, "5.5.2")
    assert "Malformed PLAIN response" in outcome.server_reply.text
    assert called == []


async def test_plain_server_async_callback_and_no_on_success() -> None:
    async def authenticate(session: Session, user: str, password: str, behalf: str | None) -> bool:
        return password == "pw"

    server: PlainServer[Session] = PlainServer(authenticate)
    outcome = await converse(Plain("u", "pw"), [server], session=Session(authenticated="before"))
    assert outcome.server_reply is not None and outcome.server_reply.code == 235
    # Without on_success the session comes back unchanged.
    assert outcome.session == Session(authenticated="before")


async def test_a_non_bool_check_result_never_lets_a_client_in() -> None:
    server: PlainServer[Session] = PlainServer(lambda *args: "yes")  # type: ignore[arg-type]
    outcome = await converse(Plain("u", "pw"), [server])
    assert outcome.server_reply is not None
    assert (outcome.server_reply.code, str(outcome.server_reply.enhanced)) == (454, "4.7.0")
    assert "TypeError" in outcome.server_log.text


async def test_login_client_protocol_errors() -> None:
    early = await script_client(Login("u", "p"), ["235 2.7.0 Authentication successful"])
    assert isinstance(early.client_error, AuthProtocolError)
    third = await script_client(
        Login("u", "p"), ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "334 ", "501 5.7.0 Cancelled"]
    )
    assert isinstance(third.client_error, AuthProtocolError)
    assert third.lines[-2] == "C: *"


async def test_login_client_ignores_challenge_texts() -> None:
    outcome = await script_client(
        Login("u", "p"), ["334 Tm9tIGQndXRpbGlzYXRldXI6", "334 ", "235 2.7.0 Ok"]
    )
    assert outcome.client_error is None
    assert outcome.lines[2] == "C: dQ=="
    assert outcome.lines[4] == "C: cA=="


async def test_login_server_rejects_non_utf8() -> None:
    server: LoginServer[Session] = LoginServer(lambda s, u, p: True)
    outcome = await script_server(server, "AUTH LOGIN", [b64(b"\xff"), b64("pw")])
    assert outcome.server_reply is not None and outcome.server_reply.code == 501
