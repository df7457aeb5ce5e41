"""A guard of the caller's has a message quarantined at intake (F13): the client gets its
250, the spool holds the message with a typed reason, nothing is sent."""

from __future__ import annotations

from pathlib import Path

from smtpx.client import Accepted, connect
from smtpx.envelope import Envelope
from smtpx.mta.app import Mta
from smtpx.mta.guards import Guard
from smtpx.mta.inbound.policy import ACCEPT, Accept, Quarantine
from smtpx.mta.routing import FakeDns
from smtpx.server import Session, Transaction
from smtpx.spool.message import QuarantineReason, Status
from tests.mta.helpers import PLAIN, config, message, wait_until


class HoldOdd(Guard):
    name = "hold-odd"

    async def intake(
        self, session: Session, transaction: Transaction, envelope: Envelope
    ) -> Accept | Quarantine:
        if envelope.subject_decoded() == "odd":
            return Quarantine("odd subject")
        return ACCEPT


async def test_a_guard_quarantines_at_intake(tmp_path: Path) -> None:
    cfg = config(tmp_path, routing={"routes": {"example.net": ["127.0.0.1:9"]}})
    odd = Envelope.create(
        sender="a@example.com",
        recipients=["x@example.net", "y@example.org"],
        message=b"From: Ann <a@example.com>\r\nSubject: odd\r\n\r\nbody\r\n",
    )

    def delivered() -> list[Path]:
        return delivered_in(tmp_path / "mail")

    async with Mta(cfg, dns=FakeDns(), guards=[HoldOdd()]) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            assert isinstance(await client.send(odd), Accepted)
            assert isinstance(await client.send(message(1, to="z@example.org")), Accepted)
        held = [m for m in mta.spool.status() if m.status is Status.QUARANTINED]
        assert sorted(m.route or "" for m in held) == ["example.net", "example.org"]
        assert {m.quarantine for m in held} == {
            QuarantineReason("odd subject", "<a@example.com>", "Ann <a@example.com>")
        }
        # The other message goes its way, to the local maildir; the odd one never does.
        # (Its file appears before the spool settles it: wait for both.)
        await wait_until(
            lambda: (
                len(delivered()) == 1
                and all(m.status is Status.QUARANTINED for m in mta.spool.status())
            )
        )
        assert b"Subject: 1" in delivered()[0].read_bytes()
        assert len(mta.spool.status()) == 2


def delivered_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name == "new"]
