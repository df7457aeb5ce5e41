"""Honest notices: a bounce or a delay warning names a remote MTA, and quotes an SMTP
diagnostic, only when a remote MTA really answered (RFC 3464 2.3.5 and 2.3.6). When smtpx
decided by itself (the message is over the next hop's SIZE, the next hop lacks SMTPUTF8,
a TLS policy failed, the domain does not exist, a local mailbox refused), the notice says
so in its own words, with the ``X-Smtpx`` diagnostic type.

Every notice is read back with the stdlib ``email`` package."""

from __future__ import annotations

import email
import email.message
import email.policy
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from smtpx.client import ClientConfig, TlsConfig, TlsMode
from smtpx.envelope import HostPort
from smtpx.protocol import Extensions, Rcpt, Reply
from smtpx.spool.message import SpooledMessage
from smtpx.spool.spool import Destination, Hops, Local, Unroutable
from smtpx.testing import Handler, MemoryNetwork
from tests.spool.helpers import MX, delivery, make_spool, settle, virtual

BACK = HostPort("example.com.test", 25)  # where notices to the sender go


@dataclass
class Notice:
    """A notice read back: its per-message and per-recipient fields, and its text."""

    message: email.message.Message
    recipient: email.message.Message
    text: str
    subject: str


def read(data: bytes) -> Notice:
    report = email.message_from_bytes(data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text_part, status, _ = report.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    per_message, per_recipient = blocks
    assert isinstance(per_message, email.message.Message)
    assert isinstance(per_recipient, email.message.Message)
    assert isinstance(text_part, email.message.EmailMessage)
    return Notice(per_message, per_recipient, text_part.get_content(), str(report["Subject"]))


def assert_local(notice: Notice, *, status: str, action: str, says: str) -> None:
    """A notice about a decision smtpx made itself: no Remote-MTA, no SMTP diagnostic."""
    assert notice.message["Reporting-MTA"] == "dns; reporter.test"
    assert notice.recipient["Action"] == action
    assert notice.recipient["Status"] == status
    assert "Remote-MTA" not in notice.recipient
    diagnostic = str(notice.recipient["Diagnostic-Code"])
    assert diagnostic.startswith("X-Smtpx; "), diagnostic
    assert says in diagnostic
    assert " said" not in notice.text and "smtp;" not in notice.text
    assert says in notice.text and f"(status {status})" in notice.text


def assert_remote(notice: Notice, *, status: str, action: str, reply: str) -> None:
    """A notice that quotes what the remote MTA mx.test answered."""
    assert notice.message["Reporting-MTA"] == "dns; reporter.test"
    assert notice.recipient["Action"] == action
    assert notice.recipient["Status"] == status
    assert notice.recipient["Remote-MTA"] == "dns; mx.test"
    assert notice.recipient["Diagnostic-Code"] == f"smtp; {reply}"
    assert "host mx.test said:" in notice.text and reply in notice.text


class Refuses(Handler):
    code: ClassVar[int] = 550

    def rcpt(self, command: Rcpt) -> Reply:
        return Reply.of(self.code, "no such user here", f"{self.code // 100}.1.1")


class Refuses451(Refuses):
    code = 451


class SmallSize(Handler):
    def __init__(self) -> None:
        super().__init__(extensions=Extensions(pipelining=True, size=20, smtputf8=True))


class NoUtf8(Handler):
    def __init__(self) -> None:
        super().__init__(extensions=Extensions(pipelining=True, enhancedstatuscodes=True))


class Mailboxes:
    """A local delivery agent whose mailboxes all answer ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    async def deliver(self, message: SpooledMessage, content: bytes) -> list[tuple[str, Reply]]:
        return [(recipient, self.reply) for recipient in message.recipients]


def run(
    tmp_path: Path,
    destination: Destination,
    *,
    handler: type[Handler] = Handler,
    recipient: str = "user@example.org",
    config: ClientConfig | None = None,
    retry: tuple[str, ...] = ("1s",),
    wait: float = 0,
    **spool: object,
) -> Notice:
    """Spool one message that goes to ``destination`` (notices go to BACK), let the spool
    work for ``wait`` seconds, and read the one notice the sender got."""
    network = MemoryNetwork(handlers={"mx.test": handler, BACK.host: Handler})
    if config is not None:
        network.config = config

    async def router(message: SpooledMessage) -> Destination:
        return Hops((BACK,), "back") if message.sender == "<>" else destination

    async def scenario() -> list[bytes]:
        async with make_spool(
            tmp_path, network, router=router, reporting_mta="reporter.test", **spool
        ) as s:
            await s.add([delivery(1, recipients=[recipient], next_hops=(), retry=list(retry))])
            await settle()
            await settle(wait)
            await settle()
        return [m.data for m in network.received(BACK.host)]

    (notice,) = virtual(scenario)
    return read(notice)


HOPS = Hops((MX,), "mx")


def test_a_refusal_by_the_remote_mta_names_it(tmp_path: Path) -> None:
    notice = run(tmp_path, HOPS, handler=Refuses)
    assert_remote(notice, status="5.1.1", action="failed", reply="550 5.1.1 no such user here")


def test_over_the_next_hops_size_is_our_own_decision(tmp_path: Path) -> None:
    notice = run(tmp_path, HOPS, handler=SmallSize)
    assert_local(notice, status="5.3.4", action="failed", says="over mx.test's limit of 20")


def test_a_next_hop_without_smtputf8_is_our_own_decision(tmp_path: Path) -> None:
    notice = run(tmp_path, HOPS, handler=NoUtf8, recipient="jörg@example.org")
    assert_local(notice, status="5.6.7", action="failed", says="does not support SMTPUTF8")


def test_a_failed_tls_policy_is_our_own_decision(tmp_path: Path) -> None:
    required = ClientConfig.for_testing(tls=[("mx.test", TlsConfig(mode=TlsMode.REQUIRED))])
    notice = run(tmp_path, HOPS, config=required, wait=2)
    assert_local(notice, status="5.4.7", action="failed", says="Delivery time expired")
    assert "TLS required for mx.test" in str(notice.recipient["Diagnostic-Code"])


def test_a_domain_that_does_not_exist_is_our_own_decision(tmp_path: Path) -> None:
    reply = Reply.of(550, "Domain nowhere.test does not exist (NXDOMAIN)", "5.1.2")
    notice = run(tmp_path, Unroutable(reply), recipient="user@nowhere.test")
    assert_local(notice, status="5.1.2", action="failed", says="does not exist (NXDOMAIN)")


def test_a_local_mailbox_refusal_names_no_remote_mta(tmp_path: Path) -> None:
    reply = Reply.of(550, "Mailbox unavailable", "5.1.1")
    notice = run(tmp_path, Local(Mailboxes(reply)))
    assert_local(notice, status="5.1.1", action="failed", says="Mailbox unavailable")


@pytest.mark.parametrize("enhanced", [True, False], ids=["enhanced", "bare"])
def test_a_local_delay_warning_names_no_remote_mta(tmp_path: Path, enhanced: bool) -> None:
    reply = Reply.of(452, "Mailbox full", "4.2.2" if enhanced else None)
    notice = run(
        tmp_path,
        Local(Mailboxes(reply)),
        retry=("1h", "1h"),
        delay_warning_after=3600,
        wait=3601,
    )
    assert notice.subject == "Delayed Mail (still being retried)"
    status = "4.2.2" if enhanced else "4.0.0"
    assert_local(notice, status=status, action="delayed", says="Mailbox full")


def test_a_remote_delay_then_expiry_quotes_the_remote_mta(tmp_path: Path) -> None:
    """The last attempt's 451 is what mx.test said: the failure quotes it."""
    notice = run(tmp_path, HOPS, handler=Refuses451, wait=2)
    assert_remote(notice, status="4.1.1", action="failed", reply="451 4.1.1 no such user here")


def test_a_remote_delay_warning_quotes_the_remote_mta(tmp_path: Path) -> None:
    notice = run(
        tmp_path, HOPS, handler=Refuses451, retry=("1h", "1h"), delay_warning_after=3600, wait=3601
    )
    assert_remote(notice, status="4.1.1", action="delayed", reply="451 4.1.1 no such user here")
