"""Spool ids derived from the envelope id (F7) and typed quarantine reasons (F13)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from smtpx.envelope import Batch, Envelope, RoutedEnvelope
from smtpx.spool.ids import SpoolIds, parent_of
from smtpx.spool.journal_store import NOWHERE
from smtpx.spool.message import QuarantineReason, SpooledMessage, Status
from smtpx.spool.spool import Delivery, SpoolError
from smtpx.testing import MemoryNetwork
from tests.spool.helpers import MX, delivery, make_spool, settle, virtual

ID = re.compile(r"[0-9A-Za-z_~]{16}-[0-9A-Za-z_~]{6}")
TWO_FROMS = b"From: Ann <ann@example.com>\r\nFrom: bob@example.com\r\nSubject: x\r\n\r\nbody\r\n"


def test_ids_count_from_a_random_start_and_skip_the_taken() -> None:
    ids = SpoolIds(random.Random(7))
    first, second = ids("E"), ids("E")
    assert first.startswith("E-") and second.startswith("E-") and first < second
    assert SpoolIds(random.Random(7))("E") == first  # same start: a later process differs
    taken = {SpoolIds(random.Random(7))("E")}
    assert SpoolIds(random.Random(7))("E", taken.__contains__) not in taken
    assert parent_of(first) == "E" and parent_of("06ORbSG~tfTaRV~_") == "06ORbSG~tfTaRV~_"


def test_the_messages_of_one_envelope_are_named_after_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with make_spool(tmp_path, MemoryNetwork(down={"mx.test"})) as spool:
            one = delivery(1)
            split = [one, Delivery(one.envelope, next_hops=(MX,), route="other")]
            ids = await spool.add(split, frozen=True)
            assert all(ID.fullmatch(i) for i in ids) and len(set(ids)) == 2
            assert {parent_of(i) for i in ids} == {str(one.envelope.id)}
            assert {spool.get(i).parent_id for i in ids} == {str(one.envelope.id)}
        # A later start spools the same envelope again: new ids, nothing overwritten.
        async with make_spool(tmp_path, MemoryNetwork(down={"mx.test"})) as spool:
            again = await spool.add([one], frozen=True)
            assert again[0] not in ids and len(spool.status()) == 3

    virtual(scenario)


def test_a_quarantine_at_intake_names_the_sender_and_the_from_fields(tmp_path: Path) -> None:
    envelope = Envelope.create(
        sender="ann@example.com", recipients=["r@example.org"], message=TWO_FROMS
    )

    async def scenario() -> None:
        async with make_spool(tmp_path, MemoryNetwork()) as spool:
            (held,) = await spool.quarantine([Delivery(envelope, next_hops=(MX,))], "virus")
            reason = spool.get(held).quarantine
            assert reason == QuarantineReason(
                "virus", "<ann@example.com>", "Ann <ann@example.com>, bob@example.com"
            )
            assert str(reason) == (
                "virus (sender <ann@example.com>, From: Ann <ann@example.com>, bob@example.com)"
            )
            typed = QuarantineReason("as given", "<x@y.example>", "X")
            (given,) = await spool.quarantine([Delivery(envelope, next_hops=(MX,))], typed)
            assert spool.get(given).quarantine == QuarantineReason(
                "as given", "<ann@example.com>", "X"
            )
        async with make_spool(tmp_path, MemoryNetwork()) as spool:  # read back from disk
            assert spool.get(held).quarantine == reason

    virtual(scenario)


def test_an_operator_quarantines_queued_mail_and_recovers_it(tmp_path: Path) -> None:
    network = MemoryNetwork(down={"mx.test"})

    async def scenario() -> None:
        async with make_spool(tmp_path, network) as spool:
            (message_id,) = await spool.add([delivery(3, retry=["1h"])])
            await settle()
            with pytest.raises(SpoolError, match="needs a reason"):
                await spool.quarantine_messages([message_id], " ")
            await spool.quarantine_messages([message_id], "complaint from abuse desk")
            entry = spool.get(message_id)
            assert entry.status is Status.QUARANTINED
            assert entry.quarantine == QuarantineReason(
                "complaint from abuse desk", "<sender@example.com>", "sender@example.com"
            )
            await settle(7200)
            assert entry.status is Status.QUARANTINED and entry.attempt_count == 1
            await spool.quarantine_messages([message_id], "again")  # already there: no change
            assert entry.quarantine_reason == "complaint from abuse desk"
            await spool.recover([message_id], from_="quarantine")
            assert entry.status is Status.FROZEN and entry.quarantine is None
            assert entry.quarantine_from is None

    virtual(scenario)


def test_an_older_record_without_from_fields_still_loads() -> None:
    entry = SpooledMessage.from_meta(
        {
            "v": 1,
            "id": "old",
            "date": 1.0,
            "status": "quarantined",
            "sender": "<a@b.example>",
            "rcpts": ["c@d.example"],
            "quarantine": "virus",
        },
        location=NOWHERE,
    )
    assert entry.quarantine == QuarantineReason("virus", "<a@b.example>", "")
    assert "qfrom" not in json.dumps(entry.state_meta())


def test_a_batch_goes_into_the_spool_member_by_member(tmp_path: Path) -> None:
    one = delivery(5).envelope
    member, body = RoutedEnvelope.create(
        one, next_hop_choices=["mx.test"], retry_intervals=["1h"]
    ).split_bodiless()
    other = member.set_header("X-Copy", "2")

    async def scenario() -> None:
        async with make_spool(tmp_path, MemoryNetwork(down={"mx.test"})) as spool:
            batch = Batch(envelopes=(member, other), body=body)
            ids = await spool.add_batches([batch], frozen=True)
            first, second = (spool.get(i) for i in ids)
            assert first.related == (second.id,) and second.related == (first.id,)
            assert first.next_hops == ("mx.test:25",) and first.retry_intervals == ["1h"]
            assert await spool.read_message(first.id) == one.message
            stored = await spool.read_message(second.id)
            assert stored.startswith(b"X-Copy: 2\r\n") and stored.endswith(body)

    virtual(scenario)
