"""Addresses that need quoting, UTF-8 or a literal survive the spool, bounces and warnings.

The spool keeps recipients as ``str(address)`` and builds the original envelope back from
that text when it bounces or warns, so every form the parser accepts must read back.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import re
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings

from smtpx.envelope import Envelope
from smtpx.protocol import Address, Rcpt, Reply, Sender
from smtpx.spool.journal import Location
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.spool import Hops
from smtpx.testing import Handler, MemoryNetwork, ReceivedMessage
from tests.protocol.test_addresses import mailbox_texts
from tests.spool.helpers import MX, delivery, make_spool, settle, virtual

UNUSUAL = [
    pytest.param('"john smith"@example.net', id="quoted-space"),
    pytest.param('"say \\"hi\\" \\\\ bye"@example.net', id="quoted-escapes"),
    pytest.param('"a@b, c>d"@example.net', id="quoted-specials"),
    pytest.param('""@example.net', id="quoted-empty"),
    pytest.param('"jürgen müller"@example.net', id="quoted-utf8"),
    pytest.param("jürgen@bücher.example", id="utf8"),
    pytest.param("u@[192.0.2.1]", id="ipv4-literal"),
    pytest.param("u@[IPv6:2001:db8::1]", id="ipv6-literal"),
]
SENDER = '"jane doe"@example.com'


class Refuses(Handler):
    """Refuses ``recipient`` (compared as an Address, not as text) with ``code``."""

    recipient: ClassVar[Address]
    code: ClassVar[int]

    def rcpt(self, command: Rcpt) -> Reply:
        if command.recipient == self.recipient:
            return Reply.of(self.code, "refused for the test", f"{self.code // 100}.1.1")
        return super().rcpt(command)


def refusing(recipient: str, code: int) -> type[Handler]:
    return type("R", (Refuses,), {"recipient": Address.parse(recipient), "code": code})


async def _router(message: SpooledMessage) -> Hops:
    return Hops((MX,), "mx")


def _typed(field: str) -> str:
    """A Final-Recipient value read back: RFC 6533 ``\\x{HEX}`` escapes decoded."""
    return re.sub(r"\\x\{([0-9A-F]+)\}", lambda m: chr(int(m[1], 16)), field.split("; ", 1)[1])


def _read(notice: ReceivedMessage) -> tuple[email.message.Message, str]:
    """The per-recipient block of a one-recipient notice, and its text for people."""
    report = email.message_from_bytes(notice.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    parts = report.get_payload()
    assert isinstance(parts, list)
    status = parts[1]
    assert isinstance(status, email.message.Message)
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    (block,) = blocks[1:]
    assert isinstance(block, email.message.Message)
    to = report["To"].addresses
    assert [a.addr_spec for a in to] == [SENDER]
    human = parts[0]
    assert isinstance(human, email.message.EmailMessage)
    text = human.get_content()
    assert isinstance(text, str)
    return block, text


@pytest.mark.parametrize("recipient", UNUSUAL)
def test_a_refused_unusual_recipient_is_bounced(tmp_path: Path, recipient: str) -> None:
    network = MemoryNetwork(default=refusing(recipient, 550))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, router=_router, reporting_mta="mx.test") as spool:
            (message_id,) = await spool.add(
                [delivery(1, sender=SENDER, recipients=[recipient, "ok@example.org"], next_hops=())]
            )
            assert spool.get(message_id).recipients == [recipient, "ok@example.org"]
            await settle()
            assert spool.get(message_id).status is Status.FROZEN
            assert spool.get(message_id).failed[0][0] == recipient
            assert spool.stats["bounces"] == 1

    virtual(scenario)
    original, bounce = network.received("mx.test")
    assert [str(r.recipient) for r in original.recipients] == ["ok@example.org"]
    assert bounce.mail.sender.is_null
    assert [str(r.recipient) for r in bounce.recipients] == [SENDER]
    block, text = _read(bounce)
    assert _typed(block["Final-Recipient"]) == recipient
    assert (block["Action"], block["Status"]) == ("failed", "5.1.1")
    assert "550" in block["Diagnostic-Code"]
    assert f"<{recipient}>: host mx.test said:" in text


@pytest.mark.parametrize("recipient", UNUSUAL)
def test_a_delayed_unusual_recipient_gets_a_warning(tmp_path: Path, recipient: str) -> None:
    network = MemoryNetwork(default=refusing(recipient, 451))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, router=_router, delay_warning_after=3600) as spool:
            (message_id,) = await spool.add(
                [delivery(1, sender=SENDER, recipients=[recipient], retry=["1h", "1h"])]
            )
            await settle()
            await settle(3601)
            assert spool.stats["delay_warnings"] == 1
            assert spool.get(message_id).recipients == [recipient]

    virtual(scenario)
    (warning,) = [m for m in network.received("mx.test") if m.mail.sender.is_null]
    assert [str(r.recipient) for r in warning.recipients] == [SENDER]
    block, text = _read(warning)
    assert _typed(block["Final-Recipient"]) == recipient
    assert (block["Action"], block["Status"]) == ("delayed", "4.1.1")
    assert f"<{recipient}>: host mx.test said:" in text


@settings(max_examples=200, deadline=None)
@given(mailbox_texts(), mailbox_texts())
def test_any_address_survives_the_spools_text_form(sender_text: str, recipient_text: str) -> None:
    # What Spool.add writes (the sender's path, str of each recipient), through the JSON
    # of the journal, read back as the spool reads it: for delivery (info), and for a
    # bounce or a warning (the original envelope, built from the stored text).
    sender, recipient = Address.parse(sender_text), Address.parse(recipient_text)
    entry = SpooledMessage(
        id="m",
        parent_id="m",
        spool_date=0.0,
        status=Status.SEND_NOW,
        sender=Sender(sender).path(),
        recipients=[str(recipient)],
        location=Location(0, 0, 0),
    )
    meta = json.loads(json.dumps(entry.to_meta(), ensure_ascii=False).encode("utf-8"))
    again = SpooledMessage.from_meta(meta, entry.location)
    info = again.info()
    original = Envelope.create(sender=again.sender, recipients=again.recipients, message=b"")
    for got in (info, original.info):
        assert got.sender.address is not None
        (got_recipient,) = got.recipients
        for address, want in ((got.sender.address, sender), (got_recipient, recipient)):
            assert (address.local_part, address.domain) == (want.local_part, want.domain)
