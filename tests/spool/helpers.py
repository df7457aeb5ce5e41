"""Helpers for spool tests: a spool on a virtual clock delivering into a memory network."""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from smtpx.envelope import Envelope, HostPort, RetryInterval
from smtpx.spool.journal import FsyncPolicy
from smtpx.spool.spool import Delivery, Spool, SpoolConfig
from smtpx.testing import MemoryNetwork, run_virtual

T = TypeVar("T")
EPOCH = 1_800_000_000.0  # the virtual clock's wall time at loop time 0
MX = HostPort("mx.test", 25)


def envelope(
    n: int = 0, *, sender: str = "sender@example.com", recipients: list[str] | None = None
) -> Envelope:
    return Envelope.create(
        sender=sender,
        recipients=recipients or [f"r{n}@example.org"],
        message=(
            f"From: {sender}\r\nSubject: {n}\r\nMessage-ID: <m{n}@example.com>\r\n\r\n.body {n}\r\n"
        ).encode(),
    )


def delivery(n: int = 0, **kw: Any) -> Delivery:
    retry = kw.pop("retry", None)
    recipients = kw.pop("recipients", None)
    sender = kw.pop("sender", "sender@example.com")
    intervals = None if retry is None else tuple(RetryInterval.parse(r) for r in retry)
    return Delivery(
        envelope(n, sender=sender, recipients=recipients),
        next_hops=kw.pop("next_hops", (MX,)),
        retry_intervals=intervals,
        **kw,
    )


def make_spool(directory: Path, network: MemoryNetwork, **config: Any) -> Spool:
    loop = asyncio.get_running_loop()
    settings: dict[str, Any] = {
        "directory": directory,
        "fsync": FsyncPolicy.NEVER,
        "ping_interval": 1e9,
    }
    settings.update(config)
    hooks = {k: settings.pop(k) for k in ("router", "presend", "on_error") if k in settings}
    return Spool(
        SpoolConfig(**settings),
        clock=lambda: EPOCH + loop.time(),
        opener=network,
        **hooks,
    )


def virtual(scenario: Callable[[], Awaitable[T]]) -> T:
    async def run() -> T:
        return await scenario()

    return run_virtual(run())


async def settle(seconds: float = 0.0) -> None:
    """Let the spool work: sleep (virtually) and give every task a few turns."""
    await asyncio.sleep(seconds)
    for _ in range(20):
        await asyncio.sleep(0)


@contextlib.contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Python's memory traced (tracemalloc) while the block runs; the function it gives
    says the most held so far."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
