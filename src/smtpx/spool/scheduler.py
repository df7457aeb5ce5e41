"""Who works on what is due: the spool's scheduler.

The store knows what is due (:meth:`~smtpx.spool.store.Store.claim_due`); the scheduler
claims it when the store's ``wakeup`` is set or the next message falls due, puts each
claimed message in the ready queue of its destination key (the message's explicit next
hops, else its route: two domains that share a smarthost are counted apart), and runs
workers. A worker takes up to ``batch_size`` messages of one key at a time and hands them
to ``work`` (the delivery engine), within two limits: at most ``max_deliveries`` workers
in all, ``max_per_destination`` per key. The scheduler owns its tasks: :meth:`stop` ends
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable

from smtpx.io.tasks import cancel_and_wait
from smtpx.spool.message import SpooledMessage, Status, destination_key
from smtpx.spool.store import Store
from smtpx.spool.types import SpoolConfig

__all__ = ["STOP_GRACE", "Scheduler", "destination_key", "grace", "wind_down"]

log = logging.getLogger("smtpx.spool")

Work = Callable[[list[SpooledMessage]], Awaitable[None]]


class Scheduler:
    def __init__(
        self, config: SpoolConfig, store: Store, work: Work, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.store = store
        self.work = work
        self.clock = clock
        self._ready: dict[str, deque[SpooledMessage]] = defaultdict(deque)
        self._active: dict[str, int] = defaultdict(int)
        self._workers: set[asyncio.Task[None]] = set()
        # Ids claimed and not done with (waiting in a ready queue, or being worked on): a
        # message claimed again meanwhile (frozen and released during its attempt) is
        # left to the attempt under way, never tried twice at once.
        self._busy: set[str] = set()
        self._claimer: asyncio.Task[None] | None = None
        self.stopped = False

    def start(self) -> None:
        self._claimer = asyncio.get_running_loop().create_task(self._claim_forever())

    async def stop(self, timeout: float | None = None) -> bool:
        """Start no new work, wait (up to ``timeout``) for the running workers, end the
        rest. False when workers had to be cut off."""
        self.stopped = True
        self.store.wakeup.set()
        clean = True
        if self._workers:
            _, pending = await asyncio.wait(list(self._workers), timeout=timeout)
            clean = not pending
            await cancel_and_wait(pending)
        if self._claimer is not None:
            # It sees `stopped` after its statement (within the caller's timeout).
            await wind_down(self._claimer, grace(timeout))
        return clean

    # -- what is due ----------------------------------------------------------------------

    async def _claim_forever(self) -> None:
        store = self.store
        while not self.stopped:
            # Cleared before claiming: a message noted meanwhile sets it again.
            store.wakeup.clear()
            now = self.clock()
            for entry in await store.claim_due(now):
                if entry.id not in self._busy:
                    self._busy.add(entry.id)
                    self._ready[destination_key(entry)].append(entry)
            self._kick()
            due = await store.next_due()
            delay = None if due is None else max(due - now, 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await store.wakeup.wait()

    # -- who works on it ------------------------------------------------------------------

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
                try:
                    await self.work(batch)
                finally:
                    self._busy.difference_update(entry.id for entry in batch)
        finally:
            self._active[key] -= 1
            if not self._active[key]:
                del self._active[key]
            if not self._ready.get(key):
                self._ready.pop(key, None)
            self._kick()

    def _take(self, key: str) -> list[SpooledMessage]:
        """Up to a batch of the key's claimed messages; one frozen (or otherwise taken
        over) while it waited is left alone."""
        queue = self._ready.get(key)
        batch: list[SpooledMessage] = []
        while queue and len(batch) < self.config.batch_size:
            entry = queue.popleft()
            if entry.status is Status.SENDING:
                batch.append(entry)
            else:
                self._busy.discard(entry.id)
        return batch


STOP_GRACE = 5.0  # seconds a background task has to end by itself at shutdown


def grace(timeout: float | None) -> float:
    """:data:`STOP_GRACE`, or less when the caller has less time."""
    return STOP_GRACE if timeout is None else max(0.0, min(timeout, STOP_GRACE))


async def wind_down(task: asyncio.Task[None], grace: float = STOP_GRACE) -> None:
    """Wait up to ``grace`` seconds for ``task`` (told to stop) to end by itself, then
    cancel it. A task cancelled in the middle of a database statement costs a cancel
    request and holds its connection until the server confirms; one that ends at its
    next wait costs nothing."""
    await asyncio.wait([task], timeout=grace)
    await cancel_and_wait([task])
