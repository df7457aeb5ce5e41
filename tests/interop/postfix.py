"""A private Postfix instance for interop tests, as bench/relay.py sets one up: ``postfix
-c DIR`` with its own main.cf, master.cf, queue and log under a temporary directory,
smtpd on 127.0.0.1:<free port>, relaying everything to a next hop on 127.0.0.1.

Its master runs as root: without root, or without Postfix, the test skips (fails under
SMTPX_REQUIRE_INTEROP=1). Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import _missing, require_tool

MASTER_CF = Path("/etc/postfix/master.cf")


@dataclass
class PrivatePostfix:
    root: Path
    port: int  # smtpd's

    @property
    def maillog(self) -> str:
        return (self.root / "maillog").read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _master_cf(port: int) -> str:
    """Debian's master.cf with smtpd on 127.0.0.1:port and chroot off everywhere (the
    queue has none of the files a chroot needs)."""
    lines = []
    for line in MASTER_CF.read_text().splitlines():
        fields = line.split()
        if line[:1].isalnum() and len(fields) >= 8:
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{port}"
            fields[4] = "n"
            lines.append("  ".join(fields))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _main_cf(root: Path, next_hop: int) -> str:
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": root / "queue",
        "data_directory": root / "data",
        "maillog_file": root / "maillog",
        "maillog_file_prefixes": root,
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "myhostname": "postfix.test",
        "mydestination": "",
        "mynetworks": "127.0.0.0/8",
        "relayhost": f"[127.0.0.1]:{next_hop}",
        "alias_maps": "",
        "alias_database": "",
        "smtpd_peername_lookup": "no",
        "smtpd_tls_security_level": "none",
        "smtp_tls_security_level": "none",
        "local_header_rewrite_clients": "",  # headers pass unchanged (but for Received:)
        "in_flow_delay": "0",
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def _run(root: Path, *argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        log = (root / "maillog").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{' '.join(argv)}: {result.stdout}{result.stderr} | maillog: {log}")


def _wait_listening(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"Postfix's smtpd does not listen on 127.0.0.1:{port}")


@contextlib.contextmanager
def private_postfix(next_hop: int) -> Iterator[PrivatePostfix]:
    """Start a private Postfix relaying to 127.0.0.1:``next_hop``; stop and remove it
    afterwards."""
    postfix = require_tool("postfix")
    if os.geteuid() != 0:
        _missing("a private Postfix needs root (its master runs as root)")
    if not MASTER_CF.exists():
        _missing(f"{MASTER_CF} not found")
    try:
        owner = pwd.getpwnam("postfix")
    except KeyError:
        _missing("no 'postfix' user")
    root = Path(tempfile.mkdtemp(prefix="smtpx-postfix-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)  # Postfix's unprivileged daemons work under it
        (root / "conf").mkdir()
        (root / "data").mkdir()
        (root / "queue").mkdir()
        (root / "maillog").touch()
        for path in (root / "data", root / "maillog"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        port = _free_port()
        (root / "conf" / "master.cf").write_text(_master_cf(port))
        (root / "conf" / "main.cf").write_text(_main_cf(root, next_hop))
        _run(root, postfix, "-c", str(root / "conf"), "check")
        _run(root, postfix, "-c", str(root / "conf"), "start")
        try:
            _wait_listening(port)
            yield PrivatePostfix(root, port)
        finally:
            _run(root, postfix, "-c", str(root / "conf"), "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
