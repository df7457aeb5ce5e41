"""DSN (RFC 3461) through the spool: NOTIFY and ORCPT kept per recipient on disk, honoured
in our notices (read back with the stdlib ``email`` package), and passed on to a next hop
that offers DSN, which then sends the notices itself."""

from __future__ import annotations

import email
import email.message
import email.policy
from dataclasses import replace
from pathlib import Path

from smtpx.envelope import Envelope, RetryInterval
from smtpx.protocol.params import RcptParams
from smtpx.protocol.replies import Reply
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.spool import Delivery, Local, RouteLater, Spool
from smtpx.testing import Handler, MemoryNetwork
from tests.spool.helpers import MX, make_spool, settle, traced, virtual
from tests.spool.test_spool import refusing

SENDER = "sender@example.com"


def delivery(params: dict[str, str], *, ret: str = "RET=HDRS ENVID=env42") -> Delivery:
    envelope = Envelope.create(
        sender=SENDER,
        recipients=list(params),
        recipient_params=params,
        sender_args=ret,
        message=b"From: sender@example.com\r\nSubject: dsn\r\nMessage-ID: <d@t>\r\n\r\nhi\r\n",
    )
    return Delivery(envelope, next_hops=(MX,))


async def notices(spool: Spool) -> list[email.message.EmailMessage]:
    """The notices waiting in the spool for the sender, parsed."""
    found = []
    for entry in spool.messages.values():
        if entry.sender == "<>":
            parsed = email.message_from_bytes(
                await spool.read_message(entry.id), policy=email.policy.default
            )
            assert isinstance(parsed, email.message.EmailMessage)
            found.append(parsed)
    return found


def status_blocks(notice: email.message.EmailMessage) -> list[dict[str, str]]:
    """The blocks of the message/delivery-status part: per message, then per recipient."""
    (status,) = [p for p in notice.walk() if p.get_content_type() == "message/delivery-status"]
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return [dict(block.items()) for block in blocks if isinstance(block, email.message.Message)]


def per_recipient(notice: email.message.EmailMessage) -> list[dict[str, str]]:
    return status_blocks(notice)[1:]


def no_dsn_hop() -> Handler:
    return Handler(extensions=replace(Handler().extensions, dsn=False))


def test_notify_never_is_silent_and_orcpt_comes_back(tmp_path: Path) -> None:
    network = MemoryNetwork(default=refusing({"a@example.org": 550, "b@example.org": 550}))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, reporting_mta="mx.test") as spool:
            await spool.add(
                [
                    delivery(
                        {
                            "a@example.org": "NOTIFY=NEVER",
                            "b@example.org": "ORCPT=rfc822;Original-B@example.org",
                        }
                    )
                ]
            )
            await settle()
            (notice,) = await notices(spool)
            (block,) = per_recipient(notice)  # a asked for nothing
            assert block["Final-Recipient"] == "rfc822; b@example.org"
            assert block["Original-Recipient"] == "rfc822; Original-B@example.org"
            assert block["Action"] == "failed"
            assert status_blocks(notice)[0]["Original-Envelope-Id"] == "env42"

    virtual(scenario)


def test_success_is_reported_as_relayed_by_a_next_hop_without_dsn(tmp_path: Path) -> None:
    network = MemoryNetwork(default=no_dsn_hop)

    async def scenario() -> None:
        async with make_spool(tmp_path, network, reporting_mta="mx.test") as spool:
            await spool.add([delivery({"a@example.org": "NOTIFY=SUCCESS,FAILURE", "b@x.org": ""})])
            await settle()
            (notice,) = await notices(spool)
            assert notice["Subject"] == "Successful Mail Delivery Report"
            (block,) = per_recipient(notice)
            assert (block["Action"], block["Status"]) == ("relayed", "2.0.0")
            assert block["Remote-MTA"] == "dns; mx.test"

    virtual(scenario)
    # The hop that does not offer DSN got no DSN parameters.
    (received,) = network.received("mx.test")
    assert all(not str(r.params) for r in received.recipients)
    assert received.mail.params.ret is None and received.mail.params.envid is None


def test_a_next_hop_with_dsn_gets_the_parameters_and_the_notices(tmp_path: Path) -> None:
    network = MemoryNetwork()

    async def scenario() -> None:
        async with make_spool(tmp_path, network) as spool:
            await spool.add(
                [delivery({"a@example.org": "NOTIFY=SUCCESS ORCPT=rfc822;A@example.org"})]
            )
            await settle()
            assert await notices(spool) == []  # the next hop reports now, not us

    virtual(scenario)
    (received,) = network.received("mx.test")
    (rcpt,) = received.recipients
    assert rcpt.params.notify == ("SUCCESS",)
    assert rcpt.params.orcpt == ("rfc822", "A@example.org")
    assert (received.mail.params.ret, received.mail.params.envid) == ("HDRS", "env42")


class Mailbox:
    async def deliver(self, message: SpooledMessage, content: bytes) -> list[tuple[str, Reply]]:
        return [(r, Reply.of(250, "delivered")) for r in message.recipients]


def test_local_delivery_is_reported_as_delivered(tmp_path: Path) -> None:
    async def router(message: SpooledMessage) -> Local | RouteLater:
        # The notice (for example.com) waits in the spool, where the test reads it.
        return Local(Mailbox()) if message.route == "local" else RouteLater("held")

    async def scenario() -> None:
        async with make_spool(tmp_path, MemoryNetwork(), router=router) as spool:
            mail = delivery({"u@example.org": "NOTIFY=SUCCESS"})
            await spool.add([replace(mail, next_hops=(), route="local")])
            await settle()
            (notice,) = await notices(spool)
            (block,) = per_recipient(notice)
            assert block["Action"] == "delivered" and "Remote-MTA" not in block

    virtual(scenario)


def test_notify_decides_between_delay_warning_and_bounce(tmp_path: Path) -> None:
    codes = {"delay@example.org": 451, "fail@example.org": 451}
    network = MemoryNetwork(default=refusing(codes))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, delay_warning_after=30.0) as spool:
            mail = delivery(
                {"delay@example.org": "NOTIFY=DELAY", "fail@example.org": "NOTIFY=FAILURE"}
            )
            intervals = tuple(RetryInterval.parse(t) for t in ("1m", "1m"))
            await spool.add([replace(mail, retry_intervals=intervals)])
            await settle(200)  # one warning (after 30 s), then both fail for good
            kinds = sorted(
                (notice["Subject"], tuple(b["Final-Recipient"] for b in per_recipient(notice)))
                for notice in await notices(spool)
            )
            assert kinds == [
                ("Delayed Mail (still being retried)", ("rfc822; delay@example.org",)),
                ("Undelivered Mail Returned to Sender", ("rfc822; fail@example.org",)),
            ]

    virtual(scenario)


def test_recipient_parameters_survive_a_restart(tmp_path: Path) -> None:
    network = MemoryNetwork(down={"mx.test"})

    async def first() -> str:
        async with make_spool(tmp_path, network) as spool:
            (message_id,) = await spool.add(
                [
                    delivery(
                        {
                            "a@example.org": "NOTIFY=SUCCESS ORCPT=rfc822;A@x.org",
                            "b@example.org": "",
                        }
                    )
                ],
                frozen=True,
            )
            return message_id

    message_id = virtual(first)

    async def second() -> None:
        async with make_spool(tmp_path, network) as spool:
            entry = spool.get(message_id)
            assert entry.status is Status.FROZEN
            params = entry.info().params_of(entry.info().recipients[0])
            assert params.notify == ("SUCCESS",) and params.orcpt == ("rfc822", "A@x.org")
            assert not entry.info().params_of(entry.info().recipients[1]).notify

    virtual(second)
    (on_disk,) = Spool.status_from_disk(tmp_path)
    # Only recipients that gave parameters are listed (b@ gave none).
    assert on_disk.rcpt_params == {"a@example.org": "NOTIFY=SUCCESS ORCPT=rfc822;A@x.org"}


def test_a_message_without_recipient_parameters_stays_version_1(tmp_path: Path) -> None:
    """RCPT without parameters (most mail) records none: the metadata keeps version 1,
    which an older smtpx reads too."""

    async def scenario() -> None:
        async with make_spool(tmp_path, MemoryNetwork(down={"mx.test"})) as spool:
            plain = delivery({"a@example.org": ""})
            info = plain.envelope.info
            # As the server hands it in: every recipient with its (here empty) parameters.
            info = replace(info, recipient_params=((info.recipients[0], RcptParams()),))
            envelope = Envelope(info=info, content=plain.envelope.content)
            (message_id,) = await spool.add([replace(plain, envelope=envelope)], frozen=True)
            entry = spool.get(message_id)
            assert entry.rcpt_params == {} and entry.to_meta()["v"] == 1

    virtual(scenario)


def test_ret_full_returns_a_small_message_and_a_large_one_s_headers(tmp_path: Path) -> None:
    """RET=FULL: the message comes back whole up to 64 KB; a larger one's header section
    comes back, and the bounce reads it without holding it (8 MB: a few 1 MiB chunks
    allocated at the peak of the failed attempt and its notice, not the message)."""
    network = MemoryNetwork(default=refusing({"a@example.org": 550}))
    head = b"From: sender@example.com\r\nSubject: big\r\nMessage-ID: <big@t>\r\n\r\n"
    large = head + b"a line of the large message\r\n" * (8_000_000 // 29)

    def full(message: bytes) -> Delivery:
        envelope = Envelope.create(
            sender=SENDER, recipients=["a@example.org"], sender_args="RET=FULL", message=message
        )
        return Delivery(envelope, next_hops=(MX,))

    async def scenario() -> int:
        async with make_spool(tmp_path / "1", network, reporting_mta="mx.test") as spool:
            await spool.add([full(head + b"small body\r\n")])
            await settle()
            (small,) = await notices(spool)
            (returned,) = [p for p in small.walk() if p.get_content_type() == "message/rfc822"]
            assert b"small body" in returned.as_bytes()
        async with make_spool(tmp_path / "2", network, reporting_mta="mx.test") as spool:
            (big,) = await spool.add([full(large)], frozen=True)
            with traced() as peak_now:
                await spool.send([big])
                await settle()
                peak = peak_now()
            (notice,) = await notices(spool)
            types = [p.get_content_type() for p in notice.walk()]
            assert "message/rfc822" not in types and "text/rfc822-headers" in types
            (headers,) = [p for p in notice.walk() if p.get_content_type() == "text/rfc822-headers"]
            assert "Subject: big" in headers.get_content()
            assert "a line of the large message" not in notice.as_string()
            return peak

    peak = virtual(scenario)
    assert peak < 6 << 20, f"{peak / 2**20:.1f} MiB allocated at the peak"  # whole: 16+
