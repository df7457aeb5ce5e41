"""What an operator does to the queue (F89-F92): look, freeze, send now, remove, recover,
purge. Every change is on disk before the call returns, and is announced as an event."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from smtpx.envelope import Envelope, RetryInterval
from smtpx.spool.context import SpoolContext
from smtpx.spool.delivery import set_status
from smtpx.spool.journal import BodyDamaged
from smtpx.spool.message import QuarantineReason, SpooledMessage, Status, destination_key
from smtpx.spool.store import Store
from smtpx.spool.types import EventKind, SpoolError

__all__ = ["Admin"]


class Admin:
    def __init__(self, context: SpoolContext, store: Store) -> None:
        self.context = context
        self.store = store

    # -- looking --------------------------------------------------------------------------

    def get(self, message_id: str) -> SpooledMessage:
        """A message this node holds (every message, with the local journal)."""
        try:
            return self.store.messages[message_id]
        except KeyError:
            raise SpoolError(f"{message_id}: not found") from None

    def status(self) -> list[SpooledMessage]:
        """The messages this node holds, oldest first (every message, with the journal)."""
        return _oldest_first(self.store.messages.values())

    async def find(self, message_id: str) -> SpooledMessage:
        """The message ``message_id`` wherever it is (any node's, in a shared store)."""
        found = await self.store.find(message_id)
        if found is None:
            raise SpoolError(f"{message_id}: not found")
        return found

    async def list_all(self) -> list[SpooledMessage]:
        """Every message on the spool, oldest first (no content is ever read)."""
        return _oldest_first(await self.store.all())

    async def read_message(self, message_id: str) -> bytes:
        """The message as received; :class:`BodyDamaged` if its body rotted."""
        return await self.store.read(await self.find(message_id))

    async def inspect_message(self, message_id: str) -> tuple[bytes, BodyDamaged | None]:
        """The message as stored, damaged or not, and what is wrong with it (for an
        operator's ``show``: looking is not using)."""
        return await self.store.inspect(await self.find(message_id))

    # -- changing -------------------------------------------------------------------------

    async def _set(
        self, entry: SpooledMessage, status: Status, kind: EventKind, detail: str = ""
    ) -> None:
        await set_status(self.context, self.store, entry, status, kind=kind, detail=detail)

    async def freeze(self, ids: Iterable[str]) -> None:
        for message_id in ids:
            entry = await self.find(message_id)
            if entry.status in (Status.REMOVED, Status.QUARANTINED):
                raise SpoolError(f"{message_id}: is {entry.status.value}; recover it first")
            if entry.status is not Status.FROZEN:
                await self._set(entry, Status.FROZEN, EventKind.FROZEN, "by request")

    async def send(
        self,
        ids: Iterable[str] | None = None,
        *,
        frozen_only: bool = False,
        retry_intervals: Sequence[RetryInterval] = (),
    ) -> int:
        """Send now: the given messages, or (``ids`` None) every frozen and waiting one,
        or with ``frozen_only`` every frozen one (F90). Given retry intervals come first;
        failed recipients are tried again. Returns how many were released."""
        if ids is None:
            wanted = [
                m
                for m in await self.store.all()
                if m.status is Status.FROZEN or (m.status is Status.SEND_AT and not frozen_only)
            ]
        else:
            wanted = [await self.find(i) for i in ids]
            for entry in wanted:
                if entry.status in (Status.REMOVED, Status.QUARANTINED):
                    state = entry.status.value
                    raise SpoolError(f"{entry.id}: is {state}; recover it first")
        released = 0
        for entry in wanted:
            if entry.status not in (Status.FROZEN, Status.SEND_AT):
                continue
            was_frozen = entry.status is Status.FROZEN
            entry.retry_intervals = [str(i) for i in retry_intervals] + entry.retry_intervals
            entry.recipients = entry.recipients + [r for r, _ in entry.failed]
            entry.failed = []
            entry.status = Status.SEND_NOW
            entry.next_attempt = None
            # An operator's "send now" is an attempt, even to a destination found
            # unreachable a moment ago.
            self.context.unreachable.clear(destination_key(entry))
            await self.store.update_durably(entry)  # (the store notes it is due now)
            if was_frozen:
                self.context.emit(EventKind.UNFROZEN, entry)
            released += 1
        return released

    async def remove(self, ids: Iterable[str], *, detail: str = "") -> None:
        """Take messages off the queue, whatever their state (F91): never tried again,
        kept on disk until purged, and recovered with :meth:`recover`. One being sent
        right now is marked removed at once; the attempt under way runs to its end (what
        a server took cannot be called back), and its outcome leaves the message removed
        (:func:`~smtpx.spool.delivery.held_by_operator`), unless every recipient was
        delivered: then it leaves the spool as delivered mail does."""
        for message_id in ids:
            entry = await self.find(message_id)
            if entry.status is not Status.REMOVED:
                await self._set(entry, Status.REMOVED, EventKind.REMOVED, detail)

    async def quarantine(self, ids: Iterable[str], description: str) -> None:
        """Hold messages in quarantine, whatever their state (F13): never sent unless
        recovered. The reason names the envelope sender and the From fields (read from
        the stored message). One being sent now is marked at once, as :meth:`remove`
        does."""
        if not description.strip():
            raise SpoolError("a quarantine needs a reason")
        for message_id in ids:
            entry = await self.find(message_id)
            if entry.status is Status.QUARANTINED:
                continue
            head = await self.store.head(entry)  # a damaged body has its fields
            envelope = Envelope(info=entry.info(), message=head)
            reason = QuarantineReason.of_envelope(description, envelope)
            entry.quarantine_reason = reason.description
            entry.quarantine_from = reason.from_headers
            await self._set(entry, Status.QUARANTINED, EventKind.QUARANTINED, description)

    async def recover(self, ids: Iterable[str], *, from_: str = "removed") -> None:
        """Bring removed (``from_="removed"``) or quarantined messages back, frozen (F92)."""
        source = {"removed": Status.REMOVED, "quarantine": Status.QUARANTINED}[from_]
        for message_id in ids:
            entry = await self.find(message_id)
            if entry.status is not source:
                raise SpoolError(f"{message_id}: is not {source.value}")
            entry.quarantine_reason = entry.quarantine_from = None
            await self._set(entry, Status.FROZEN, EventKind.RECOVERED, f"from {from_}")

    async def purge(self, ids: Iterable[str]) -> None:
        """Forget removed or quarantined messages for good: their journal space can then be
        reclaimed. Nothing else can be purged (remove it first)."""
        entries = [await self.find(message_id) for message_id in ids]
        for entry in entries:
            if entry.status not in (Status.REMOVED, Status.QUARANTINED):
                state = entry.status.value
                raise SpoolError(
                    f"{entry.id}: only removed or quarantined messages can be purged ({state})"
                )
        for entry in entries:
            if await self.store.purge(entry):  # (False: named twice)
                self.context.emit(EventKind.PURGED, entry)
        self.store.collect_segments()


def _oldest_first(messages: Iterable[SpooledMessage]) -> list[SpooledMessage]:
    return sorted(messages, key=lambda m: (m.spool_date, m.id))
