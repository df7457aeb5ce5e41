"""A private Dovecot LMTP server for interop tests: :class:`smtpx.testing.dovecot.
PrivateDovecot` in a fresh directory its unprivileged processes can reach. Without
Dovecot the test skips (fails under SMTPX_REQUIRE_INTEROP=1)."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from smtpx.testing.dovecot import DovecotUnavailable, PrivateDovecot
from tests.conftest import _missing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_dovecot(users: Sequence[str], *, tcp: bool = False) -> Iterator[PrivateDovecot]:
    """A running private Dovecot LMTP for ``users`` (on 127.0.0.1 too with ``tcp``);
    stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="smtpx-dovecot-", dir="/tmp") as scratch:
        os.chmod(scratch, 0o755)  # Dovecot's processes work as nobody under it
        try:
            dovecot = PrivateDovecot(
                Path(scratch) / "dovecot", users, port=free_port() if tcp else None
            )
            dovecot.start()
        except DovecotUnavailable as exc:
            _missing(str(exc))
        try:
            yield dovecot
        finally:
            dovecot.stop()
