"""LISTEN/NOTIFY for the PostgreSQL spool: wake-up hints for idle nodes, and spool events
from every node. Both are best effort: a session not listening at the moment misses
them, and nothing depends on them (nodes poll; events feed live views only).

Each listener needs a connection of its own (LISTEN is a session's: not a pooled
connection, nor one through PgBouncer's transaction pooling). Notifications are sent
outside any writing transaction (see ``PgQueue._hint``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import asyncpg

from smtpx.spool.pg.queue import QueueError
from smtpx.spool.pg.schema import DUE_CHANNEL, EVENTS_CHANNEL

if TYPE_CHECKING:
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]

__all__ = ["DueListener", "EventListener", "NodeEvent", "event_payload", "publish"]

MAX_PAYLOAD = 7900  # octets; PostgreSQL refuses 8000 and more


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """A spool event as one node published it."""

    node: str
    kind: str
    id: str
    detail: str
    time: float
    # A deferral's reason (its last attempt's error); "" for other events, and in the
    # events of a node older than this field.
    reason: str = ""


_REQUIRED_FIELDS = ("node", "kind", "id", "detail", "time")
MAX_REASON = 1000  # characters of a reason sent (the console shows 120)


def event_payload(event: NodeEvent) -> str:
    """The NOTIFY payload for ``event``: JSON, its reason and detail cut to fit
    PostgreSQL's limit."""
    if len(event.reason) > MAX_REASON:
        event = dataclasses.replace(event, reason=event.reason[:MAX_REASON] + "...")
    payload = json.dumps(asdict(event), ensure_ascii=False)
    excess = len(payload.encode()) - MAX_PAYLOAD
    if excess <= 0:
        return payload
    detail = event.detail.encode()[: max(0, len(event.detail.encode()) - excess - 8)]
    cut = dataclasses.replace(event, detail=detail.decode(errors="ignore") + "...")
    return json.dumps(asdict(cut), ensure_ascii=False)


async def publish(pool: Pool, event: NodeEvent) -> None:
    """Tell every node listening on the events channel (a statement of its own, which
    writes nothing: no WAL flush under the notify lock)."""
    await pool.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, event_payload(event))


class _Listening:
    """A dedicated connection LISTENing on one channel."""

    channel = ""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lost = False

    @classmethod
    async def open(cls, dsn: str, **kwargs: Any) -> Self:
        conn = await asyncpg.connect(dsn, **kwargs)
        listener = cls(conn)
        conn.add_termination_listener(listener._terminated)
        await conn.add_listener(cls.channel, listener._notified)
        return listener

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        raise NotImplementedError

    def _terminated(self, *_: object) -> None:
        self.lost = True

    def _check(self) -> None:
        if self.lost:
            raise QueueError(f"the LISTEN {self.channel} connection to the database was lost")

    async def close(self) -> None:
        self.conn.remove_termination_listener(self._terminated)
        await self.conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


class DueListener(_Listening):
    """Wake-up hints: messages became due somewhere in the cluster."""

    channel = DUE_CHANNEL

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._hinted = asyncio.Event()

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._hinted.set()

    def _terminated(self, *_: object) -> None:
        super()._terminated()
        self._hinted.set()

    async def wait(self, timeout: float) -> bool:
        """True when a hint came (since the last wait), False after ``timeout`` seconds
        without one: poll then. Raises :class:`QueueError` once the connection is lost."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._hinted.wait()
        self._check()
        hinted = self._hinted.is_set()
        self._hinted.clear()
        return hinted


class EventListener(_Listening):
    """Spool events from every node, up to ``keep`` unread: beyond that the oldest go,
    counted in ``dropped`` (a slow reader must not make the listener grow without end)."""

    channel = EVENTS_CHANNEL

    def __init__(self, conn: Connection, keep: int = 10_000) -> None:
        super().__init__(conn)
        self._events: deque[NodeEvent | None] = deque(maxlen=keep)  # None: connection lost
        self._arrived = asyncio.Event()
        self.dropped = 0

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        try:
            data = json.loads(str(payload))
            # Keys a newer node adds are left out, and an older node's event has no
            # reason: in a rolling upgrade the events still reach every node.
            event = NodeEvent(
                **{name: data[name] for name in _REQUIRED_FIELDS},
                reason=str(data.get("reason") or ""),
            )
        except (ValueError, TypeError, KeyError):
            return  # not an smtpx event: someone else's NOTIFY on the channel
        self._append(event)

    def _terminated(self, *_: object) -> None:
        super()._terminated()
        self._append(None)

    def _append(self, event: NodeEvent | None) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        self._arrived.set()

    async def next(self, timeout: float) -> NodeEvent | None:
        """The next event, or None after ``timeout`` seconds without one. Raises
        :class:`QueueError` once the connection is lost and the events before are read."""
        if not self._events:
            self._check()
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            if not self._events:
                return None
        event = self._events.popleft()
        if event is None:
            self._check()
        return event
