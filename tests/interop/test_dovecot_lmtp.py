"""Local delivery to a real Dovecot over LMTP (Debian's dovecot-lmtpd): per-recipient
replies after one DATA, subaddresses, and an unknown user's 550 bounced by the spool."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from smtpx.client import Accepted, connect
from smtpx.envelope import Envelope, HostPort
from smtpx.mta.app import Mta
from smtpx.mta.lmtp import LmtpAgent
from smtpx.mta.routing import FakeDns
from smtpx.testing import Handler, ScriptedServer
from tests.interop.dovecot import private_dovecot
from tests.mta.helpers import PLAIN, config, sending, wait_until

MESSAGE = b"From: me@example.com\r\nSubject: lmtp\r\nMessage-ID: <l@t>\r\n\r\n.dot\r\nhello\r\n"


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
async def test_one_reply_per_recipient_from_dovecot(tcp: bool) -> None:
    with private_dovecot(["alice", "bob"], tcp=tcp) as dovecot:
        target = HostPort("127.0.0.1", dovecot.port) if tcp and dovecot.port else dovecot.socket
        agent = LmtpAgent(target, "mx.test", timeout=30)
        results = await agent.deliver(
            sending("alice@example.org", "nobody@example.org", "bob+tag@example.org"), MESSAGE
        )
        assert [r for r, _ in results] == [
            "alice@example.org",
            "nobody@example.org",
            "bob+tag@example.org",
        ]
        alice, nobody, bob = (reply for _, reply in results)
        assert (alice.code, str(alice.enhanced)) == (250, "2.0.0") and "Saved" in alice.text
        assert (bob.code, str(bob.enhanced)) == (250, "2.0.0")
        assert (nobody.code, str(nobody.enhanced)) == (550, "5.1.1")
        assert "User doesn't exist" in nobody.text
        (stored,) = dovecot.messages("alice")
        assert b"Return-Path: <me@example.com>\n" in stored
        assert b"with LMTP" in stored
        assert stored.endswith(b"\n\n.dot\nhello\n")  # dot-stuffing undone
        assert len(dovecot.messages("bob")) == 1


async def test_the_mta_delivers_through_dovecot_and_bounces_its_refusals(tmp_path: Path) -> None:
    with private_dovecot(["alice"]) as dovecot:
        async with ScriptedServer(Handler) as sink:
            cfg = config(
                tmp_path,
                local={"lmtp": str(dovecot.socket)},
                routing={"routes": {"example.com": [f"127.0.0.1:{sink.port}"]}},
            )
            envelope = Envelope.create(
                sender="me@example.com",
                recipients=["alice@example.org", "nobody@example.org"],
                message=MESSAGE,
            )
            async with Mta(cfg, dns=FakeDns()) as mta:
                async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                    assert isinstance(await client.send(envelope), Accepted)
                await wait_until(lambda: dovecot.messages("alice") and sink.messages())
                await wait_until(
                    lambda: all(m.recipients == [] for m in mta.spool.messages.values())
                )
        (bounce,) = sink.messages()
        (stored,) = dovecot.messages("alice")
    notice = email.message_from_bytes(bounce, policy=email.policy.default).as_string()
    assert "Final-Recipient: rfc822; nobody@example.org" in notice
    assert "Status: 5.1.1" in notice
    assert "User doesn't exist" in notice
    assert "alice@example.org" not in notice.split("Content-Description: Message Headers")[0]
    assert b"Received: from " in stored and b"by mx.test (smtpx)" in stored


async def test_lmtp_mode_in_front_of_dovecot_passes_each_reply_on(tmp_path: Path) -> None:
    """Another MTA -> smtpx (LMTP server mode) -> Dovecot: each recipient's reply is
    Dovecot's, and nothing waits in smtpx's spool."""
    with private_dovecot(["alice"]) as dovecot:
        cfg = config(
            tmp_path,
            server={"listen": [], "lmtp": ["127.0.0.1:0"]},
            local={"lmtp": str(dovecot.socket)},
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            agent = LmtpAgent(HostPort("127.0.0.1", mta.server.ports[0]), "front.test")
            results = dict(
                await agent.deliver(sending("alice@example.org", "nobody@example.org"), MESSAGE)
            )
            assert mta.spool.stats["spooled"] == 0
        assert len(dovecot.messages("alice")) == 1
    alice, nobody = results["alice@example.org"], results["nobody@example.org"]
    assert alice.code == 250 and "Saved" in alice.text
    assert str(nobody).startswith("550 5.1.1 ") and "User doesn't exist" in nobody.text


async def test_a_large_message_goes_from_the_spool_to_dovecot_slice_by_slice(
    tmp_path: Path,
) -> None:
    """3 MB through the MTA's spool to Dovecot: read from the journal, unstuffed and sent
    a slice at a time (dots at line starts all the way through); Dovecot stores it whole."""
    body = b"".join(
        b".%07d a line that starts with a dot\r\nplain line\r\n" % n for n in range(70_000)
    )
    content = b"From: me@example.com\r\nSubject: large\r\nMessage-ID: <big@t>\r\n\r\n" + body
    with private_dovecot(["alice"]) as dovecot:
        cfg = config(tmp_path, local={"lmtp": str(dovecot.socket)})
        envelope = Envelope.create(
            sender="me@example.com", recipients=["alice@example.org"], message=content
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert isinstance(await client.send(envelope), Accepted)
            await wait_until(lambda: dovecot.messages("alice"), timeout=30)
        (stored,) = dovecot.messages("alice")
    assert len(content) > 3 * (1 << 20)
    assert stored.endswith(b"\n\n" + body.replace(b"\r\n", b"\n"))
