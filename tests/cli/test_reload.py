"""SIGHUP against a real ``smtpx serve``: new TLS files and relay networks are taken
live, a new listen address is refused with a log line, open sessions go on."""

from __future__ import annotations

import signal
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from smtpx.mta.users import Users
from tests.cli.helpers import free_port, smtpx_process
from tests.conftest import require_tool

CONFIG = """
hostname = "mx.test"
[server]
listen = ["127.0.0.1:{port}"]
[tls]
cert_file = "cert.pem"
key_file = "key.pem"
[relay]
local_domains = ["mx.test"]
trusted_networks = [{networks}]
relay_for_authenticated = false
[auth]
users_file = "users"
[spool]
dir = "spool"
fsync = "never"
[local]
maildir = "mail"
[control]
socket = "control.sock"
[routing.routes]
"example.net" = ["127.0.0.1:{closed}"]
"""


class Served:
    def __init__(self, directory: Path, ca: Any) -> None:
        self.directory, self.ca = directory, ca
        self.port, self.other_port, self.closed = free_port(), free_port(), free_port()
        self.log = directory / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self, *, networks: str = '"10.0.0.0/8"', port: int | None = None) -> None:
        text = CONFIG.format(port=port or self.port, networks=networks, closed=self.closed)
        (self.directory / "smtpx.toml").write_text(text)

    def certificate(self, name: str) -> bytes:
        """Issue a certificate for mx.test and 127.0.0.1 (``name`` in its SANs too),
        install it where the configuration says; its DER."""
        cert = self.ca.issue_cert("mx.test", "127.0.0.1", name)
        cert.cert_chain_pems[0].write_to_path(str(self.directory / "cert.pem"))
        cert.private_key_pem.write_to_path(str(self.directory / "key.pem"))
        return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = smtpx_process(
                "serve", "--config", "smtpx.toml", cwd=self.directory, stderr=log
            )
        self.wait_for_line("listening on")

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def wait_for_line(self, text: str, count: int = 1) -> list[str]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.lines()
            found = [line for line in self.lines() if text in line]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} in the log: {self.lines()}")

    def finished(self) -> int:
        """How many reloads the log says ended (done, or refused as a whole)."""
        return sum(
            1 for line in self.lines() if "reload: done" in line or "nothing changed" in line
        )

    def reload(self) -> list[str]:
        """SIGHUP, and the reload lines of the log once it has ended."""
        assert self.process is not None
        before = self.finished()
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while self.finished() == before:
            assert time.monotonic() < deadline, self.lines()
            assert self.process.poll() is None, self.lines()
            time.sleep(0.02)
        return [line for line in self.lines() if " reload: " in line]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def client(self, ca_file: str, port: int | None = None) -> tuple[smtplib.SMTP, bytes]:
        """A session after STARTTLS, and the certificate the server presented."""
        session = smtplib.SMTP("127.0.0.1", port or self.port, timeout=10)
        session.starttls(context=ssl.create_default_context(cafile=ca_file))
        sock: Any = session.sock
        return session, sock.getpeercert(binary_form=True)


@pytest.fixture
def served(tmp_path: Path, ca: Any) -> Iterator[Served]:
    running = Served(tmp_path, ca)
    yield running
    running.stop()


def test_sighup_reloads_tls_relay_and_users_and_refuses_the_listen_address(
    served: Served, ca_file: str
) -> None:
    users = Users()
    users.add("alice", "pw-a")
    users.save(served.directory / "users")
    first = served.certificate("first.test")
    served.configure()
    served.start()

    old, presented = served.client(ca_file)
    assert presented == first
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # 127.0.0.1 is not trusted yet
        old.sendmail("a@mx.test", ["x@example.net"], b"Subject: no\r\n\r\nno\r\n")
    old.rset()

    second = served.certificate("second.test")  # renewed in place, as certbot does
    users.add("bob", "pw-b")
    users.save(served.directory / "users")
    served.configure(networks='"127.0.0.0/8"', port=served.other_port)
    lines = served.reload()
    assert any(
        "warning smtpx.mta reload: server.listen cannot change without a restart: it stays "
        f'["127.0.0.1:{served.port}"] (the file says ["127.0.0.1:{served.other_port}"]' in line
        for line in lines
    ), lines
    assert any("reload: done (relay.trusted_networks;" in line for line in lines), lines

    assert old.noop()[0] == 250  # the open session goes on, with what it had
    new, presented = served.client(ca_file)
    assert presented == second
    new.sendmail("a@mx.test", ["x@example.net"], b"Subject: yes\r\n\r\nyes\r\n")  # relayed
    new.login("bob", "pw-b")
    new.quit()
    old.quit()
    with pytest.raises(ConnectionRefusedError):  # the refused address was not opened
        smtplib.SMTP("127.0.0.1", served.other_port, timeout=5)

    # A broken file: an error line, and everything as it was.
    (served.directory / "smtpx.toml").write_text("[relay\n")
    lines = served.reload()
    assert "error smtpx.mta reload:" in lines[-1] and "nothing changed" in lines[-1]
    again, presented = served.client(ca_file)
    assert presented == second
    again.sendmail("a@mx.test", ["y@example.net"], b"Subject: yes\r\n\r\nyes\r\n")
    again.quit()


def test_a_configuration_error_at_start_is_exit_status_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[spool]\nretry_interval = []\n")
    done = subprocess.run(
        [sys.executable, "-m", "smtpx", "serve", "--config", "bad.toml"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2 and b"configuration error" in done.stderr
    service = (Path(__file__).parents[2] / "contrib" / "smtpx.service").read_text()
    assert "\nRestartPreventExitStatus=2\n" in service
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in service


def test_log_level_accepts_what_the_file_accepts() -> None:
    from smtpx.cli import serve
    from smtpx.mta.config import LOG_LEVELS

    (option,) = [p for p in serve.params if p.name == "log_level"]
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == LOG_LEVELS
    for word in ("CRITICAL", "Warning"):
        assert option.type.convert(word, option, None).lower() == word.lower()


def test_the_unit_file_is_read_whole_by_systemd(tmp_path: Path) -> None:
    # systemd reads every line of contrib/smtpx.service (an unknown key or a bad value
    # would be ignored with a warning), and the unit lifts journald's per-service limit,
    # which would drop mail log lines past a few hundred messages a second.
    analyze = require_tool("systemd-analyze")
    service = (Path(__file__).parents[2] / "contrib" / "smtpx.service").read_text()
    assert "\nLogRateLimitIntervalSec=0\n" in service
    # (ExecStart must name a program that exists here; the rest is as shipped)
    unit = tmp_path / "smtpx.service"
    unit.write_text(
        "\n".join(
            "ExecStart=/bin/true" if line.startswith("ExecStart=") else line
            for line in service.splitlines()
        )
    )
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.stdout + done.stderr == "", done.stdout + done.stderr
