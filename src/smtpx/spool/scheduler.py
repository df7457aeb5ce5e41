"""What is due, and who works on it: the spool's scheduler.

Messages waiting for a retry sit in a heap by due time; due ones go to a ready queue per
destination key (the message's explicit next hops, else its route: two domains that
share a smarthost are counted apart). Workers take up to ``batch_size`` messages of one
key at a time and hand them to ``work`` (the delivery engine), within two limits: at
most ``max_deliveries`` workers in all, ``max_per_destination`` per key. The scheduler
owns its tasks: :meth:`stop` ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable

from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.types import SpoolConfig

__all__ = ["Scheduler", "destination_key"]

log = logging.getLogger("smtpx.spool")

Lookup = Callable[[str], SpooledMessage | None]
Work = Callable[[list[SpooledMessage]], Awaitable[None]]


class Scheduler:
    def __init__(
        self, config: SpoolConfig, lookup: Lookup, work: Work, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.lookup = lookup  # a message by id, None once it is gone
        self.work = work
        self.clock = clock
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._ready: dict[str, deque[str]] = defaultdict(deque)
        self._active: dict[str, int] = defaultdict(int)
        self._workers: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.stopped = False

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._run_timer())

    async def stop(self, timeout: float | None = None) -> bool:
        """Start no new work, wait (up to ``timeout``) for the running workers, end the
        rest. False when workers had to be cut off."""
        self.stopped = True
        self._wake.set()
        clean = True
        if self._workers:
            _, pending = await asyncio.wait(list(self._workers), timeout=timeout)
            for task in pending:
                clean = False
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        return clean

    # -- what is due ----------------------------------------------------------------------

    def schedule(self, entry: SpooledMessage) -> None:
        """``entry`` (status SEND_AT) is due at its ``next_attempt``."""
        assert entry.next_attempt is not None
        self._seq += 1
        heapq.heappush(self._heap, (entry.next_attempt, self._seq, entry.id))
        self._wake.set()

    async def _run_timer(self) -> None:
        while not self.stopped:
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                due, _, message_id = heapq.heappop(self._heap)
                entry = self.lookup(message_id)
                # A stale heap entry (rescheduled, frozen, delivered since) is skipped.
                if (
                    entry is not None
                    and entry.status is Status.SEND_AT
                    and entry.next_attempt == due
                ):
                    entry.status = Status.SEND_NOW
                    self.make_ready(entry)
            self._wake.clear()
            delay = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- who works on it ------------------------------------------------------------------

    def make_ready(self, entry: SpooledMessage) -> None:
        """``entry`` (status SEND_NOW) is to be tried now."""
        key = destination_key(entry)
        self._ready[key].append(entry.id)
        self._kick(key)

    def _kick(self, key: str | None = None) -> None:
        if self.stopped:
            return
        keys = [key] if key is not None else list(self._ready)
        batch, per_destination = self.config.batch_size, self.config.max_per_destination
        for k in keys:
            queue = self._ready.get(k)
            if not queue:
                continue
            # Enough workers for the queue in batches, within both limits.
            wanted = min(per_destination, -(-len(queue) // batch))
            while self._active[k] < wanted and len(self._workers) < self.config.max_deliveries:
                self._active[k] += 1
                task = asyncio.get_running_loop().create_task(self._worker(k))
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)

    async def _worker(self, key: str) -> None:
        try:
            while not self.stopped:
                batch = self._take(key)
                if not batch:
                    return
                await self.work(batch)
        finally:
            self._active[key] -= 1
            if not self._active[key]:
                del self._active[key]
            if not self._ready.get(key):
                self._ready.pop(key, None)
            self._kick()

    def _take(self, key: str) -> list[SpooledMessage]:
        queue = self._ready.get(key)
        batch: list[SpooledMessage] = []
        while queue and len(batch) < self.config.batch_size:
            entry = self.lookup(queue.popleft())
            if entry is not None and entry.status is Status.SEND_NOW:
                entry.status = Status.SENDING
                batch.append(entry)
        return batch


def destination_key(entry: SpooledMessage) -> str:
    """What the per-destination limit counts: explicit next hops, else the route."""
    if entry.next_hops:
        return "hops:" + ",".join(entry.next_hops)
    if entry.route:
        return "route:" + entry.route.lower()
    domains = {r.rpartition("@")[2].lower() for r in entry.recipients}
    return "route:" + ",".join(sorted(domains))
