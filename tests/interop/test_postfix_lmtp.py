"""smtpx behind a real Postfix: Postfix's lmtp transport delivers to an ``[server] lmtp``
listener, which answers each recipient on its own; Postfix delivers, bounces (the
unknown user) and sends the bounce back through smtpx itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smtpx.client import Accepted, connect
from smtpx.envelope import Envelope
from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from tests.interop.dovecot import free_port
from tests.interop.postfix import private_postfix
from tests.mta.helpers import PLAIN, config, maildir, wait_until


async def test_postfix_delivers_through_smtpx_lmtp(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(
        tmp_path,
        server={"listen": [], "lmtp": [f"127.0.0.1:{port}"]},
        local={"mailboxes": ["alice", "me"], "aliases": {"bob": ["alice"]}},
    )
    async with Mta(cfg, dns=FakeDns()) as mta:
        settings = {"relayhost": "", "default_transport": f"lmtp:inet:127.0.0.1:{port}"}
        with private_postfix(0, **settings) as postfix:
            envelope = Envelope.create(
                sender="me@example.org",
                recipients=["alice@example.org", "nobody@example.org", "bob@example.org"],
                message=b"From: me@example.org\r\nSubject: via postfix\r\n\r\nhello\r\n",
            )
            async with connect("127.0.0.1", postfix.port, config=PLAIN) as client:
                assert isinstance(await client.send(envelope), Accepted)
            await wait_until(
                lambda: (
                    len(maildir(tmp_path, "alice@example.org")) == 2
                    and maildir(tmp_path, "me@example.org")
                ),
                timeout=60,
            )
            await wait_until(lambda: not mta.spool.messages)
            await asyncio.sleep(0)
            log = "\n".join(postfix.log_lines())
    (bounce,) = maildir(tmp_path, "me@example.org")
    assert b"nobody@example.org" in bounce and b"5.1.1" in bounce
    sent = [line for line in log.splitlines() if "status=sent" in line]
    assert any("to=<alice@example.org>" in line and "lmtp" in line for line in sent), log
    assert any("to=<bob@example.org>" in line for line in sent), log
    assert any(
        "to=<nobody@example.org>" in line and "status=bounced" in line for line in log.splitlines()
    ), log
    for stored in maildir(tmp_path, "alice@example.org"):
        assert b"with LMTP id " in stored  # smtpx's Received field, on top of Postfix's
