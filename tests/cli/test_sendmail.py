"""smtpx as /usr/sbin/sendmail and mailq: real processes started under those names (a
symlink to the smtpx script, as an operator installs it), with the option sets that cron,
PHP's mail(), git send-email and mutt use, submitting to a real smtpx serve that they find
by themselves (its runtime record)."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from smtpx.cli import main
from tests.cli.helpers import Daemon, Lines, free_port
from tests.conftest import _missing

SMTPX = Path(sys.executable).parent / "smtpx"  # the console script pip installed


@pytest.fixture(scope="module")
def mta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    directory = tmp_path_factory.mktemp("sendmail")
    daemon = Daemon(directory, runtime=directory / "runtime")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert SMTPX.exists(), "install smtpx (pip install -e .) for its console script"
    directory = tmp_path_factory.mktemp("bin")
    for name in ("sendmail", "mailq"):
        (directory / name).symlink_to(SMTPX)
    return directory


def run(
    bin_dir: Path, mta: Daemon | None, name: str, *args: str, stdin: bytes = b"", **env: str
) -> subprocess.CompletedProcess[bytes]:
    """``name ARGS`` (sendmail or mailq) as a process, in a directory of its own, with no
    option saying where the MTA is."""
    environment = {**os.environ, **env}
    if mta is not None:
        environment["SMTPX_RUNTIME_DIR"] = str(mta.runtime)
    return subprocess.run(
        [str(bin_dir / name), *args],
        input=stdin,
        capture_output=True,
        cwd=bin_dir,
        env=environment,
        timeout=60,
        check=False,
    )


def as_sendmail(*args: str, name: str = "sendmail", input: bytes | None = None) -> Result:
    """``smtpx`` run in-process under the name ``name``."""
    return CliRunner().invoke(main, list(args), input=input, prog_name=name)


def spooled(
    mta: Daemon, sender: str, count: int = 1
) -> tuple[list[str], email.message.EmailMessage]:
    """The recipients of the mail from ``sender`` on the spool (one spooled message per
    destination), and its content (CRLF made LF)."""
    ids = mta.wait_for(lambda m: m["sender"] == f"<{sender}>", count)
    found = [m for m in mta.messages() if m["sender"] == f"<{sender}>"]
    raw = mta.cli("spool", "show", "--raw", ids[0]).stdout_bytes.replace(b"\r\n", b"\n")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return sorted(r for m in found for r in m["recipients"]), parsed


def local_mail(mta: Daemon, user: str) -> list[bytes]:
    """The messages delivered to ``user@localhost`` (waiting up to 10 s for a first)."""
    new = mta.directory / "mail" / "localhost" / user / "new"
    deadline = time.monotonic() + 10
    while not (new.is_dir() and any(new.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [path.read_bytes() for path in new.iterdir()] if new.is_dir() else []


PHP = (
    b"To: alice@example.net\n"
    b"Subject: from PHP\n"
    b"From: Web <web@example.org>\n"
    b"Bcc: audit@example.net\n"
    b"\n"
    b"line one\n"
    b".\n"
    b"after the dot\n"
)


def test_php_mail(bin_dir: Path, mta: Daemon) -> None:
    """PHP's default sendmail_path is "sendmail -t -i"; its additional_params often add
    "-f address", attached."""
    done = run(bin_dir, mta, "sendmail", "-t", "-i", "-fphp-bounces@example.org", stdin=PHP)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""  # silent on success
    recipients, parsed = spooled(mta, "php-bounces@example.org")
    assert recipients == ["alice@example.net", "audit@example.net"]
    assert parsed["Bcc"] is None and b"audit" not in parsed.as_bytes()
    assert "after the dot" in parsed.get_content()  # -i: a lone dot is text
    assert parsed["Message-ID"] and parsed["Date"]  # added


def test_cron(bin_dir: Path, mta: Daemon) -> None:
    """cron runs "sendmail -FCronDaemon -i -B8BITMIME -oem USER", headers but no From; a
    bare user name is a user of the first local domain."""
    output = b"Subject: Cron <root@host> run-parts\nContent-Type: text/plain\n\nbackup done\n"
    done = run(
        bin_dir, mta, "sendmail", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "postmaster",
        stdin=output,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [delivered] = [m for m in local_mail(mta, "postmaster") if b"backup done" in m]
    parsed = email.message_from_bytes(delivered, policy=email.policy.default)
    assert parsed["From"].startswith("CronDaemon <")


def test_git_send_email_options(bin_dir: Path, mta: Daemon) -> None:
    """git send-email runs "sendmail -i [-f SENDER] RECIPIENT..." with a whole message."""
    patch = (
        b"From: Dev <dev@example.org>\n"
        b"To: list@example.net\n"
        b"Cc: reviewer@example.com\n"
        b"Subject: [PATCH] fix\n"
        b"\n"
        b"---\n"
        b".\n"
        b"..\n"
    )
    done = run(
        bin_dir, mta, "sendmail", "-i", "-f", "git-author@example.org",
        "list@example.net", "reviewer@example.com",
        stdin=patch,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recipients, parsed = spooled(mta, "git-author@example.org", 2)  # two destinations
    assert recipients == ["list@example.net", "reviewer@example.com"]
    assert parsed.get_content().endswith("---\n.\n..\n")  # dots kept as written


def test_mutt_and_without_i(bin_dir: Path, mta: Daemon) -> None:
    """mutt: "sendmail -oem -oi -- RECIPIENT"; without -i/-oi a lone dot ends the message."""
    body = b"From: m@example.org\nSubject: m\n\nkept\n.\ncut\n"
    done = run(bin_dir, mta, "sendmail", "-oem", "-oi", "--", "mutt@example.net", stdin=body)
    assert done.returncode == 0, done.stderr
    _, parsed = spooled(mta, "m@example.org")
    assert parsed.get_content() == "kept\n.\ncut\n"
    body = body.replace(b"m@example.org", b"dot@example.org")
    done = run(bin_dir, mta, "sendmail", "dot@example.net", stdin=body)
    assert done.returncode == 0, done.stderr
    _, parsed = spooled(mta, "dot@example.org")
    assert parsed.get_content() == "kept\n"


def test_bs_is_an_smtp_session_with_the_mta(bin_dir: Path, mta: Daemon) -> None:
    process = subprocess.Popen(
        [str(bin_dir / "sendmail"), "-bs"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SMTPX_RUNTIME_DIR": str(mta.runtime)},
    )
    assert process.stdin is not None and process.stdout is not None
    lines = Lines(process.stdout)

    def say(command: bytes) -> bytes:
        assert process.stdin is not None
        process.stdin.write(command + b"\r\n")
        process.stdin.flush()
        while (line := lines.get())[3:4] != b" ":
            pass
        return line

    assert lines.get().startswith(b"220 mx.test ")  # the MTA itself greets
    assert say(b"EHLO client.test").startswith(b"250 ")
    assert say(b"MAIL FROM:<bs@example.org>").startswith(b"250 ")
    assert say(b"RCPT TO:<bs@example.net>").startswith(b"250 ")
    assert say(b"DATA").startswith(b"354 ")
    assert say(b"Subject: over -bs\r\n\r\nhello\r\n.").startswith(b"250 ")
    assert say(b"QUIT").startswith(b"221 ")
    process.stdin.close()
    assert process.wait(30) == 0
    _, parsed = spooled(mta, "bs@example.org")
    assert parsed["Subject"] == "over -bs"


def test_bp_and_mailq_list_the_queue(bin_dir: Path, mta: Daemon) -> None:
    queued = mta.inject("queued@example.org", ["waiting@example.net"])
    for name, args in (("sendmail", ["-bp"]), ("mailq", [])):
        done = run(bin_dir, mta, name, *args)
        assert done.returncode == 0, done.stderr
        text = done.stdout.decode()
        assert f"{queued[0]} <queued@example.org>" in text and "waiting@example.net" in text


def test_mailq_on_an_empty_queue(bin_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mta").mkdir()
    empty = Daemon(tmp_path / "mta", runtime=tmp_path / "runtime")
    empty.start()
    try:
        done = run(bin_dir, empty, "mailq")
    finally:
        empty.stop()
    assert (done.returncode, done.stdout) == (0, b"Mail queue is empty\n")


def test_bv_says_where_mail_goes_and_sends_nothing(bin_dir: Path, mta: Daemon) -> None:
    before = len(mta.messages())
    done = run(
        bin_dir, mta, "sendmail", "-bv",
        "postmaster@localhost", "x@example.net", "y@sub.example.com", "z@[127.0.0.1]",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    closed = f"127.0.0.1:{mta.closed_port}"
    assert done.stdout.decode().splitlines() == [
        f"postmaster@localhost... deliverable: local delivery into {mta.directory / 'mail'}",
        f"x@example.net... deliverable: relay to {closed} (the route for example.net)",
        f"y@sub.example.com... deliverable: relay to {closed} (the route for example.com)",
        "z@[127.0.0.1]... deliverable: relay to 127.0.0.1:25 (the address literal)",
    ]
    refused = run(bin_dir, mta, "sendmail", "-bv", "x@example.net", "z@[x-tag:text]")
    assert refused.returncode == 1
    assert refused.stdout.decode().splitlines()[1] == (
        "z@[x-tag:text]... undeliverable: 550 5.1.2 Unsupported address literal [x-tag:text]"
    )
    bad = as_sendmail("-bv", "not an address@@")
    assert bad.exit_code == 2 and "bad address" in bad.stderr
    assert len(mta.messages()) == before


def test_the_mta_down_and_bad_usage(bin_dir: Path, tmp_path: Path) -> None:
    nowhere = tmp_path / "smtpx.toml"
    nowhere.write_text(f'[server]\nlisten = ["127.0.0.1:{free_port()}"]\n', encoding="utf-8")
    down = run(bin_dir, None, "sendmail", "-t", stdin=PHP, SMTPX_CONFIG=str(nowhere))
    assert down.returncode == 3 and b"cannot reach the SMTP server" in down.stderr
    session = run(bin_dir, None, "sendmail", "-bs", SMTPX_CONFIG=str(nowhere))
    assert session.returncode == 3
    assert session.stdout == b"421 4.3.0 smtpx sendmail: the mail system is not running\r\n"
    unsupported = as_sendmail("-bd")
    assert unsupported.exit_code == 2 and "-bd is not supported" in unsupported.stderr
    nobody = as_sendmail(input=PHP)
    assert nobody.exit_code == 2 and "no recipients" in nobody.stderr
    assert "Usage: sendmail [OPTIONS]" in as_sendmail("--help").stdout
    assert "Usage: mailq [OPTIONS]" in as_sendmail("--help", name="mailq").stdout


@pytest.mark.interop
def test_git_send_email_itself(bin_dir: Path, mta: Daemon, tmp_path: Path) -> None:
    exec_path = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not shutil.which("git-send-email", path=exec_path or None):
        _missing("interop peer 'git send-email' is not installed (Debian: git-email)")
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=Dev", "-c", "user.email=dev@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "file.txt").write_text("hello\n", encoding="utf-8")
    subprocess.run([*git, "add", "file.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Add a file"], check=True)
    subprocess.run([*git, "format-patch", "-q", "--root", "-o", str(tmp_path)], check=True)
    [patch] = tmp_path.glob("*.patch")
    sent = subprocess.run(
        [
            *git, "send-email", "--confirm=never", "--quiet",
            f"--smtp-server={bin_dir / 'sendmail'}", "--envelope-sender=git@example.org",
            "--to=list@example.net", "--suppress-cc=all", str(patch),
        ],
        capture_output=True,
        env={**os.environ, "SMTPX_RUNTIME_DIR": str(mta.runtime)},
        timeout=60,
        check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    recipients, parsed = spooled(mta, "git@example.org")
    assert recipients == ["list@example.net"]
    assert parsed["Subject"] == "[PATCH] Add a file"
