"""The interface between the spool's engine and where its messages live.

The scheduler, delivery, notices and admin parts are written once, against :class:`Store`;
the journal (:class:`~smtpx.spool.journal_store.JournalStore`) is one store. What a store
promises:

* :meth:`Store.write` returns only once the new messages are durable (concurrent writes
  may share one commit), with each entry's body location set and the entry indexed;
* :meth:`Store.update` and :meth:`Store.forget` record a change at once, in call order
  (a later :meth:`Store.update_durably` lands after them), durable soon after;
* a body is read for use only checked against its checksum (:class:`BodyDamaged`), and
  :meth:`Store.inspect` shows it as it is, for an operator;
* ``messages`` is the index of the messages this node works with, by id;
* what is due is the store's to know: a message written or updated as SEND_NOW or SEND_AT
  is claimed by :meth:`Store.claim_due` once its time has come.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from smtpx.client.session import Body
from smtpx.content import Content, SpilledMessage
from smtpx.spool.journal import BodyDamaged, JournalProblem
from smtpx.spool.message import SpooledMessage

__all__ = ["HEAD_LIMIT", "Store"]

HEAD_LIMIT = 256 * 1024  # octets of a message read for its header section at most


class Store(Protocol):
    messages: dict[str, SpooledMessage]
    problems: list[JournalProblem]
    on_damaged: Callable[[SpooledMessage, BodyDamaged], Awaitable[None]] | None
    wakeup: asyncio.Event  # set when a message may be due sooner than next_due() said
    ready: bool  # False while a store that needs a database has none (the server: 421)

    async def claim_due(self, now: float) -> list[SpooledMessage]:
        """The messages due at ``now`` (SEND_NOW, or SEND_AT whose time has come), now
        SENDING: this node works on them until it settles them."""
        ...

    async def next_due(self) -> float | None:
        """When the next message falls due (None: nothing is waiting)."""
        ...

    async def open(self) -> str:
        """Get ready; what was found wrong is in ``problems``. A line for the log."""
        ...

    def refusing(self) -> bool:
        """Writes are refused right now (the disk or database failed a moment ago)."""
        ...

    async def find(self, message_id: str) -> SpooledMessage | None:
        """The message ``message_id`` as it is now (any node's, for a shared store)."""
        ...

    async def all(self) -> list[SpooledMessage]:
        """Every message on the spool (the whole cluster's, for a shared store)."""
        ...

    async def count_by_status(self) -> dict[str, int]:
        """How many messages there are in each status (the whole cluster's)."""
        ...

    async def close(self) -> None: ...

    async def write(
        self, entries: list[SpooledMessage], contents: list[bytes | SpilledMessage]
    ) -> None:
        """Store new messages (raw content, not dot-stuffed); durable on return."""
        ...

    def update(self, entry: SpooledMessage) -> None:
        """Record ``entry``'s new state: queued now, durable soon."""
        ...

    async def update_durably(self, entry: SpooledMessage) -> None:
        """Record ``entry``'s new state; durable on return."""
        ...

    def forget(self, entry: SpooledMessage) -> None:
        """``entry`` is done (delivered): out of the index, its space reclaimable."""
        ...

    async def purge(self, entry: SpooledMessage) -> bool:
        """Forget ``entry`` for good, durably; False when it was gone already."""
        ...

    async def check(self, entries: list[SpooledMessage]) -> list[BodyDamaged | None]:
        """What is wrong with each body (None: sound, or checked as it is sent)."""
        ...

    async def read(self, entry: SpooledMessage) -> bytes:
        """The message as received, checked (:class:`BodyDamaged`)."""
        ...

    async def inspect(self, entry: SpooledMessage) -> tuple[bytes, BodyDamaged | None]:
        """The message as stored, damaged or not, and what is wrong with it."""
        ...

    async def damage(self, entry: SpooledMessage) -> BodyDamaged | None:
        """What is wrong with the body (None: sound), read a chunk at a time to its end
        (memory stays flat whatever its size)."""
        ...

    async def head(self, entry: SpooledMessage) -> bytes:
        """The message's header section as stored (with its blank line; at most
        :data:`HEAD_LIMIT` octets), damaged or not: what selections and reasons read,
        without reading the body."""
        ...

    def content(self, entry: SpooledMessage) -> AbstractAsyncContextManager[Content]:
        """The message as received, for a local delivery while the block runs: read a
        chunk at a time where the store can, so a large message is never whole in
        memory; damage raises :class:`BodyDamaged` before the last chunk."""
        ...

    def body(self, entry: SpooledMessage) -> Body:
        """The stored body, for the client to send (valid while :meth:`pinned`). A body
        that is checked as it is read ends in :class:`BodyDamaged` before its end, so the
        client never sends the final dot of a damaged one."""
        ...

    def pinned(self, entries: list[SpooledMessage]) -> contextlib.AbstractContextManager[None]:
        """Keep the entries' bodies where :meth:`wire` said while the block runs."""
        ...

    def collect_segments(self) -> None:
        """Space that messages released (a delivery, a purge) may be reclaimed now."""
        ...

    async def compact(self) -> int:
        """Reclaim space held by few live messages; how many were moved."""
        ...
