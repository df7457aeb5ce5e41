"""A private Postfix for interop tests: :class:`smtpx.testing.postfix.PrivatePostfix`
in a fresh directory Postfix's unprivileged daemons can reach, relaying to a next hop on
127.0.0.1. Without root or Postfix the test skips (fails under SMTPX_REQUIRE_INTEROP=1)."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from smtpx.testing.postfix import PostfixUnavailable, PrivatePostfix
from tests.conftest import _missing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_postfix(next_hop: int, **settings: str) -> Iterator[PrivatePostfix]:
    """A running private Postfix relaying to 127.0.0.1:``next_hop`` (``settings`` go to
    its main.cf); stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="smtpx-postfix-", dir="/tmp") as scratch:
        os.chmod(scratch, 0o755)  # Postfix's unprivileged daemons work under it
        try:
            postfix = PrivatePostfix(Path(scratch) / "postfix", _free_port())
            postfix.configure(
                relay_port=next_hop,
                settings={
                    # headers pass unchanged (but for Received:); no in-flow pause
                    "local_header_rewrite_clients": "",
                    "in_flow_delay": "0",
                    **settings,
                },
            )
            postfix.start()
        except PostfixUnavailable as exc:
            _missing(str(exc))
        try:
            yield postfix
        finally:
            postfix.stop()
