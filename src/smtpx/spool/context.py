"""What every part of the spool shares: its configuration, clock, events, counters and
mail log (one object, handed to each part, so that none needs another for them)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from smtpx.maillog import Flows, MailLog
from smtpx.server.events import EventBus
from smtpx.spool.message import SpooledMessage
from smtpx.spool.types import EventKind, SpoolConfig, SpoolEvent

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

    def emit(self, kind: EventKind, entry: SpooledMessage, detail: str = "") -> None:
        """Publish an event about ``entry`` (intake events carry its arrival time)."""
        when = entry.spool_date if kind in (EventKind.SPOOLED, EventKind.PRESEND) else self.clock()
        queue = "" if kind is EventKind.PURGED else entry.queue
        event = SpoolEvent(when, kind, entry.id, detail, entry.spool_date, queue=queue)
        self.events.publish(event)
        if self.share is not None:
            self.share(event)

    def log(self, entry: SpooledMessage) -> MailLog:
        """The mail log, with ``entry``'s flows."""
        return self.mail.with_flows(Flows(entry.flows))
