"""``smtpx send`` and ``smtpx sendmail`` delivering into a scripted SMTP sink, and
``smtpx send`` through a real ``smtpx serve`` into its spool."""

from __future__ import annotations

import email
import email.policy
import subprocess
from pathlib import Path
from typing import Any

from smtpx.testing import Handler
from tests.cli.helpers import Daemon, Sink, free_port, invoke, smtpx_process
from tests.conftest import server_tls_context


def _recipients(message: Any) -> list[str]:
    return [str(rcpt.recipient) for rcpt in message.recipients]


def _parsed(data: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_send_with_attachment_and_bcc(tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Hello from the command line.\nSecond line.\n", encoding="utf-8")
    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n", encoding="utf-8")
    with Sink() as sink:
        result = invoke(
            "send",
            "--from",
            "Ops <ops@example.org>",
            "--to",
            "alice@example.net",
            "--to",
            "Bob <bob@example.net>",
            "--cc",
            "carol@example.net",
            "--bcc",
            "audit@example.net",
            "--subject",
            "Nightly report",
            "--attach",
            str(report),
            "--header",
            "X-Report: nightly",
            "--server",
            sink.address,
            "--starttls",
            "none",
            str(body),
        )
        assert result.exit_code == 0, result.output
        assert "sent to 4 recipients" in result.stdout
        [message] = sink.received()
    assert str(message.mail.sender) == "<ops@example.org>"
    assert _recipients(message) == [
        "alice@example.net",
        "bob@example.net",
        "carol@example.net",
        "audit@example.net",
    ]
    parsed = _parsed(message.data)
    assert parsed["Subject"] == "Nightly report" and parsed["X-Report"] == "nightly"
    assert "audit" not in message.data.decode() and parsed["Bcc"] is None
    assert parsed["Cc"] == "carol@example.net"
    text, attachment = list(parsed.iter_parts())
    assert "Hello from the command line." in text.get_content()
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_content_type() == "text/csv"


def test_send_body_from_stdin(tmp_path: Path) -> None:
    with Sink() as sink:
        result = invoke(
            "send",
            "--to",
            "x@example.net",
            "--from",
            "me@example.org",
            "--subject",
            "stdin",
            "--server",
            sink.address,
            input="piped body\n",
        )
        assert result.exit_code == 0, result.output
        [message] = sink.received()
    assert "piped body" in _parsed(message.data).get_content()


def test_send_with_starttls_and_auth(tmp_path: Path, ca: Any, ca_file: str) -> None:
    password = tmp_path / "password"
    password.write_text("secret\n", encoding="utf-8")

    def handler() -> Handler:
        return Handler(tls=True, auth={"me": "secret"})

    with Sink(handler, tls_context=server_tls_context(ca, "127.0.0.1")) as sink:
        common = [
            "send",
            "--to",
            "x@example.net",
            "--from",
            "me@example.org",
            "--subject",
            "tls",
            "--server",
            sink.address,
        ]
        ok = invoke(
            *common,
            "--starttls",
            "required",
            "--ca-file",
            ca_file,
            "--user",
            "me",
            "--password-file",
            str(password),
            input="secure\n",
        )
        assert ok.exit_code == 0, ok.output
        assert len(sink.received()) == 1
        # the certificate is verified with --starttls required: the system CAs do not know it
        unverified = invoke(*common, "--starttls", "required", input="x\n")
        assert unverified.exit_code == 1 and "Traceback" not in unverified.output
        # a password is never sent without TLS
        plaintext = invoke(
            *common,
            "--starttls",
            "none",
            "--user",
            "me",
            "--password-file",
            str(password),
            input="x\n",
        )
        assert plaintext.exit_code == 1
        assert "need TLS" in plaintext.stderr
        assert len(sink.received()) == 1


def test_send_errors() -> None:
    base = ["send", "--from", "me@example.org", "--subject", "s"]
    no_recipient = invoke(*base, input="x")
    assert no_recipient.exit_code == 2 and "at least one recipient" in no_recipient.stderr
    bad_address = invoke(*base, "--to", "not an address@@", input="x")
    assert bad_address.exit_code == 2
    bad_header = invoke(*base, "--to", "a@example.net", "--header", "no colon", input="x")
    assert bad_header.exit_code == 2
    lonely_user = invoke(*base, "--to", "a@example.net", "--user", "me", input="x")
    assert lonely_user.exit_code == 2
    closed = invoke(
        *base, "--to", "a@example.net", "--server", f"127.0.0.1:{free_port()}", input="x"
    )
    assert closed.exit_code == 3
    assert "cannot reach the SMTP server" in closed.stderr and "Traceback" not in closed.output


def test_send_finds_the_mta_of_its_configuration(daemon: Daemon) -> None:
    base = ["send", "--to", "cfg@example.net", "--from", "cli-config@example.com"]
    result = invoke(*base, "--subject", "by config", input="x\n", SMTPX_CONFIG=str(daemon.config))
    assert result.exit_code == 0, result.output
    assert daemon.wait_for(lambda m: m["sender"] == "<cli-config@example.com>", 1)
    elsewhere = daemon.directory / "elsewhere.toml"
    elsewhere.write_text(f'[server]\nlisten = ["127.0.0.1:{free_port()}"]\n', encoding="utf-8")
    closed = invoke(*base, "--subject", "s", "--config", str(elsewhere), input="x\n")
    assert closed.exit_code == 3
    assert f"(from server.listen of {elsewhere})" in closed.stderr


def test_send_into_the_daemon_spool(daemon: Daemon) -> None:
    result = invoke(
        "send",
        "--to",
        "spooled@example.net",
        "--from",
        "cli-send@example.com",
        "--subject",
        "through serve",
        "--server",
        f"127.0.0.1:{daemon.port}",
        "--starttls",
        "none",
        input="via the MTA\n",
    )
    assert result.exit_code == 0, result.output
    [message_id] = daemon.wait_for(lambda m: m["sender"] == "<cli-send@example.com>", 1)
    raw = daemon.cli("spool", "show", "--raw", message_id).stdout_bytes
    assert b"Subject: through serve" in raw and b"via the MTA" in raw


MESSAGE = (
    b"From: Script <script@example.org>\n"
    b"To: alice@example.net, Bob <bob@example.net>\n"
    b"Cc: carol@example.net\n"
    b"Bcc: hidden@example.net\n"
    b"Subject: from a script\n"
    b"\n"
    b"Hello.\n"
)


def test_sendmail_t_from_stdin_in_a_process() -> None:
    with Sink() as sink:
        process = smtpx_process(
            "sendmail",
            "-t",
            "-oi",
            "--server",
            sink.address,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = process.communicate(MESSAGE, timeout=30)
        assert process.returncode == 0, err
        assert out == b""  # silent on success, as sendmail is
        [message] = sink.received()
    assert str(message.mail.sender) == "<script@example.org>"
    assert _recipients(message) == [
        "alice@example.net",
        "bob@example.net",
        "carol@example.net",
        "hidden@example.net",
    ]
    parsed = _parsed(message.data)
    assert parsed["Bcc"] is None and b"hidden@" not in message.data
    assert parsed["Subject"] == "from a script" and parsed["To"].startswith("alice@")
    assert parsed["Date"] and parsed["Message-ID"]  # added when missing
    assert b"\r\nHello.\r\n" in message.data


def test_sendmail_arguments_sender_and_dot() -> None:
    with Sink() as sink:
        base = ["sendmail", "--server", sink.address]
        given = invoke(
            *base, "-f", "bounces@example.org", "only@example.net", input=MESSAGE + b".\nafter\n"
        )
        assert given.exit_code == 0, given.output
        [message] = sink.received()
        assert str(message.mail.sender) == "<bounces@example.org>"
        assert _recipients(message) == ["only@example.net"]  # no -t: the arguments only
        assert b"after" not in message.data  # a lone "." ended the message
        kept = invoke(*base, "-i", "only@example.net", input=MESSAGE + b".\nafter\n")
        assert kept.exit_code == 0
        assert b"after" in sink.received()[1].data
        verbose = invoke(*base, "-v", "-t", input=b"To: v@example.net\nSubject: v\n\nv\n")
        assert verbose.exit_code == 0 and "accepted" in verbose.stderr
        assert "From: " in sink.received()[2].data.decode()
    nobody = invoke("sendmail", "--server", sink.address, input=MESSAGE)
    assert nobody.exit_code == 2 and "no recipients" in nobody.stderr
    empty = invoke("sendmail", "-t", input=b"")
    assert empty.exit_code == 2
    closed = invoke("sendmail", "-t", "--server", f"127.0.0.1:{free_port()}", input=MESSAGE)
    assert closed.exit_code == 3
