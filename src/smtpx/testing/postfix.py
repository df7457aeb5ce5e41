"""A private Postfix instance, to test against (or measure beside) a real MTA.

::

    postfix = PrivatePostfix(tmp_path / "postfix", port=free_port())
    postfix.configure(relay_port=sink_port)      # relays everything to 127.0.0.1:sink_port
    postfix.start()
    ...                                          # talk SMTP to 127.0.0.1:port
    postfix.stop()

It has its own main.cf and master.cf (Debian's, with smtpd on ``127.0.0.1:port`` and no
chroot), queue, data directory and log file under ``root``; it listens on loopback only
and relays to ``127.0.0.1``. Its master runs as root, as Postfix's does: without root,
Debian's ``postfix`` package or its ``postfix`` user, :class:`PostfixUnavailable` says why.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PostfixUnavailable", "PrivatePostfix"]

TIMEOUT = 120.0  # for any one command


class PostfixUnavailable(Exception):
    """A private Postfix instance could not be set up or started (the message says why)."""


class PrivatePostfix:
    """A private Postfix instance under ``root``: its own config, queue, data and log."""

    def __init__(self, root: Path, port: int, *, hostname: str = "postfix.test") -> None:
        self.root = root
        self.port = port
        self.hostname = hostname
        self.conf = root / "conf"
        self.queue = root / "queue"
        self.data = root / "data"
        self.maillog = root / "maillog"
        self.running = False
        found = shutil.which("postfix") or shutil.which("postfix", path="/usr/sbin")
        if found is None:
            raise PostfixUnavailable("postfix is not installed (Debian's postfix package)")
        self.postfix = found
        if os.geteuid() != 0:
            raise PostfixUnavailable(
                "a private Postfix instance needs root (its master runs as root)"
            )
        try:
            owner = pwd.getpwnam("postfix")
        except KeyError:
            raise PostfixUnavailable("no 'postfix' user") from None
        master_cf = Path("/etc/postfix/master.cf")
        if not master_cf.exists():
            raise PostfixUnavailable(f"{master_cf} not found")
        closed = [d for d in root.resolve().parents if not os.stat(d).st_mode & 0o001]
        if closed:
            raise PostfixUnavailable(
                f"{closed[0]} is not searchable by others: Postfix's unprivileged daemons "
                "work under root (make it under a directory with mode 0755)"
            )
        for directory in (self.conf, self.data):
            directory.mkdir(parents=True)
        os.chown(self.data, owner.pw_uid, owner.pw_gid)
        self.maillog.touch()
        os.chown(self.maillog, owner.pw_uid, owner.pw_gid)
        (self.conf / "master.cf").write_text(self._master_cf(master_cf.read_text()))
        self.configure()
        self.run("check")  # creates the queue tree

    def _master_cf(self, text: str) -> str:
        """Debian's master.cf with smtpd on 127.0.0.1:port and chroot off everywhere (the
        queue lives in a temporary directory without the files a chroot needs)."""
        lines = []
        for line in text.splitlines():
            fields = line.split()
            if line[:1].isalnum() and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"
                lines.append("  ".join(fields))
            else:
                lines.append(line)
        return "\n".join(lines) + "\n"

    def configure(
        self,
        *,
        queue: str = "queue",
        relay_port: int = 0,
        paused: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """Write main.cf (with Postfix stopped): relay everything from 127.0.0.0/8 to
        ``127.0.0.1:relay_port`` (port 9, where nothing listens, by default); ``paused``
        defers all delivery. Each ``queue`` is a directory of its own (the start creates
        its tree), so nothing has to be emptied between cases. ``settings`` win."""
        self.queue = self.root / queue
        self.queue.mkdir(exist_ok=True)
        main_cf = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": self.hostname,
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{relay_port or 9}",
            "defer_transports": "smtp" if paused else "",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_client_restrictions": "",
            "smtpd_peername_lookup": "no",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            **(settings or {}),
        }
        text = "".join(f"{key} = {value}\n" for key, value in main_cf.items())
        (self.conf / "main.cf").write_text(text)

    def run(self, *args: str) -> str:
        """Run ``postfix -c CONF ARGS``; its output (PostfixUnavailable if it fails)."""
        argv = [self.postfix, "-c", str(self.conf), *args]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostfixUnavailable(f"{' '.join(argv)}: {exc}") from None
        if result.returncode != 0:
            said = (result.stdout + result.stderr).strip()[-1500:]
            with contextlib.suppress(OSError):  # the reason is often only in the log
                said += " | maillog: " + " / ".join(self.log_lines()[-4:])
            raise PostfixUnavailable(f"{' '.join(argv)} exited with {result.returncode}: {said}")
        return result.stdout + result.stderr

    def log_lines(self) -> list[str]:
        return self.maillog.read_text(errors="replace").splitlines()

    def start(self) -> None:
        self.run("start")
        self.running = True
        if not _greets(self.port, timeout=60):
            raise PostfixUnavailable("postfix started but smtpd did not answer with 220")

    def stop(self) -> None:
        if self.running:
            self.run("stop")
            self.running = False  # postfix stop returns once the master has gone

    def queued(self, *queues: str) -> int:
        """Messages in the named queues (all of them by default)."""
        names = queues or ("incoming", "active", "deferred", "hold", "maildrop")
        return sum(len(files) for name in names for _, _, files in os.walk(self.queue / name))


def _greets(port: int, timeout: float) -> bool:
    """Whether a connection to 127.0.0.1:``port`` gets a 220 within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5) as s:
            if s.recv(4).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                return True
        time.sleep(0.05)
    return False
