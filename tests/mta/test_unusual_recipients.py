"""A recipient with a quoted local part, through the whole MTA: the server takes it at RCPT,
the spool keeps it exactly, the next hop sees it as written, and its refusal comes back to
the sender as a bounce that names it."""

from __future__ import annotations

import email
import email.message
import email.policy
from pathlib import Path

from smtpx.client import Accepted, connect
from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from smtpx.protocol import Address, Rcpt, Reply
from smtpx.spool.message import Status
from smtpx.testing import Handler, ScriptedServer
from tests.mta.helpers import PLAIN, config, maildir, message, wait_until

RECIPIENT = '"john smith"@example.net'


async def test_a_quoted_recipient_with_a_space_is_kept_and_bounced(tmp_path: Path) -> None:
    seen: list[Address] = []

    class Refuses(Handler):
        def rcpt(self, command: Rcpt) -> Reply:
            seen.append(command.recipient)
            return Reply.of(550, "no such user", "5.1.1")

    async with ScriptedServer(Refuses) as sink:
        cfg = config(tmp_path, routing={"routes": {"example.net": [f"127.0.0.1:{sink.port}"]}})
        async with Mta(cfg, dns=FakeDns()) as mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                sent = await client.send(message(1, sender="me@example.org", to=f"<{RECIPIENT}>"))
                assert isinstance(sent, Accepted)
            await wait_until(lambda: maildir(tmp_path, "me@example.org"))
            (frozen,) = [m for m in mta.spool.status() if m.status is Status.FROZEN]
            assert [r for r, _ in frozen.failed] == [RECIPIENT]
    (refused,) = seen
    assert (refused.local_part, refused.domain) == ("john smith", "example.net")
    (stored,) = maildir(tmp_path, "me@example.org")
    report = email.message_from_bytes(stored, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    parts = report.get_payload()
    assert isinstance(parts, list)
    status = parts[1]
    assert isinstance(status, email.message.Message)
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    (block,) = blocks[1:]
    assert isinstance(block, email.message.Message)
    assert block["Final-Recipient"] == f"rfc822; {RECIPIENT}"
    assert (block["Action"], block["Status"]) == ("failed", "5.1.1")
