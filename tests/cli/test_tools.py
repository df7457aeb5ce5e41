"""``smtpx bsmtp parse``, ``smtpx stress-test``, the help text and shell completion."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smtpx.client import bsmtp_bytes
from smtpx.envelope import Envelope
from tests.cli.helpers import free_port, invoke


def _envelopes() -> list[Envelope]:
    return [
        Envelope.create(
            sender="a@example.org",
            recipients=["b@example.net", "c@example.net"],
            message="Subject: first\r\n\r\n.leading dot\r\nbody\r\n",
        ),
        Envelope.create(
            sender="<>",
            recipients=["d@example.net"],
            message="Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nsecond\r\n",
        ),
    ]


def test_bsmtp_parse_file_and_json(tmp_path: Path) -> None:
    path = tmp_path / "batch.bsmtp"
    path.write_bytes(bsmtp_bytes(_envelopes()))
    result = invoke("bsmtp", "parse", str(path))
    assert result.exit_code == 0, result.output
    assert "sender:     <a@example.org>" in result.stdout
    assert "recipients: b@example.net, c@example.net" in result.stdout
    assert "subject:    first" in result.stdout and "subject:    café" in result.stdout
    assert "2 messages, 0 refusals" in result.stderr
    lines = invoke("bsmtp", "parse", "--json", str(path)).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0] == {
        "type": "envelope",
        "sender": "<a@example.org>",
        "recipients": ["b@example.net", "c@example.net"],
        "size": len(_envelopes()[0].message),
        "subject": "first",
    }
    assert records[1]["sender"] == "<>"
    # stdin works too
    piped = invoke("bsmtp", "parse", "--json", input=path.read_bytes())
    assert piped.stdout.splitlines() == lines


def test_bsmtp_parse_select(tmp_path: Path) -> None:
    path = tmp_path / "batch.bsmtp"
    path.write_bytes(bsmtp_bytes(_envelopes()))
    result = invoke("bsmtp", "parse", "--json", "--select", "envelope_sender /^<>$/", str(path))
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["recipients"] for line in result.stdout.splitlines()] == [
        ["d@example.net"]
    ]
    text = invoke("bsmtp", "parse", "--select", "exists_header Subject /first/", str(path))
    assert "message 1" in text.stdout and "message 2" not in text.stdout
    assert "2 messages (1 selected), 0 refusals" in text.stderr
    bad = invoke("bsmtp", "parse", "--select", "and", str(path))
    assert bad.exit_code == 2 and "bad selector" in bad.stderr


EML = (
    b"From: Alice <alice@example.com>\r\nTo: bob@corp.example\r\nCc: x@other.example\r\n"
    b"X-Spam: no\r\nSubject: hi\r\n\r\nbody\r\n"
)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["envelope_sender /^alice@example\\.com$/"], 0),  # the envelope from the headers
        (["all_envelope_recipients /@corp\\.example$/"], 1),  # Cc is a recipient too
        (["exists_header X-Spam /yes/"], 1),
        (["not exists_header X-Spam /yes/ and exists_header subject /^hi$/"], 0),
        (["--sender", "<>", "envelope_sender /^<>$/"], 0),
        (["--recipient", "r@corp.example", "all_envelope_recipients /@corp\\.example$/"], 0),
    ],
)
def test_select_one_message(tmp_path: Path, args: list[str], code: int) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(EML)
    result = invoke("select", *args, str(path))
    assert result.exit_code == code, result.output
    assert result.stdout == (
        "the selector matches\n" if code == 0 else "the selector does not match\n"
    )
    piped = invoke("select", *args, input=EML)  # stdin
    assert piped.exit_code == code


def test_select_bsmtp_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "batch.bsmtp"
    path.write_bytes(bsmtp_bytes(_envelopes()))
    picked = invoke("select", "--bsmtp", "exists_envelope_recipient /^c@/", str(path))
    assert picked.exit_code == 0
    assert picked.stdout.splitlines() == [
        "message 1: the selector matches",
        "message 2: the selector does not match",
    ]
    assert invoke("select", "--bsmtp", "false", str(path)).exit_code == 1
    for args, what in [
        (["envelope_sender x", str(path)], "bad selector"),
        (["--bsmtp", "--sender", "a@b", "true", str(path)], "--sender"),
        (["true"], "no envelope"),  # no From: give --sender and --recipient
    ]:
        result = invoke("select", *args, input=b"Subject: no From\r\n\r\n")
        assert result.exit_code == 2 and what in result.output, (args, result.output)
    given = invoke("select", "--sender", "a@b", "--recipient", "c@d", "true", input=b"\r\n")
    assert given.exit_code == 0


def test_bsmtp_parse_refusals() -> None:
    transcript = b"HELO x\r\nRCPT TO:<b@example.net>\r\nMAIL FROM:<a@example.org>\r\n"
    transcript += b"RCPT TO:<b@example.net>\r\nDATA\r\nSubject: s\r\n\r\nx\r\n.\r\n"
    result = invoke("bsmtp", "parse", "--json", input=transcript)
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["type"] == "refusal" and records[0]["code"] == 503
    assert records[1]["type"] == "envelope" and records[1]["subject"] == "s"
    missing = invoke("bsmtp", "parse", "/nonexistent.bsmtp")
    assert missing.exit_code == 2


RATE = re.compile(r"^(\d+) messages in [\d.]+s: ([\d.]+) messages/s$", re.MULTILINE)


def test_stress_test() -> None:
    # No --port: any free one, never the 2525 of the smtpx serve a newcomer has running.
    result = invoke("stress-test", "-n", "200")
    assert result.exit_code == 0, result.output
    match = RATE.search(result.stdout)
    assert match is not None and int(match[1]) == 200 and float(match[2]) > 0
    port = re.search(r"listening on 127\.0\.0\.1:([0-9]+)", result.stderr)
    assert port is not None and int(port[1]) not in (0, 2525)


def test_stress_test_tls_copies_and_senders() -> None:
    result = invoke(
        "stress-test",
        "--port",
        "0",
        "-n",
        "200",
        "--tls",
        "--num-copies",
        "3",
        "--concurrent-senders",
        "2",
    )
    assert result.exit_code == 0, result.output
    match = RATE.search(result.stdout)
    assert match is not None and int(match[1]) == 200
    assert "(STARTTLS)" in result.stderr


def test_stress_test_message_from_stdin() -> None:
    result = invoke(
        "stress-test",
        "--port",
        "0",
        "-n",
        "50",
        "--message-from-stdin",
        input=bsmtp_bytes(_envelopes()),
    )
    assert result.exit_code == 0, result.output
    assert RATE.search(result.stdout)
    nothing = invoke("stress-test", "--port", "0", "--message-from-stdin", input=b"")
    assert nothing.exit_code == 2 and "no message" in nothing.stderr


def test_stress_test_port_in_use() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("stress-test", "--port", str(port), "-n", "10")
    assert result.exit_code == 1 and "cannot listen" in result.stderr


def test_help_documents_exit_codes_and_completion() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    text = result.stdout
    for line in ("0  success", "1  the operation failed", "2  usage", "3  cannot reach"):
        assert line in text
    assert 'eval "$(_SMTPX_COMPLETE=bash_source smtpx)"' in text
    for command in ("serve", "spool", "daemon", "send", "sendmail", "bsmtp", "stress-test"):
        assert command in text
    for group in (["spool"], ["bsmtp"]):
        assert invoke(*group, "--help").exit_code == 0


def test_shell_completion() -> None:
    script = invoke(_SMTPX_COMPLETE="bash_source")
    assert script.exit_code == 0 and "_smtpx_completion" in script.stdout
    words = invoke(_SMTPX_COMPLETE="bash_complete", COMP_WORDS="smtpx spool st", COMP_CWORD="2")
    assert "plain,status" in words.stdout.splitlines()
    formats = invoke(
        _SMTPX_COMPLETE="bash_complete",
        COMP_WORDS="smtpx spool status --format ",
        COMP_CWORD="4",
    )
    assert {"plain,table", "plain,exim", "plain,json", "plain,ids"} <= set(
        formats.stdout.splitlines()
    )


def test_serve_refuses_a_missing_certificate_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "smtpx.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n'
        '[tls]\ncert_file = "nope.pem"\nkey_file = "nope.key"\n',
        encoding="utf-8",
    )
    result = invoke("serve", "--config", str(config))
    assert result.exit_code == 2, result.output
    assert "configuration error" in result.stderr
    assert "tls.cert_file" in result.stderr and "nope.pem" in result.stderr
    assert "Traceback" not in result.output


def test_serve_check(tmp_path: Path) -> None:
    config = tmp_path / "smtpx.toml"
    config.write_text('[auth]\nusers_file = "users"\n', encoding="utf-8")
    (tmp_path / "users").write_text("alice:scrypt$3$8$1$AAAA$BBBB\n", encoding="utf-8")
    bad = invoke("serve", "--check", "--config", str(config))
    assert bad.exit_code == 2, bad.output
    assert "configuration error" in bad.stderr and "users:1:" in bad.stderr
    (tmp_path / "users").write_text("# nobody yet\n", encoding="utf-8")
    good = invoke("serve", "--check", "--config", str(config))
    assert good.exit_code == 0, good.output
    assert "configuration ok" in good.stdout
    assert not (tmp_path / "var").exists()  # checking creates nothing
