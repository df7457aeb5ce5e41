"""Real SMTP clients against the protocol core (through a minimal socket loop)."""

from __future__ import annotations

import email
import hashlib
import smtplib
import subprocess
from email.message import EmailMessage

from tests.conftest import require_tool
from tests.interop.conftest import CoreServer


def test_smtplib_sends_through_the_core(core_server: CoreServer) -> None:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "rcpt@example.org"
    message["Subject"] = "interop"
    message.set_content(".leading dot\nline two\n\n.\n")
    with smtplib.SMTP("127.0.0.1", core_server.port, timeout=10) as client:
        code, _ = client.ehlo("client.example")
        assert code == 250
        assert client.has_extn("pipelining") and client.has_extn("smtputf8")
        refused = client.send_message(message)
        assert refused == {}
        # smtplib adds SMTPUTF8 itself for the UTF-8 recipient.
        client.send_message(message, to_addrs=["δοκιμή@example.org"])
    (first, second) = core_server.messages()
    parsed = email.message_from_bytes(first)
    assert parsed["Subject"] == "interop"
    assert parsed.get_payload() == ".leading dot\r\nline two\r\n\r\n.\r\n"
    assert first == second
    handler = core_server.handlers[0]
    assert str(handler.messages[1].recipients[0].recipient) == "δοκιμή@example.org"


def test_smtplib_sees_smtp_errors(core_server: CoreServer) -> None:
    with smtplib.SMTP("127.0.0.1", core_server.port, timeout=10) as client:
        client.ehlo("client.example")
        code, text = client.docmd("RCPT TO:<a@b.example>")
        assert (code, text[:5]) == (503, b"5.5.1")
        code, text = client.docmd("BOGUS")
        assert code == 500
        code, _ = client.docmd("MAIL FROM:<a@b.example> SIZE=999999999999")
        assert code == 552


def test_swaks_pipelining(core_server: CoreServer) -> None:
    swaks = require_tool("swaks")
    result = subprocess.run(
        [
            swaks,
            "--server",
            f"127.0.0.1:{core_server.port}",
            "--from",
            "sender@example.com",
            "--to",
            "a@example.org,b@example.org",
            "--pipeline",
            "--body",
            "body with\n.a dot line\n",
            "--h-Subject",
            "swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (data,) = core_server.messages()
    assert b"\r\n.a dot line\r\n" in data
    assert [str(r.recipient) for r in core_server.handlers[0].messages[0].recipients] == [
        "a@example.org",
        "b@example.org",
    ]


def test_smtp_source_many_sessions(core_server: CoreServer) -> None:
    source = require_tool("smtp-source")
    result = subprocess.run(
        [
            source,
            "-s",
            "5",
            "-m",
            "100",
            "-l",
            "4096",
            "-f",
            "s@example.com",
            "-t",
            "r@example.org",
            f"127.0.0.1:{core_server.port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    messages = core_server.messages()
    assert len(messages) == 100
    # smtp-source sends the same generated body each time, under a unique Message-Id:
    # every message arrived once, and every body arrived intact.
    bodies = {hashlib.sha256(m.split(b"\r\n\r\n", 1)[1]).hexdigest() for m in messages}
    assert len(bodies) == 1
    ids = {email.message_from_bytes(m)["Message-Id"] for m in messages}
    assert len(ids) == 100
    assert all(len(m.split(b"\r\n\r\n", 1)[1]) >= 4096 for m in messages)
