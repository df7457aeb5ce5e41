"""The spool's vocabulary: what it takes in, what its hooks answer, what it reports.

Everything a user of :class:`~smtpx.spool.spool.Spool` names (configuration, deliveries,
the answers of the ``router``, ``presend`` and ``on_error`` hooks, events) is here, so
that the parts of the spool (store, scheduler, delivery, notices, admin) share one set of
closed types and import none of each other for them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeGuard

from smtpx.auth import Credentials
from smtpx.client import CacheConfig
from smtpx.content import Content, chunks_of, read_with
from smtpx.envelope import Envelope, HostPort, RetryInterval
from smtpx.errors import SMTPXError
from smtpx.maillog import Flows
from smtpx.protocol.replies import Reply
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.message import SpooledMessage

__all__ = [
    "DEFAULT_RETRY_INTERVALS",
    "ChunkReadingAgent",
    "Delivery",
    "Destination",
    "EventKind",
    "Hops",
    "Local",
    "LocalAgent",
    "OnError",
    "Outcome",
    "PostgresSettings",
    "Presend",
    "PresendHook",
    "RouteLater",
    "Router",
    "SpoolConfig",
    "SpoolError",
    "SpoolEvent",
    "Unroutable",
    "default_on_error",
    "default_presend",
    "deliver_locally",
    "hops_only",
    "reads_chunks",
]

DEFAULT_RETRY_INTERVALS = tuple(
    RetryInterval.parse(text)
    for text in (
        "1m~10s",
        "5m~1m",
        "15m~3m",
        "30m~5m",
        "1h~10m",
        "2h~20m",
        "4h~30m",
        "8h~1h",
        "16h~2h",
    )
)


class SpoolError(SMTPXError):
    """An admin request the spool cannot carry out (unknown id, wrong state...)."""


class Outcome(enum.Enum):
    """What ``on_error`` decides about a refusal (F87)."""

    DONE = "done"  # stop trying this recipient (someone else handles it)
    FAIL_PERMANENTLY = "fail_permanently"
    TRY_LATER = "try_later"
    TRY_LATER_RATE_LIMITED = "try_later_rate_limited"


@dataclass(frozen=True, slots=True)
class Presend:
    """What the ``presend`` hook decides before an attempt (F85): one of
    ``Presend.send_now()``, ``Presend.send_at(when)``, ``Presend.freeze()``,
    ``Presend.remove()``."""

    action: str  # "send_now" | "send_at" | "freeze" | "remove"
    at: float | None = None

    @classmethod
    def send_now(cls) -> Presend:
        return _SEND_NOW

    @classmethod
    def send_at(cls, when: float) -> Presend:
        return cls("send_at", when)

    @classmethod
    def freeze(cls) -> Presend:
        return cls("freeze")

    @classmethod
    def remove(cls) -> Presend:
        return cls("remove")


_SEND_NOW = Presend("send_now")


# -- where a message goes (the router's answers) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Hops:
    """Send over SMTP to the first of ``hops`` that answers."""

    hops: tuple[HostPort, ...]
    key: str = ""
    credentials: Credentials | None = None


class LocalAgent(Protocol):
    async def deliver(self, message: SpooledMessage, content: bytes) -> list[tuple[str, Reply]]:
        """Deliver ``content`` (the raw message) to each remaining recipient; one reply
        each (2xx: delivered)."""
        ...


class ChunkReadingAgent(Protocol):
    """A :class:`LocalAgent` that also takes content read a chunk at a time (says so
    with ``reads_chunks = True``): a large message is then never whole in memory. It
    reads with :func:`smtpx.content.chunks_of`, and commits nothing before the last
    chunk was read (a damaged body raises its error before then: let it pass)."""

    reads_chunks: bool

    async def deliver(
        self, message: SpooledMessage, content: Content
    ) -> list[tuple[str, Reply]]: ...


def reads_chunks(agent: LocalAgent | ChunkReadingAgent) -> TypeGuard[ChunkReadingAgent]:
    return getattr(agent, "reads_chunks", False) is True


async def deliver_locally(
    agent: LocalAgent, message: SpooledMessage, content: Content
) -> list[tuple[str, Reply]]:
    """``agent``'s replies for ``content``: given as it is to an agent that reads chunks,
    read whole (in a worker thread) for the others."""
    if reads_chunks(agent):
        return await agent.deliver(message, content)
    return await agent.deliver(message, await read_with(_whole, content))


def _whole(content: Content) -> bytes:
    return content if isinstance(content, bytes) else b"".join(chunks_of(content))


@dataclass(frozen=True, slots=True)
class Local:
    agent: LocalAgent


@dataclass(frozen=True, slots=True)
class Unroutable:
    """No route will ever exist (null MX, no such domain): a permanent failure."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class RouteLater:
    """No route now (a DNS timeout): try later."""

    reason: str


Destination = Hops | Local | Unroutable | RouteLater
Router = Callable[[SpooledMessage], Awaitable[Destination]]
PresendHook = Callable[[SpooledMessage], Awaitable[Presend]]
OnError = Callable[[SpooledMessage, Reply], Awaitable[Outcome]]


_NO_FLOWS = Flows()


@dataclass(frozen=True, slots=True, init=False)
class Delivery:
    """A message to spool: the envelope, and where it goes (explicit next hops, or a route
    key, usually the recipients' domain, for the router). Retry intervals default to the
    spool's."""

    envelope: Envelope
    next_hops: tuple[HostPort, ...] = ()
    route: str | None = None
    retry_intervals: tuple[RetryInterval, ...] | None = None
    flows: Flows = _NO_FLOWS  # mail log flows; an ``out##`` id is added

    # Written out: the dataclass's constructor runs interpreted in the compiled build
    # (ten times the cost; docs/performance.md, "Writing code that compiles").
    def __init__(
        self,
        envelope: Envelope,
        next_hops: tuple[HostPort, ...] = (),
        route: str | None = None,
        retry_intervals: tuple[RetryInterval, ...] | None = None,
        flows: Flows = _NO_FLOWS,
    ) -> None:
        object.__setattr__(self, "envelope", envelope)
        object.__setattr__(self, "next_hops", next_hops)
        object.__setattr__(self, "route", route)
        object.__setattr__(self, "retry_intervals", retry_intervals)
        object.__setattr__(self, "flows", flows)


class EventKind(enum.Enum):
    SPOOLED = "spooled"
    PRESEND = "presend"
    DELIVERED = "delivered"
    DELAYED = "delayed"
    DELAYED_RATE_LIMITED = "delayed_rate_limited"
    FROZEN = "frozen"
    UNFROZEN = "unfrozen"
    REMOVED = "removed"
    RECOVERED = "recovered"
    PURGED = "purged"
    QUARANTINED = "quarantined"
    BOUNCED = "bounced"
    PING = "ping"


@dataclass(frozen=True, slots=True, init=False)
class SpoolEvent:
    time: float
    kind: EventKind
    id: str = ""
    detail: str = ""
    spool_date: float | None = None  # when the message was accepted
    node: str = ""  # the node it happened on (a shared queue's), "" for this one
    # The queue the message is in after the event (active, frozen, removed, quarantine;
    # "delivered"); "" when it is gone (purged) or unknown (an event from another node).
    queue: str = ""
    # Why, for a deferral: the last attempt's error (this process's events, and other
    # nodes' of a shared queue; not in the events stream).
    reason: str = ""

    def __init__(  # (written out, as Delivery's)
        self,
        time: float,
        kind: EventKind,
        id: str = "",
        detail: str = "",
        spool_date: float | None = None,
        *,
        node: str = "",
        queue: str = "",
        reason: str = "",
    ) -> None:
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "detail", detail)
        object.__setattr__(self, "spool_date", spool_date)
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "queue", queue)
        object.__setattr__(self, "reason", reason)

    def __str__(self) -> str:
        return f"{self.id} {self.kind.value}{': ' + self.detail if self.detail else ''}".strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresSettings:
    """The shared PostgreSQL queue (``[spool.postgresql]``): several nodes, one queue.

    ``node`` names this node in leases; ``lease``: seconds a node holds a message it
    claimed (renewed while it works on it; another node takes it over once it lapses).
    """

    dsn: str
    node: str
    lease: float = 300.0
    pool_size: int = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolConfig:
    """``directory`` holds the journal (and spilled messages while they arrive); with
    ``postgresql``, messages live in that shared database instead."""

    directory: str | Path = "var/spool"
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    segment_size: int = 64 * 1024 * 1024
    max_deliveries: int = 100
    max_per_destination: int = 10
    batch_size: int = 20  # messages sent over one connection in a row (send_many)
    retry_intervals: tuple[RetryInterval, ...] = DEFAULT_RETRY_INTERVALS
    bounce: bool = True
    freeze_failed: bool = True  # keep a message whose recipients all failed, frozen
    reporting_mta: str = "localhost"
    delay_warning_after: float | None = None  # tell the sender once a message waits this long
    # A destination no next hop of which could be reached is not tried for this long
    # (its mail is deferred without a connection; None: the first retry interval; 0:
    # always try; see unreachable.py).
    unreachable_backoff: float | None = None
    # Frozen failed mail (every recipient done, some failed) is removed and purged this
    # long after its last attempt (None: kept until an operator acts; see retention.py).
    failed_retention: float | None = 7 * 86_400.0
    ping_interval: float = 30.0
    cache: CacheConfig = field(default_factory=CacheConfig)
    postgresql: PostgresSettings | None = None


async def default_presend(message: SpooledMessage) -> Presend:
    return _SEND_NOW


async def default_on_error(message: SpooledMessage, reply: Reply) -> Outcome:
    return Outcome.FAIL_PERMANENTLY if reply.is_permanent else Outcome.TRY_LATER


async def hops_only(message: SpooledMessage) -> Destination:
    """Without a router, a message must carry its next hops (the reference's model)."""
    if message.next_hops:
        return Hops(message.hops(), "hops:" + ",".join(message.next_hops))
    return Unroutable(Reply.of(554, "No route: the message has no next hops", "5.4.4"))
