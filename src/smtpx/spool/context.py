"""What every part of the spool shares: its configuration, clock, events, counters, mail
log and the destinations found unreachable (one object, handed to each part, so that none
needs another for them)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from smtpx.maillog import Flows, MailLog
from smtpx.server.events import EventBus
from smtpx.spool.message import SpooledMessage
from smtpx.spool.types import EventKind, SpoolConfig, SpoolEvent
from smtpx.spool.unreachable import Unreachable

__all__ = ["SpoolContext"]


@dataclass
class SpoolContext:
    config: SpoolConfig
    clock: Callable[[], float] = time.time
    events: EventBus[SpoolEvent] = field(default_factory=EventBus)
    stats: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    mail: MailLog = field(default_factory=lambda: MailLog("spool"))
    # Where this node's events also go (a shared queue tells the other nodes).
    share: Callable[[SpoolEvent], None] | None = None
    # Destinations not to be tried for now (delivery marks them, intake and delivery ask).
    unreachable: Unreachable = field(init=False)

    def __post_init__(self) -> None:
        self.unreachable = Unreachable(self.clock, self._unreachable_backoff)

    def _unreachable_backoff(self) -> float:
        """How long a destination found unreachable is suspended (the configuration's,
        else the first retry interval; none: never)."""
        config = self.config
        if config.unreachable_backoff is not None:
            return config.unreachable_backoff
        return config.retry_intervals[0].span if config.retry_intervals else 0.0

    def emit(
        self, kind: EventKind, entry: SpooledMessage, detail: str = "", reason: str = ""
    ) -> None:
        """Publish an event about ``entry`` (intake events carry its arrival time)."""
        when = entry.spool_date if kind in (EventKind.SPOOLED, EventKind.PRESEND) else self.clock()
        queue = "" if kind is EventKind.PURGED else entry.queue
        event = SpoolEvent(
            when, kind, entry.id, detail, entry.spool_date, queue=queue, reason=reason
        )
        self.events.publish(event)
        if self.share is not None:
            self.share(event)

    def log(self, entry: SpooledMessage) -> MailLog:
        """The mail log, with ``entry``'s flows."""
        return self.mail.with_flows(Flows(entry.flows))
