"""Real milters on loopback for the interop tests: OpenDKIM (signing), rspamd (its proxy
worker in milter mode, scanning itself) and a libmilter one written with python3-milter.
Each runs in the foreground in its own process group, with its files in a temp dir, on
127.0.0.1 and a free port, and is stopped by its own process id."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtpx.testing.daemons import free_port

START_TIMEOUT = 20.0


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running(argv: list[str], port: int, log: Path) -> Iterator[str]:
    """Run ``argv`` until it listens on ``port``; yield the milter's ``inet:`` address."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"inet:127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def rsa_key(directory: Path) -> tuple[Path, bytes]:
    """A fresh 2048-bit key in ``directory`` (mode 0600) and its DKIM DNS record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "dkim.private"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def opendkim(
    binary: str, directory: Path, domain: str, selector: str
) -> Iterator[tuple[str, bytes]]:
    """OpenDKIM signing mail from 127.0.0.1 (its default InternalHosts) for ``domain``;
    yields its address and the DNS record of its key (no DNS lookup is needed to sign)."""
    key, record = rsa_key(directory)
    port = free_port()
    conf = directory / "opendkim.conf"
    conf.write_text(
        "Syslog no\nMode s\n"
        f"Domain {domain}\nSelector {selector}\nKeyFile {key}\n"
        f"Socket inet:{port}@127.0.0.1\nCanonicalization relaxed/simple\n"
        f"RequireSafeKeys false\nPidFile {directory / 'opendkim.pid'}\n"
        + ("UserID root\n" if os.geteuid() == 0 else "")
    )
    with running([binary, "-f", "-x", str(conf)], port, directory / "opendkim.log") as address:
        yield address, record


RSPAMD_CONF = """\
options {{
  pidfile = "{dir}/rspamd.pid";
  dbdir = "{dir}/db";
  url_tld = "{dir}/tld.dat";
  # Nothing leaves the machine: DNS goes to a closed port on loopback.
  dns {{ nameserver = ["127.0.0.1:9"]; timeout = 0.1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{dir}/rspamd.log"; level = "info"; }}
# Only the milter_headers module (no rules, maps or network checks): fast to start.
modules {{ path = "{plugins}/milter_headers.lua"; }}
milter_headers {{
  skip_local = false;
  skip_authenticated = false;
  use = ["x-spamd-result", "x-rspamd-server", "x-rspamd-queue-id", "x-spam-status"];
}}
actions {{ reject = 15; add_header = 6; greylist = 4; }}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{port}";
  milter = yes;
  timeout = 120s;
  count = 1;
  upstream "local" {{ default = yes; self_scan = yes; }}
}}
"""


def rspamd(binary: str, directory: Path) -> Iterator[str]:
    """rspamd's proxy worker in milter mode, scanning itself (no Redis, no controller)."""
    port = free_port()
    (directory / "db").mkdir()
    (directory / "tld.dat").write_text("com\nnet\norg\nexample\ntest\n")
    conf = directory / "rspamd.conf"
    conf.write_text(
        RSPAMD_CONF.format(dir=directory, port=port, plugins="/usr/share/rspamd/plugins")
    )
    # -i: rspamd refuses to run its workers as root otherwise (CI containers are root).
    argv = [binary, "-f", "-i", "-c", str(conf)]
    with running(argv, port, directory / "rspamd.out") as address:
        yield address


PYMILTER = '''
import sys
import Milter

class Editor(Milter.Base):
    """At the end of the message: replace the body, change the sender, a recipient and
    the Subject, add a header; or reject, when the body says so. An unknown command
    XFROB is refused with its own reply."""

    def unknown(self, command):
        if isinstance(command, bytes):
            command = command.decode("ascii", "replace")
        if command.split(" ")[0].upper() == "XFROB":
            self.setreply("550", "5.7.1", "pymilter knows no XFROB")
            return Milter.REJECT
        return Milter.CONTINUE

    def envfrom(self, sender, *args):
        self.chunks = b""
        return Milter.CONTINUE

    def body(self, chunk):
        self.chunks += chunk
        return Milter.CONTINUE

    def eom(self):
        if b"reject me" in self.chunks:
            self.setreply("550", "5.7.1", "Rejected by pymilter")
            return Milter.REJECT
        self.replacebody(b"Replaced by libmilter.\\r\\nSecond line.\\r\\n")
        self.chgfrom("<changed@example.com>")
        self.delrcpt("<drop@example.net>")
        self.addrcpt("<added@example.net>")
        self.chgheader("Subject", 1, "rewritten")
        self.addheader("X-Pymilter", "seen")
        return Milter.ACCEPT

Milter.factory = Editor
Milter.set_flags(Milter.CHGBODY | Milter.CHGFROM | Milter.ADDRCPT | Milter.DELRCPT
                 | Milter.CHGHDRS | Milter.ADDHDRS)
Milter.runmilter("editor", sys.argv[1], 60)
'''


def pymilter(python: str, directory: Path) -> Iterator[str]:
    """A libmilter milter (python3-milter) that edits the message (see PYMILTER)."""
    port = free_port()
    script = directory / "editor.py"
    script.write_text(PYMILTER)
    argv = [python, str(script), f"inet:{port}@127.0.0.1"]
    with running(argv, port, directory / "pymilter.log") as address:
        yield address


def system_python_with_milter() -> str | None:
    """Debian's python3 when it has python3-milter (the tests' venv does not)."""
    for python in ("/usr/bin/python3", sys.executable):
        check = subprocess.run([python, "-c", "import Milter"], capture_output=True, check=False)
        if check.returncode == 0:
            return python
    return None
