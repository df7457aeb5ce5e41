"""DSN pass-on against a real DSN-capable MTA: smtpx's spool relays through a private
Postfix, which relays on to a capturing server. NOTIFY, ORCPT, RET and ENVID must reach
Postfix and come out of it unchanged; smtpx then sends no notice of its own."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpx.client import ClientConfig, TlsConfig, TlsMode
from smtpx.envelope import Envelope, HostPort
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.spool import Delivery, Spool, SpoolConfig
from smtpx.testing import Handler, ScriptedServer
from smtpx.testing.postfix import PostfixUnavailable, PrivatePostfix
from tests.conftest import REQUIRE_INTEROP

PLAIN = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def postfix_port() -> Iterator[tuple[PrivatePostfix, int]]:
    # Postfix's unprivileged daemons must be able to reach its directories: not under
    # pytest's tmp_path (mode 0700, root's).
    with tempfile.TemporaryDirectory(prefix="smtpx-postfix-", dir="/tmp") as scratch:
        os.chmod(scratch, 0o755)
        try:
            postfix = PrivatePostfix(Path(scratch) / "postfix", free_port())
        except PostfixUnavailable as exc:
            if REQUIRE_INTEROP:
                pytest.fail(f"{exc} (SMTPX_REQUIRE_INTEROP=1)")
            pytest.skip(str(exc))
        try:
            yield postfix, postfix.port
        finally:
            postfix.stop()


async def test_dsn_parameters_pass_through_postfix(
    tmp_path: Path, postfix_port: tuple[PrivatePostfix, int]
) -> None:
    postfix, port = postfix_port
    async with ScriptedServer(Handler) as capture:
        postfix.configure(relay_port=capture.port)
        await asyncio.to_thread(postfix.start)
        envelope = Envelope.create(
            sender="sender@example.com",
            recipients=["a@example.org"],
            recipient_params={"a@example.org": "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Orig@x.org"},
            sender_args="RET=HDRS ENVID=envid-pass-on",
            message=b"From: sender@example.com\r\nSubject: dsn\r\n\r\nhello\r\n",
        )
        config = SpoolConfig(directory=tmp_path / "spool", fsync=FsyncPolicy.NEVER)
        async with Spool(config, client_config=PLAIN) as spool:
            await spool.add([Delivery(envelope, next_hops=(HostPort("127.0.0.1", port),))])
            for _ in range(600):
                if capture.messages() and not spool.messages:
                    break
                await asyncio.sleep(0.05)
            assert spool.messages == {}  # delivered, and no success notice of our own
            assert spool.stats["success_notices"] == 0
        (handler,) = [h for h in capture.handlers if h.messages]
        (received,) = handler.messages
    (rcpt,) = received.recipients
    assert rcpt.params.notify == ("SUCCESS", "DELAY")
    assert rcpt.params.orcpt == ("rfc822", "Orig@x.org")
    assert received.mail.params.ret == "HDRS"
    assert received.mail.params.envid == "envid-pass-on"
