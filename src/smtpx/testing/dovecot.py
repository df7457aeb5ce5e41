"""A private Dovecot LMTP server, to deliver to in tests (Debian's ``dovecot-lmtpd``).

::

    dovecot = PrivateDovecot(root, users=["alice", "bob"])
    dovecot.start()                    # LMTP on dovecot.socket (and 127.0.0.1:port)
    ...
    dovecot.messages("alice")          # what alice's maildir holds
    dovecot.stop()

It has its own configuration, state, log and mail under ``root``: LMTP only, on a unix
socket in ``root/run`` and, with ``port``, on 127.0.0.1. Its users come from a
passwd-file: any other recipient gets Dovecot's ``550 5.1.1 ... User doesn't exist``.
Mail lands in ``root/mail/<user>/Maildir``. As root, its processes work as ``nobody``
(``root`` must then be reachable by others: make it under a 0755 directory); otherwise as
the current user. Without Dovecot, :class:`DovecotUnavailable` says why.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DovecotUnavailable", "PrivateDovecot"]

TIMEOUT = 60.0


class DovecotUnavailable(Exception):
    """A private Dovecot could not be set up or started (the message says why)."""


class PrivateDovecot:
    """A private Dovecot LMTP server under ``root`` for ``users``."""

    def __init__(self, root: Path, users: Sequence[str], *, port: int | None = None) -> None:
        found = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin")
        if found is None:
            raise DovecotUnavailable("dovecot is not installed (Debian's dovecot-lmtpd)")
        if not Path("/usr/lib/dovecot/lmtp").exists():
            raise DovecotUnavailable("Dovecot's LMTP server is not installed (dovecot-lmtpd)")
        self.dovecot = found
        self.root = root
        self.port = port
        self.users = list(users)
        self.run_dir = root / "run"
        self.mail = root / "mail"
        self.socket = self.run_dir / "lmtp"
        self.log = root / "dovecot.log"
        self.conf = root / "dovecot.conf"
        self._process: subprocess.Popen[bytes] | None = None
        account = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        self.account = account
        for directory in (self.run_dir, root / "state", self.mail):
            directory.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail, account.pw_uid, account.pw_gid)
        self._write_users()
        self.conf.write_text(self._config())

    def _write_users(self) -> None:
        uid, gid = self.account.pw_uid, self.account.pw_gid
        lines = [f"{user}::{uid}:{gid}::{self.mail / user}::\n" for user in self.users]
        (self.root / "users").write_text("".join(lines))

    def _config(self) -> str:
        group = _group_name(self.account.pw_gid)
        inet = (
            f"  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {self.port}\n  }}\n"
            if self.port
            else ""
        )
        return f"""\
base_dir = {self.run_dir}
state_dir = {self.root / "state"}
log_path = {self.log}
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_internal_user = {self.account.pw_name}
default_internal_group = {group}
default_login_user = {self.account.pw_name}
mail_location = maildir:{self.mail}/%Ln/Maildir
userdb {{
  driver = passwd-file
  args = username_format=%Ln {self.root / "users"}
}}
passdb {{
  driver = static
  args = nopassword=y
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
{inet}}}
service anvil {{
  chroot =
}}
lmtp_rcpt_check_quota = no
"""

    def start(self) -> None:
        """Start Dovecot in the foreground of a child process; wait for its greeting."""
        argv = [self.dovecot, "-F", "-c", str(self.conf)]
        errors = self.root / "stderr"
        try:
            with open(errors, "wb") as stderr:
                self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        except OSError as exc:
            raise DovecotUnavailable(f"{' '.join(argv)}: {exc}") from None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                said = errors.read_text(errors="replace").strip()[-1500:]
                self._process = None
                raise DovecotUnavailable(f"dovecot exited: {said} {self._log_tail()}")
            if _greets(self.socket):
                return
            time.sleep(0.05)
        self.stop()
        raise DovecotUnavailable(f"dovecot did not greet on {self.socket} {self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "| log: " + " / ".join(self.log.read_text(errors="replace").splitlines()[-4:])
        return ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)

    def maildir(self, user: str) -> Path:
        return self.mail / user / "Maildir"

    def messages(self, user: str) -> list[bytes]:
        """The messages in ``user``'s maildir (new and cur), oldest name first."""
        found = []
        for sub in ("new", "cur"):
            folder = self.maildir(user) / sub
            if folder.is_dir():
                found += sorted(folder.iterdir())
        return [path.read_bytes() for path in found]

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []


def _group_name(gid: int) -> str:
    import grp  # noqa: PLC0415 - POSIX only, like Dovecot

    return grp.getgrgid(gid).gr_name


def _greets(path: Path) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        if sock.recv(4).startswith(b"220"):
            sock.sendall(b"QUIT\r\n")
            return True
    return False
