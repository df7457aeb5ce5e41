"""A failed AUTH is logged with the client's address and the name it gave, and the
fail2ban filter in contrib/ finds exactly those lines in a real ``smtpx serve`` log
(fail2ban-regex: Debian's fail2ban, installed by .ci/run)."""

from __future__ import annotations

import base64
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpx.mta.users import Users
from tests.cli.helpers import free_port, smtpx_process
from tests.conftest import require_tool

pytestmark = pytest.mark.interop

CONTRIB = Path(__file__).parents[2] / "contrib" / "fail2ban"
# A name that, written as it is, would be a second log line blaming someone else.
HOSTILE = (
    "evil\n2026-01-01T00:00:00Z warning smtp-server/session auth failed "
    'remote_ip=6.6.6.6 mechanism=PLAIN reply="535 x" '
)
CONFIG = """
hostname = "mx.test"
[server]
listen = ["127.0.0.1:{port}"]
[auth]
users_file = "users"
allow_plaintext = true
[spool]
dir = "spool"
fsync = "never"
[local]
maildir = "mail"
[control]
socket = "control.sock"
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    users = Users()
    users.add("alice", "right-pw")
    users.save(tmp_path / "users")
    port = free_port()
    (tmp_path / "smtpx.toml").write_text(CONFIG.format(port=port))
    log = tmp_path / "serve.log"
    with log.open("ab") as stderr:
        process = smtpx_process("serve", "--config", "smtpx.toml", cwd=tmp_path, stderr=stderr)
    try:
        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        yield port, log
    finally:
        process.terminate()
        process.wait(15)


def plain(session: smtplib.SMTP, name: str, password: str) -> int:
    token = base64.b64encode(f"\0{name}\0{password}".encode()).decode()
    return session.docmd("AUTH", f"PLAIN {token}")[0]


def login(session: smtplib.SMTP, name: str, password: str) -> int:
    assert session.docmd("AUTH", "LOGIN")[0] == 334
    assert session.docmd(base64.b64encode(name.encode()).decode())[0] == 334
    return session.docmd(base64.b64encode(password.encode()).decode())[0]


def test_failed_auth_lines_feed_fail2ban(served: tuple[int, Path]) -> None:
    fail2ban_regex = require_tool("fail2ban-regex")
    port, log = served
    attempts = [
        (plain, "alice", "wrong-pw-1", 535),
        (login, "alice", "wrong-pw-2", 535),
        (plain, HOSTILE, "wrong-pw-3", 535),
        (plain, "x" * 300, "wrong-pw-4", 535),
        (plain, "alice", "right-pw", 235),
    ]
    for way, name, password, code in attempts:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as session:
            session.ehlo("client.test")
            assert way(session, name, password) == code
    malformed = smtplib.SMTP("127.0.0.1", port, timeout=10)
    malformed.ehlo("client.test")
    assert malformed.docmd("AUTH", "PLAIN bm90IHRocmVlIGZpZWxkcw==")[0] == 501
    malformed.quit()

    deadline = time.monotonic() + 10
    while log.read_text().count("auth failed") < 5:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    text = log.read_text()
    failed = [line for line in text.splitlines() if " auth failed " in line]
    assert len(failed) == 5  # one line each, the hostile name's newline included
    assert (
        " warning smtp-server/session auth failed remote_ip=127.0.0.1 mechanism=PLAIN " in failed[0]
    )
    assert (
        failed[0]
        .split(" [srv")[0]
        .endswith('reply="535 5.7.8 Authentication credentials invalid" user=alice')
    )
    assert "mechanism=LOGIN" in failed[1] and "user=alice" in failed[1]
    assert 'user="evil\\n2026-01-01T00:00:00Z warning' in failed[2]
    assert "user=" + "x" * 100 + "... " in failed[3]
    assert "user=" not in failed[4] and 'reply="501 ' in failed[4]  # no name could be read
    assert "wrong-pw" not in text and "right-pw" not in text  # never a password

    found = subprocess.run(
        [fail2ban_regex, "--raw", "--out", "ip", str(log), str(CONTRIB / "filter.d/smtpx.conf")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == ["127.0.0.1"] * 5, found  # never 6.6.6.6
    summary = subprocess.run(
        [fail2ban_regex, "--raw", str(log), str(CONTRIB / "filter.d/smtpx.conf")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Failregex: 5 total" in summary.stdout, summary.stdout


def test_the_jail_names_the_filter_and_the_smtp_ports() -> None:
    jail = (CONTRIB / "jail.d/smtpx.conf").read_text()
    assert "[smtpx]" in jail and "\nfilter = smtpx\n" in jail
    assert (
        "\nport = 25,465,587\n" in jail and "\njournalmatch = _SYSTEMD_UNIT=smtpx.service\n" in jail
    )
