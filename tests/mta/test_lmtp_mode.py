"""``smtpx serve`` behind another MTA: ``[server] lmtp`` listeners deliver local mailboxes
at once with one reply each, spool the rest (aliases, relayed addresses), and say LMTP
in the Received field."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpx.envelope import HostPort
from smtpx.errors import ConfigError
from smtpx.mta.app import Mta
from smtpx.mta.config import MtaConfig
from smtpx.mta.lmtp import LmtpAgent
from smtpx.mta.routing import FakeDns
from tests.mta.helpers import config, maildir, sending, wait_until

MESSAGE = b"From: me@example.com\r\nSubject: via lmtp\r\n\r\nhello\r\n"


async def test_local_mailboxes_at_once_aliases_spooled(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        server={"listen": [], "lmtp": ["127.0.0.1:0"]},
        local={"mailboxes": ["alice", "carol"], "aliases": {"bob": ["alice"]}},
    )
    async with Mta(cfg, dns=FakeDns()) as mta:
        agent = LmtpAgent(HostPort("127.0.0.1", mta.server.ports[0]), "postfix.test")
        results = dict(
            await agent.deliver(
                sending("alice@example.org", "nobody@example.org", "bob@example.org"), MESSAGE
            )
        )
        # alice: delivered before the reply; nothing spooled for her
        assert results["alice@example.org"].code == 250
        assert "Delivered to" in results["alice@example.org"].text
        assert str(results["nobody@example.org"]).startswith("550 5.1.1 ")
        assert results["bob@example.org"].text.startswith("Ok: queued as ")
        assert len(maildir(tmp_path, "alice@example.org")) >= 1
        await wait_until(lambda: len(maildir(tmp_path, "alice@example.org")) == 2)
        await wait_until(lambda: not mta.spool.messages)
    first = maildir(tmp_path, "alice@example.org")[0]
    assert b"with LMTP id " in first
    assert mta.spool.stats["spooled"] == 1  # bob's copy only


async def test_a_failed_local_delivery_is_that_recipients_4xx(tmp_path: Path) -> None:
    cfg = config(tmp_path, server={"listen": [], "lmtp": ["127.0.0.1:0"]})
    (tmp_path / "mail" / "example.org").mkdir(parents=True)
    (tmp_path / "mail" / "example.org" / "blocked").write_text("not a directory")
    async with Mta(cfg, dns=FakeDns()) as mta:
        agent = LmtpAgent(HostPort("127.0.0.1", mta.server.ports[0]), "postfix.test")
        results = dict(
            await agent.deliver(sending("blocked@example.org", "fine@example.org"), MESSAGE)
        )
    assert str(results["blocked@example.org"]).startswith("451 4.3.0 Cannot write the mailbox")
    assert results["fine@example.org"].code == 250
    assert len(maildir(tmp_path, "fine@example.org")) == 1
    assert mta.spool.stats["spooled"] == 0


def test_lmtp_listeners_in_the_config(tmp_path: Path) -> None:
    cfg = MtaConfig.from_dict({"server": {"listen": [], "lmtp": ["127.0.0.1"]}})
    (listener,) = cfg.listeners()
    assert (listener.port, listener.lmtp, listener.name) == (24, True, "lmtp 127.0.0.1:24")
    with pytest.raises(ConfigError) as caught:
        MtaConfig.from_dict({"server": {"lmtp": ["127.0.0.1:25"]}})
    assert caught.value.key == "server.lmtp[0]"
    assert MtaConfig.default().server.lmtp == ()


async def test_a_spilled_message_goes_to_the_maildir_from_its_file(tmp_path: Path) -> None:
    """Past spill_threshold the server keeps the message in a file; the maildir is
    written from it a slice at a time, before the session closes the file."""
    body = b"".join(b".%06d a line that starts with a dot\r\n" % n for n in range(40_000))
    message = b"From: me@example.com\r\nSubject: large\r\n\r\n" + body
    cfg = config(tmp_path, server={"listen": [], "lmtp": ["127.0.0.1:0"]})
    async with Mta(cfg, dns=FakeDns()) as mta:
        assert len(message) > 4 * mta.config.server.spill_threshold
        agent = LmtpAgent(HostPort("127.0.0.1", mta.server.ports[0]), "postfix.test")
        [(_, reply)] = await agent.deliver(sending("alice@example.org"), message)
    assert reply.code == 250, reply
    (stored,) = maildir(tmp_path, "alice@example.org")
    assert stored.endswith(b"\n\n" + body.replace(b"\r\n", b"\n"))
