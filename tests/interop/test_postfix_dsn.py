"""DSN pass-on against a real DSN-capable MTA: smtpx's spool relays through a private
Postfix, which relays on to a capturing server. NOTIFY, ORCPT, RET and ENVID must reach
Postfix and come out of it unchanged; smtpx then sends no notice of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smtpx.client import ClientConfig, TlsConfig, TlsMode
from smtpx.envelope import Envelope, HostPort
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.spool import Delivery, Spool, SpoolConfig
from smtpx.testing import Handler, ScriptedServer
from tests.interop.postfix import private_postfix

PLAIN = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))])


async def test_dsn_parameters_pass_through_postfix(tmp_path: Path) -> None:
    envelope = Envelope.create(
        sender="sender@example.com",
        recipients=["a@example.org"],
        recipient_params={"a@example.org": "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Orig@x.org"},
        sender_args="RET=HDRS ENVID=envid-pass-on",
        message=b"From: sender@example.com\r\nSubject: dsn\r\n\r\nhello\r\n",
    )
    config = SpoolConfig(directory=tmp_path / "spool", fsync=FsyncPolicy.NEVER)
    async with ScriptedServer(Handler) as capture:
        with private_postfix(capture.port) as postfix:
            next_hop = HostPort("127.0.0.1", postfix.port)
            async with Spool(config, client_config=PLAIN) as spool:
                await spool.add([Delivery(envelope, next_hops=(next_hop,))])
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
