"""The spool engine: delivery, retries on a virtual clock, partial failures, admin, restart."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from smtpx.envelope import HostPort
from smtpx.maillog import Flows
from smtpx.protocol import Rcpt, Reply
from smtpx.spool.journal import SpoolLocked
from smtpx.spool.journal_store import JournalStore
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.spool import (
    Delivery,
    EventKind,
    Hops,
    Outcome,
    Presend,
    RouteLater,
    Spool,
    SpoolError,
    Unroutable,
)
from smtpx.testing import Handler, MemoryNetwork
from tests.spool.helpers import EPOCH, MX, delivery, make_spool, settle, virtual


class Refuses(Handler):
    """Refuses the recipients in ``codes`` with the given reply codes."""

    codes: ClassVar[dict[str, int]] = {}

    def rcpt(self, command: Rcpt) -> Reply:
        code = self.codes.get(str(command.recipient))
        if code is not None:
            return Reply.of(code, "refused for the test", f"{code // 100}.1.1")
        return super().rcpt(command)


def refusing(codes: dict[str, int]) -> type[Handler]:
    return type("R", (Refuses,), {"codes": codes})


def test_add_is_durable_then_delivered_and_forgotten(tmp_path: Path) -> None:
    network = MemoryNetwork()

    async def scenario() -> None:
        async with make_spool(tmp_path, network) as spool:
            events = spool.events.subscribe()
            ids = await spool.add([delivery(1), delivery(2)])
            assert len(ids) == 2 and len(spool.messages) == 2
            await settle()
            assert spool.messages == {}
            kinds = [events.queue.get_nowait().kind for _ in range(events.queue.qsize())]
            assert kinds.count(EventKind.SPOOLED) == 2 and kinds.count(EventKind.DELIVERED) == 2
        received = network.received("mx.test")
        assert [m.data for m in received] == [
            delivery(1).envelope.message,
            delivery(2).envelope.message,
        ]
        # Both went over one connection (send_many).
        assert len(network.sessions["mx.test"]) == 1
        assert Spool.status_from_disk(tmp_path) == []

    virtual(scenario)


def test_retry_schedule_with_jitter_then_bounce_and_freeze(tmp_path: Path) -> None:
    network = MemoryNetwork(default=refusing({"r1@example.org": 451}))

    async def scenario() -> SpooledMessage:
        loop = asyncio.get_running_loop()
        async with make_spool(tmp_path, network, bounce=False) as spool:
            (message_id,) = await spool.add([delivery(1, retry=["1m", "5m~30s"])])
            await settle()
            entry = spool.get(message_id)
            assert entry.status is Status.SEND_AT
            assert entry.next_attempt == pytest.approx(EPOCH + loop.time() + 60, abs=1)
            assert entry.retry_intervals == ["5m~30s"]
            await settle(61)
            assert len(network.sessions["mx.test"]) == 2
            assert entry.status is Status.SEND_AT
            # From the attempt (not from now: the clock went on while it was settled).
            assert entry.last_attempt is not None and entry.next_attempt is not None
            delay = entry.next_attempt - entry.last_attempt[0]
            assert 270 <= delay <= 330  # 5 minutes, 30 seconds of jitter either way
            await settle(331)
            # Out of retry intervals: the recipient fails, the message is frozen.
            assert entry.status is Status.FROZEN
            assert entry.recipients == []
            assert entry.failed[0][0] == "r1@example.org" and "451" in entry.failed[0][1]
            assert entry.attempt_count == 3
            return entry

    virtual(scenario)


def test_mail_for_a_suspended_destination_waits_quietly_then_goes_out(tmp_path: Path) -> None:
    """Mail spooled while its destination is suspended waits for the suspension's end
    without an attempt, and without waking the scheduler (which waits for an earlier
    message already); a message due sooner than the earliest does wake it; all of it
    goes out once the destination is back."""
    network = MemoryNetwork(down={MX.host})

    async def scenario() -> None:
        async with make_spool(tmp_path, network) as spool:
            (first,) = await spool.add([delivery(1, retry=["1m"])])
            await settle()
            assert spool.get(first).status is Status.SEND_AT  # tried: the host is down
            store = spool.store
            assert isinstance(store, JournalStore) and not store.wakeup.is_set()
            later = await spool.add([delivery(n, retry=["1m"]) for n in range(2, 5)])
            assert {spool.get(i).status for i in later} == {Status.SEND_AT}
            assert not store.wakeup.is_set()  # (each added its record, none an attempt)
            sooner = spool.get(later[0])
            sooner.next_attempt = spool.get(first).next_attempt - 30  # type: ignore[operator]
            store.update(sooner)
            assert store.wakeup.is_set()
            network.down.clear()
            await settle(61)
            assert spool.messages == {}
            assert len(network.received(MX.host)) == 4

    virtual(scenario)


def test_partial_recipient_failures(tmp_path: Path) -> None:
    codes = {"gone@example.org": 550, "busy@example.org": 452}
    network = MemoryNetwork(default=refusing(codes))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            recipients = ["ok@example.org", "gone@example.org", "busy@example.org"]
            (message_id,) = await spool.add([delivery(1, recipients=recipients, retry=["10m"])])
            await settle()
            entry = spool.get(message_id)
            assert entry.recipients == ["busy@example.org"]  # tried later
            assert [r for r, _ in entry.failed] == ["gone@example.org"]  # failed for good
            assert entry.status is Status.SEND_AT
            (first,) = network.received("mx.test")
            assert [str(r.recipient) for r in first.recipients] == ["ok@example.org"]
            # The busy recipient's mailbox frees up; the retry delivers only to it.
            codes.pop("busy@example.org")
            await settle(601)
            second = network.received("mx.test")[1]
            assert [str(r.recipient) for r in second.recipients] == ["busy@example.org"]
            assert entry.status is Status.FROZEN  # gone@ failed: kept for an operator

    virtual(scenario)


def test_a_released_message_that_fails_again_gets_its_retry(tmp_path: Path) -> None:
    codes = {"r1@example.org": 451}
    network = MemoryNetwork(default=refusing(codes))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            (message_id,) = await spool.add([delivery(1, retry=["1m"])], frozen=True)
            entry = spool.get(message_id)
            assert entry.status is Status.FROZEN
            await settle(120)
            assert "mx.test" not in network.sessions  # frozen: never tried
            assert await spool.send([message_id]) == 1
            await settle()
            assert entry.status is Status.SEND_AT  # failed again and got its timer
            codes.clear()
            await settle(61)
            assert message_id not in spool.messages
            assert len(network.received("mx.test")) == 1

    virtual(scenario)


def test_send_prepends_retry_intervals_and_retries_failed_recipients(tmp_path: Path) -> None:
    network = MemoryNetwork(default=refusing({"r1@example.org": 550}))

    async def scenario() -> None:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            (message_id,) = await spool.add([delivery(1, retry=["1h"])])
            await settle()
            entry = spool.get(message_id)
            assert entry.status is Status.FROZEN and entry.failed
            from smtpx.envelope import RetryInterval

            await spool.send(frozen_only=True, retry_intervals=[RetryInterval.parse("2m")])
            assert entry.retry_intervals == ["2m", "1h"]
            await settle()
            assert entry.status is Status.FROZEN
            assert len(network.sessions["mx.test"]) == 2

    virtual(scenario)


def test_admin_freeze_remove_recover_quarantine(tmp_path: Path) -> None:
    network = MemoryNetwork(down={"mx.test"})

    async def scenario() -> None:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            (message_id,) = await spool.add([delivery(1, retry=["1h"])])
            await settle()
            entry = spool.get(message_id)
            assert entry.status is Status.SEND_AT
            assert (
                "ConnectionRefusedError" in entry.attempts[-1][1]
                or "no next hop" in entry.attempts[-1][1]
            )
            await spool.freeze([message_id])
            assert entry.status is Status.FROZEN and entry.next_attempt is None
            await spool.remove([message_id])
            assert entry.status is Status.REMOVED and entry.queue == "removed"
            with pytest.raises(SpoolError, match="is removed; recover it first"):
                await spool.send([message_id])
            with pytest.raises(SpoolError, match="x: not found"):
                await spool.purge([message_id, "x"])  # checked before anything is purged
            assert spool.get(message_id) is entry
            await spool.recover([message_id], from_="removed")
            assert entry.status is Status.FROZEN
            (quarantined,) = await spool.quarantine([delivery(2)], "virus found")
            assert spool.get(quarantined).status is Status.QUARANTINED
            await settle(7200)
            assert spool.get(quarantined).status is Status.QUARANTINED  # never sent
            with pytest.raises(SpoolError, match="not found"):
                await spool.freeze(["nope"])
            await spool.recover([quarantined], from_="quarantine")
            assert spool.get(quarantined).status is Status.FROZEN
        on_disk = {m.id: m.status for m in Spool.status_from_disk(tmp_path)}
        assert on_disk == {message_id: Status.FROZEN, quarantined: Status.FROZEN}
        assert Spool.count_from_disk(tmp_path) == 2

    virtual(scenario)


def test_purge_forgets_removed_and_quarantined_mail_for_good(tmp_path: Path) -> None:
    network = MemoryNetwork(down={"mx.test"})

    async def scenario() -> str:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            kept, removed = await spool.add([delivery(1), delivery(2)], frozen=True)
            (quarantined,) = await spool.quarantine([delivery(3)], "virus found")
            with pytest.raises(SpoolError, match="only removed or quarantined"):
                await spool.purge([kept])
            await spool.remove([removed])
            with spool.events.subscribe() as events:
                await spool.purge([removed, quarantined, removed])
                kinds = [events.queue.get_nowait().kind for _ in range(events.queue.qsize())]
            assert kinds == [EventKind.PURGED, EventKind.PURGED]
            assert [m.id for m in spool.status()] == [kept]
            with pytest.raises(SpoolError, match="not found"):
                await spool.recover([removed])
            return kept

    kept = virtual(scenario)
    # Forgotten on disk too: a restart does not bring them back.
    assert [m.id for m in Spool.status_from_disk(tmp_path)] == [kept]

    async def again() -> None:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            assert [m.id for m in spool.status()] == [kept]

    virtual(again)


def test_restart_reports_unreadable_entries_and_loads_the_rest(tmp_path: Path) -> None:
    from smtpx.spool.journal import Journal, Record, RecordKind

    network = MemoryNetwork(down={"mx.test"})

    async def first() -> tuple[str, str]:
        async with make_spool(tmp_path, network) as spool:
            good, future = await spool.add([delivery(1), delivery(2)], frozen=True)
            await spool.freeze([good])
            # A newer smtpx wrote an update this one cannot read (a downgrade).
            meta = {**spool.get(future).state_meta(), "v": 99}
            await spool.journal.append([Record(RecordKind.UPDATE, meta)])
            return good, future

    good, future = virtual(first)

    async def second() -> None:
        async with make_spool(tmp_path, network) as spool:
            assert set(spool.messages) == {good}
            assert spool.get(good).status is Status.FROZEN
            (problem,) = spool.problems
            assert f"unreadable entry {future}: metadata version 99" in problem.description
            # Its body is held: compaction and cleanup keep its segment for a newer smtpx.
            assert spool.journal.segment_numbers()[0] in spool.journal_store._live

    virtual(second)
    assert [m.id for m in Spool.status_from_disk(tmp_path)] == [good]
    assert Journal(tmp_path).replay_readonly().messages.keys() == {good, future}


def test_restart_reloads_and_rearms(tmp_path: Path) -> None:
    network = MemoryNetwork(down={"mx.test"})

    async def first() -> tuple[str, str, float]:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            waiting, frozen = await spool.add([delivery(1, retry=["1h"]), delivery(2)])
            await spool.freeze([frozen])
            await settle()
            entry = spool.get(waiting)
            assert entry.next_attempt is not None
            return waiting, frozen, entry.next_attempt

    waiting, frozen, due = virtual(first)
    network.down.clear()

    async def second() -> None:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            assert spool.get(waiting).status is Status.SEND_AT
            assert spool.get(waiting).next_attempt == due
            assert spool.get(frozen).status is Status.FROZEN
            await settle(3700)
            assert waiting not in spool.messages
            assert spool.get(frozen).status is Status.FROZEN

    virtual(second)
    assert len(network.received("mx.test")) == 1


def test_a_state_record_queued_without_waiting_keeps_its_place(tmp_path: Path) -> None:
    # A delivery records its outcome without waiting; an admin freeze right after it
    # (same loop turn) must land after it in the journal, or a restart undoes the freeze.
    network = MemoryNetwork(down={"mx.test"})

    async def scenario() -> str:
        async with make_spool(tmp_path, network, bounce=False) as spool:
            (message_id,) = await spool.add([delivery(1, retry=["1h"])])
            await settle()
            entry = spool.get(message_id)
            assert entry.status is Status.SEND_AT
            spool.store.update(entry)  # as settling does
            await spool.freeze([message_id])
            return message_id

    message_id = virtual(scenario)
    (on_disk,) = Spool.status_from_disk(tmp_path)
    assert (on_disk.id, on_disk.status) == (message_id, Status.FROZEN)


def test_a_second_process_cannot_open_the_spool(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with make_spool(tmp_path, MemoryNetwork()):
            with pytest.raises(SpoolLocked, match="in use by another process"):
                await make_spool(tmp_path, MemoryNetwork()).start()

    virtual(scenario)


def test_presend_decisions(tmp_path: Path) -> None:
    network = MemoryNetwork()
    decisions = {"r1@example.org": Presend.freeze(), "r2@example.org": Presend.remove()}

    async def presend(message: SpooledMessage) -> Presend:
        return decisions.get(message.recipients[0], Presend.send_now())

    async def scenario() -> None:
        async with make_spool(tmp_path, network, presend=presend) as spool:
            a, b, c = await spool.add([delivery(1), delivery(2), delivery(3)])
            await settle()
            assert spool.get(a).status is Status.FROZEN
            assert spool.get(b).status is Status.REMOVED
            assert c not in spool.messages
        assert len(network.received("mx.test")) == 1

    virtual(scenario)


def test_on_error_decides(tmp_path: Path) -> None:
    network = MemoryNetwork(default=refusing({"r1@example.org": 550}))

    async def on_error(message: SpooledMessage, reply: Reply) -> Outcome:
        return Outcome.TRY_LATER_RATE_LIMITED

    async def scenario() -> None:
        async with make_spool(tmp_path, network, on_error=on_error, bounce=False) as spool:
            events = spool.events.subscribe()
            (message_id,) = await spool.add([delivery(1, retry=["1m"])])
            await settle()
            assert spool.get(message_id).status is Status.SEND_AT
            kinds = [events.queue.get_nowait().kind for _ in range(events.queue.qsize())]
            assert EventKind.DELAYED_RATE_LIMITED in kinds

    virtual(scenario)


def test_routes_unroutable_and_later(tmp_path: Path) -> None:
    network = MemoryNetwork()

    async def router(message: SpooledMessage) -> Hops | Unroutable | RouteLater:
        domain = message.route or ""
        if domain == "nullmx.example":
            return Unroutable(Reply.of(556, "Domain does not accept mail", "5.1.10"))
        if domain == "slowdns.example":
            return RouteLater("DNS timeout")
        return Hops((MX,), "mx")

    async def scenario() -> None:
        async with make_spool(tmp_path, network, router=router, bounce=False) as spool:
            dead, later, fine = await spool.add(
                [
                    delivery(1, next_hops=(), route="nullmx.example"),
                    delivery(2, next_hops=(), route="slowdns.example", retry=["1m"]),
                    delivery(3, next_hops=(), route="example.org"),
                ]
            )
            await settle()
            assert spool.get(dead).status is Status.FROZEN
            assert "556" in spool.get(dead).failed[0][1]
            assert spool.get(later).status is Status.SEND_AT
            assert spool.get(later).attempts[-1][1] == "DNS timeout"
            assert fine not in spool.messages

    virtual(scenario)


def test_per_destination_concurrency_limit(tmp_path: Path) -> None:
    network = MemoryNetwork()

    async def scenario() -> None:
        async with make_spool(tmp_path, network, max_per_destination=2, batch_size=1) as spool:
            await spool.add([delivery(i) for i in range(10)])
            await settle(1)
            assert spool.messages == {}
        assert network.most_open["mx.test"] <= 2
        assert len(network.received("mx.test")) == 10

    virtual(scenario)


def test_segment_cleanup_never_brings_back_a_delivered_message(tmp_path: Path) -> None:
    # A (frozen) and C are written together, so they share a segment. C's forget record
    # lands in a later segment holding no live body. Deleting that segment while A keeps
    # the first one would make C reappear, and be delivered again, after a restart.
    network = MemoryNetwork()

    async def first() -> str:
        async with make_spool(tmp_path, network, segment_size=1) as spool:
            added = await asyncio.gather(
                spool.add([delivery(1)], frozen=True), spool.add([delivery(2)])
            )
            kept = added[0][0]
            await settle()
            await spool.add([delivery(3)])
            await settle()
            assert set(spool.messages) == {kept}
            return kept

    a = virtual(first)
    assert len(network.received("mx.test")) == 2

    async def second() -> None:
        async with make_spool(tmp_path, network, segment_size=1) as spool:
            assert set(spool.messages) == {a}
            assert spool.get(a).status is Status.FROZEN
            await settle(3600)

    virtual(second)
    assert len(network.received("mx.test")) == 2  # C was not delivered again


def test_compaction_frees_the_segments_an_old_message_pins(tmp_path: Path) -> None:
    network = MemoryNetwork()

    async def first() -> str:
        async with make_spool(tmp_path, network, segment_size=2048) as spool:
            (old,) = await spool.add([delivery(0, recipients=["keep@example.org"])], frozen=True)
            await spool.freeze([old])
            spool.get(old).retry_intervals = ["7m"]  # some state, to see it survive
            await spool.freeze([old])
            for i in range(1, 200):
                await spool.add([delivery(i)])
                if i % 20 == 0:
                    await settle()
            await settle()
            assert set(spool.messages) == {old}
            assert spool.stats["compacted"] >= 1
            # Only the segment that holds the copy and the current one can remain.
            assert len(spool.journal.segment_numbers()) <= 3
            assert spool.get(old).location.segment != 1
            return old

    old = virtual(first)
    assert len(network.received("mx.test")) == 199

    async def second() -> None:
        async with make_spool(tmp_path, network, segment_size=2048) as spool:
            assert set(spool.messages) == {old}
            entry = spool.get(old)
            assert entry.status is Status.FROZEN and entry.recipients == ["keep@example.org"]
            assert (await spool.read_message(old)).endswith(b"\r\n.body 0\r\n")
            await spool.send([old])
            await settle()
        assert spool.messages == {}

    virtual(second)
    bodies = [m.data for m in network.received("mx.test")]
    assert len(bodies) == 200 and bodies[-1].endswith(b"\r\n.body 0\r\n")


@pytest.mark.parametrize("seed", [5321, 3464])
@pytest.mark.parametrize("compaction", [True, False])
def test_a_random_history_replays_to_the_same_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, compaction: bool
) -> None:
    # Adds, freezes, removals, purges, deliveries and compactions over tiny segments:
    # after every restart the spool knows exactly what it knew before.
    import random

    if not compaction:
        monkeypatch.setattr(JournalStore, "_worth_compacting", lambda self: False)
    rng = random.Random(seed)
    network = MemoryNetwork()

    def snapshot(spool: Spool) -> dict[str, tuple[str, list[str]]]:
        return {m.id: (m.status.value, m.recipients) for m in spool.messages.values()}

    expected: dict[str, tuple[str, list[str]]] = {}
    for round_ in range(6):

        async def run(
            before: dict[str, tuple[str, list[str]]], round_: int
        ) -> dict[str, tuple[str, list[str]]]:
            async with make_spool(tmp_path, network, segment_size=700) as spool:
                assert snapshot(spool) == before, f"round {round_}"
                for _ in range(40):
                    action = rng.random()
                    ids = list(spool.messages)
                    if action < 0.5 or not ids:
                        await spool.add([delivery(rng.randrange(1000))], frozen=rng.random() < 0.3)
                    else:
                        target = rng.choice(ids)
                        state = spool.get(target).status
                        if state is Status.FROZEN and action < 0.7:
                            await spool.remove([target])
                        elif state is Status.REMOVED and action < 0.8:
                            await spool.purge([target])
                        elif state is Status.FROZEN:
                            await spool.send([target])
                        elif state is Status.SEND_AT or state is Status.SEND_NOW:
                            await spool.freeze([target])
                    if rng.random() < 0.3:
                        await settle()
                await settle()
                if compaction and rng.random() < 0.5:
                    await spool.compact()
                await spool.journal.flush()
                return snapshot(spool)

        expected = virtual(functools.partial(run, expected, round_))
    assert expected  # something is still queued: the test covered restarts with state


def test_related_ids_only_when_asked(tmp_path: Path) -> None:
    network = MemoryNetwork(down={"mx.test"})

    async def scenario() -> None:
        async with make_spool(tmp_path, network) as spool:
            plain = await spool.add([delivery(1), delivery(2)], frozen=True)
            assert all(spool.get(i).related == () for i in plain)
            a, b, c = await spool.add(
                [delivery(3), delivery(4), delivery(5)], frozen=True, set_related=True
            )
            assert spool.get(a).related == (b, c) and spool.get(b).related == (a, c)

    virtual(scenario)


def test_delivered_segments_are_deleted(tmp_path: Path) -> None:
    network = MemoryNetwork()

    async def scenario() -> None:
        async with make_spool(tmp_path, network, segment_size=512) as spool:
            first = spool.journal.current_segment
            for i in range(5):
                await spool.add([delivery(i)])
            # Three segments or more were used (some may be gone already: delivered).
            assert spool.journal.current_segment - first >= 2
            await settle()
            assert spool.messages == {}
            assert spool.journal.segment_numbers() == [spool.journal.current_segment]

    virtual(scenario)


def test_deliveries_from_the_segment_being_written_do_not_list_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay that keeps up empties the current segment at nearly every delivery: that
    segment is never deleted, so the journal's directory is not listed for it."""
    network = MemoryNetwork()

    async def scenario() -> None:
        async with make_spool(tmp_path, network) as spool:
            listings = 0
            journal_dir = spool.journal.journal_dir
            glob = Path.glob

            def counted(path: Path, pattern: str) -> Iterator[Path]:
                nonlocal listings
                listings += path == journal_dir
                return glob(path, pattern)

            # (Path's method, not the journal's: the compiled build's cannot be patched)
            monkeypatch.setattr(Path, "glob", counted)
            for i in range(5):
                await spool.add([delivery(i)])
                await settle()
                assert spool.messages == {}
            assert len(network.received(MX.host)) == 5
            assert listings == 0
            spool.journal.segment_numbers()
            assert listings == 1  # (what the count sees)

    virtual(scenario)


def test_permanent_failure_bounces_to_the_sender(tmp_path: Path) -> None:
    import email
    import email.message
    import email.policy

    network = MemoryNetwork(default=refusing({"gone@example.org": 550}))

    async def router(message: SpooledMessage) -> Hops:
        return Hops((MX,), "mx")

    async def scenario() -> None:
        async with make_spool(tmp_path, network, router=router, reporting_mta="mx.test") as spool:
            (message_id,) = await spool.add(
                [delivery(1, recipients=["gone@example.org", "ok@example.org"], next_hops=())]
            )
            await settle()
            assert spool.get(message_id).status is Status.FROZEN
            assert spool.stats["bounces"] == 1
        received = network.received("mx.test")
        # The original to ok@, then the bounce to the sender, from <>.
        assert [str(r.recipient) for r in received[0].recipients] == ["ok@example.org"]
        bounce = received[1]
        assert bounce.mail.sender.is_null
        assert [str(r.recipient) for r in bounce.recipients] == ["sender@example.com"]
        report = email.message_from_bytes(bounce.data, policy=email.policy.default)
        assert report.get_content_type() == "multipart/report"
        assert report.get_param("report-type") == "delivery-status"
        parts = report.get_payload()
        assert isinstance(parts, list)
        status = parts[1]
        assert isinstance(status, email.message.Message)
        assert status.get_content_type() == "message/delivery-status"
        blocks = status.get_payload()
        assert isinstance(blocks, list)
        per_recipient = blocks[1]
        assert isinstance(per_recipient, email.message.Message)
        assert per_recipient["Final-Recipient"] == "rfc822; gone@example.org"
        assert per_recipient["Action"] == "failed"
        assert per_recipient["Status"] == "5.1.1"
        assert "550" in per_recipient["Diagnostic-Code"]

    virtual(scenario)


def test_a_bounce_is_never_bounced(tmp_path: Path) -> None:
    network = MemoryNetwork(default=refusing({"r1@example.org": 550}))

    async def scenario() -> None:
        async with make_spool(tmp_path, network) as spool:
            await spool.add([delivery(1, sender="<>")])
            await settle()
            assert spool.stats["bounces"] == 0
        assert network.received("mx.test") == []

    virtual(scenario)


def test_a_delay_warning_goes_to_the_sender_once(tmp_path: Path) -> None:
    import email
    import email.policy

    refuse = refusing({"late@example.org": 451})
    network = MemoryNetwork(default=refuse)

    async def router(message: SpooledMessage) -> Hops:
        return Hops((MX,), "mx")

    async def scenario() -> None:
        async with make_spool(tmp_path, network, delay_warning_after=3600, router=router) as spool:
            (message_id,) = await spool.add(
                [
                    delivery(
                        1,
                        recipients=["late@example.org"],
                        retry=["30m", "30m", "30m", "30m"],
                        next_hops=(),
                    )
                ]
            )
            await settle()
            assert spool.stats["delay_warnings"] == 0  # not waited long enough yet
            await settle(1801)
            await settle(1801)
            assert spool.stats["delay_warnings"] == 1
            await settle(1801)
            assert spool.stats["delay_warnings"] == 1  # once only
            assert spool.get(message_id).warned
        warnings = [m for m in network.received("mx.test") if m.mail.sender.is_null]
        assert len(warnings) == 1
        report = email.message_from_bytes(warnings[0].data, policy=email.policy.default)
        assert "Action: delayed" in report.as_string()

    virtual(scenario)


def test_a_delay_warning_after_connection_failures_says_what_failed(tmp_path: Path) -> None:
    import email
    import email.policy

    network = MemoryNetwork(down={"mx.test"})
    senders_mx = HostPort("example.com.test", 25)

    async def router(message: SpooledMessage) -> Hops:
        return Hops((senders_mx,) if message.sender == "<>" else (MX,), "r")

    async def scenario() -> None:
        async with make_spool(tmp_path, network, delay_warning_after=3600, router=router) as spool:
            await spool.add(
                [delivery(1, retry=["1h", "1h"], next_hops=(), flows=Flows(("srv#7",)))]
            )
            added: list[Delivery] = []
            submit = spool.notices.submit

            async def spy(deliveries: Sequence[Delivery]) -> list[str]:
                added.extend(deliveries)
                return await submit(deliveries)

            spool.notices.submit = spy
            await settle()
            await settle(3601)
            assert spool.stats["delay_warnings"] == 1
            # The warning carries the original's flows: the mail log links the two.
            (warning,) = added
            assert "srv#7" in warning.flows.ids
        (notice,) = network.received("example.com.test")
        report = email.message_from_bytes(notice.data, policy=email.policy.default)
        text = report.as_string()
        assert "Action: delayed" in text and "Status: 4.4.1" in text
        assert "ConnectionRefusedError" in text or "down" in text.lower()

    virtual(scenario)


def test_a_bug_during_delivery_does_not_strand_messages(tmp_path: Path) -> None:
    network = MemoryNetwork()

    async def broken_router(message: SpooledMessage) -> Hops:
        return Hops(("not a HostPort",), "broken")  # type: ignore[arg-type]

    async def scenario() -> None:
        async with make_spool(tmp_path, network, router=broken_router, bounce=False) as spool:
            (message_id,) = await spool.add([delivery(1, retry=["1m"], next_hops=())])
            await settle()
            entry = spool.get(message_id)
            assert entry.status is Status.SEND_AT  # not stuck in "sending"
            assert entry.attempts[-1][1] == "internal error (the log has the details)"

    virtual(scenario)
