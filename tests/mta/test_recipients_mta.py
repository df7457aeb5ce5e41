"""The recipient table in ``smtpx serve``: unknown users refused at RCPT, aliases expanded
at intake (to local mailboxes and relayed to remote ones), subaddresses, and the
``expanded`` notice for NOTIFY=SUCCESS."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
from pathlib import Path

from smtpx.client import Accepted, connect
from smtpx.envelope import Envelope
from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from smtpx.testing import Handler, ScriptedServer
from tests.mta.helpers import PLAIN, config, maildir, wait_until

MESSAGE = b"From: me@example.com\r\nSubject: hi\r\nMessage-ID: <r@t>\r\n\r\nhello\r\n"


def recipients_config(tmp_path: Path, sink: int) -> object:
    return config(
        tmp_path,
        local={
            "mailboxes": ["postmaster", "alice"],
            "aliases": {"bob": ["alice"], "info": ["alice", "carol@example.net"]},
        },
        routing={
            "routes": {
                "example.net": [f"127.0.0.1:{sink}"],
                "example.com": [f"127.0.0.1:{sink}"],
            }
        },
    )


async def test_unknown_users_are_refused_and_aliases_expanded(tmp_path: Path) -> None:
    async with ScriptedServer(Handler) as sink:
        cfg = recipients_config(tmp_path, sink.port)
        async with Mta(cfg, dns=FakeDns()) as mta:  # type: ignore[arg-type]
            envelope = Envelope.create(
                sender="me@example.com",
                recipients=[
                    "nobody@example.org",
                    "bob@example.org",
                    "info@example.org",
                    "alice+news@example.org",
                    "<Postmaster>",
                ],
                message=MESSAGE,
            )
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                status = await client.send(envelope)
            assert isinstance(status, Accepted)
            ((refused, reply),) = status.rejected
            assert str(refused) == "nobody@example.org"
            assert str(reply) == "550 5.1.1 Recipient address rejected: User unknown"
            await wait_until(lambda: sink.messages() and not mta.spool.messages)
    alice = maildir(tmp_path, "alice@example.org")
    # bob and info both reach alice: one copy; alice+news is a copy of its own
    assert len(alice) == 2
    delivered_to = sorted(m.split(b"Delivered-To: ")[1].split(b"\n")[0] for m in alice)
    assert delivered_to == [b"alice+news@example.org", b"alice@example.org"]
    assert len(maildir(tmp_path, "postmaster@example.org")) == 1
    (relayed,) = [h for h in sink.handlers if h.messages]
    (message,) = relayed.messages
    assert [str(r.recipient) for r in message.recipients] == ["carol@example.net"]
    assert message.data.endswith(b"\r\n\r\nhello\r\n")


def send_with_dsn(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("me@example.com", ["ENVID=e-1"])
        assert client.rcpt("info@example.org", ["NOTIFY=SUCCESS,FAILURE"])[0] == 250
        assert client.rcpt("bob@example.org", ["NOTIFY=SUCCESS"])[0] == 250
        assert client.data(MESSAGE)[0] == 250


async def test_an_expanded_notice_for_notify_success(tmp_path: Path) -> None:
    async with ScriptedServer(Handler) as sink:
        cfg = recipients_config(tmp_path, sink.port)
        async with Mta(cfg, dns=FakeDns()) as mta:  # type: ignore[arg-type]
            await asyncio.to_thread(send_with_dsn, mta.server.ports[0])
            await wait_until(lambda: len(sink.messages()) == 3 and not mta.spool.messages)
    received_all = [m for handler in sink.handlers for m in handler.messages]
    (carol,) = [m for m in received_all if str(m.mail.sender) == "<me@example.com>"]
    notices = [m for m in received_all if str(m.mail.sender) == "<>"]
    # carol@example.net got the message with NOTIFY=FAILURE and the alias as ORCPT
    (rcpt,) = carol.recipients
    assert rcpt.params.notify == ("FAILURE",)
    assert rcpt.params.orcpt == ("rfc822", "info@example.org")
    # the sender: an "expanded" notice for info (two targets), a "delivered" one for
    # alice's copy: bob (one target) passed NOTIFY=SUCCESS on, info had reached alice
    # first (one copy, the notices both asked for, info's ORCPT)
    by_kind = {}
    for received in notices:
        assert [str(r.recipient) for r in received.recipients] == ["me@example.com"]
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        by_kind["expanded" if "Action: expanded" in parsed.as_string() else "other"] = parsed
    assert len(by_kind) == 2
    expanded = by_kind["expanded"].as_string()
    assert "Final-Recipient: rfc822; info@example.org" in expanded
    assert "expanded to 2 addresses" in expanded
    assert "Original-Envelope-Id: e-1" in expanded
    delivered = by_kind["other"].as_string()
    assert "Action: delivered" in delivered
    assert "Final-Recipient: rfc822; alice@example.org" in delivered
    assert "Original-Recipient: rfc822; info@example.org" in delivered
    assert len(maildir(tmp_path, "alice@example.org")) == 1
