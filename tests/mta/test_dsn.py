"""DSN through ``smtpx serve`` with stdlib smtplib as the client: the server offers DSN,
NOTIFY=SUCCESS gets a success notice in the sender's mailbox, NOTIFY=NEVER silences a
bounce, and the notices are read back with the stdlib ``email`` package."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
from pathlib import Path

from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from smtpx.protocol import Rcpt, Reply
from smtpx.testing import Handler, ScriptedServer
from tests.mta.helpers import config, maildir, wait_until

MESSAGE = b"From: me@example.org\r\nSubject: dsn\r\nMessage-ID: <dsn@t>\r\n\r\nhello\r\n"


class Refuses(Handler):
    def rcpt(self, command: Rcpt) -> Reply:
        return Reply.of(550, "no such user", "5.1.1")


def send(port: int, recipients: dict[str, list[str]]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("dsn")
        client.mail("me@example.org", ["RET=HDRS", "ENVID=envid-1"])
        for recipient, options in recipients.items():
            assert client.rcpt(recipient, options)[0] == 250
        code, _ = client.data(MESSAGE)
        assert code == 250


def parsed(data: bytes) -> email.message.Message:
    return email.message_from_bytes(data.replace(b"\n", b"\r\n"), policy=email.policy.default)


async def test_notices_follow_notify_end_to_end(tmp_path: Path) -> None:
    async with ScriptedServer(Refuses) as refusing:
        cfg = config(
            tmp_path,
            routing={"routes": {"example.net": [f"127.0.0.1:{refusing.port}"]}},
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            recipients = {
                "user@example.org": ["NOTIFY=SUCCESS", "ORCPT=rfc822;Boss@example.org"],
                "silent@example.net": ["NOTIFY=NEVER"],
                "loud@example.net": [],
            }
            await asyncio.to_thread(send, mta.server.ports[0], recipients)
            await wait_until(lambda: len(maildir(tmp_path, "me@example.org")) == 2)
            await wait_until(
                lambda: (
                    not mta.spool.messages
                    or all(m.status.value == "frozen" for m in mta.spool.messages.values())
                )
            )
        mailbox = [parsed(data) for data in maildir(tmp_path, "me@example.org")]
    by_subject = {str(notice["Subject"]): notice for notice in mailbox}
    assert set(by_subject) == {
        "Successful Mail Delivery Report",
        "Undelivered Mail Returned to Sender",
    }
    success = by_subject["Successful Mail Delivery Report"].as_string()
    assert "Action: delivered" in success
    assert "Original-Recipient: rfc822; Boss@example.org" in success
    assert "Original-Envelope-Id: envid-1" in success
    bounce = by_subject["Undelivered Mail Returned to Sender"].as_string()
    assert "loud@example.net" in bounce and "silent@example.net" not in bounce
    assert len(maildir(tmp_path, "user@example.org")) == 1
