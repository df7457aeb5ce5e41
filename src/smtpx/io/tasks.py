"""Tasks that do not end: cancelling until they do, and where they wait when something
takes too long (a shutdown that does not end).

A task's own stack (``Task.get_stack``) shows only its outermost coroutine; the report
follows each coroutine's ``cr_await`` down to what it really waits on, so a line reads
``Mta._close (app.py:282) > Spool.kill_and_flush (spool.py:216) > PgStore.close
(store.py:169) > future``. Compiled coroutines do not expose that chain: they
show as their type.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["await_chain", "cancel_and_wait", "report_while_slow", "waiting_tasks", "within"]

MAX_LINES = 40  # distinct chains listed in one report (sessions alike are counted once)


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``await awaitable``, cancelled with :class:`TimeoutError` after ``timeout``
    seconds (None: no limit): ``asyncio.timeout`` for the modules the compiled build
    makes C extensions of, which must not use ``async with`` (tests/test_compiled.py)."""
    async with asyncio.timeout(timeout):
        return await awaitable


def await_chain(task: asyncio.Task[Any]) -> str:
    """Where ``task`` waits: its coroutines, outermost first, as ``name (file:line)``."""
    parts: list[str] = []
    awaited: Any = task.get_coro()
    for _ in range(100):  # (a chain is never that deep; a cycle must not hang the report)
        if awaited is None:
            break
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:  # a future (its iterator says nothing more), or compiled code
            name = type(awaited).__name__
            parts.append("future" if name == "FutureIter" else name)
            break
        code = frame.f_code
        parts.append(f"{code.co_qualname} ({Path(code.co_filename).name}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " > ".join(parts)


def waiting_tasks(exclude: asyncio.Task[Any] | None = None) -> list[str]:
    """One line per distinct chain of the running loop's unfinished tasks (but
    ``exclude``), the most frequent first, with a count where several wait alike."""
    chains = Counter(
        await_chain(task) for task in asyncio.all_tasks() if task is not exclude and not task.done()
    )
    lines = [chain if n == 1 else f"{n} x {chain}" for chain, n in chains.most_common(MAX_LINES)]
    if len(chains) > MAX_LINES:
        lines.append(f"... and {len(chains) - MAX_LINES} more")
    return lines


async def report_while_slow(what: str, every: float, log: logging.Logger) -> None:
    """Until cancelled: every ``every`` seconds, log that ``what`` is still running and
    where every other task waits. Start it beside the work; cancel it when done."""
    me = asyncio.current_task()
    waited = 0.0
    while True:
        await asyncio.sleep(every)
        waited += every
        count = sum(1 for task in asyncio.all_tasks() if task is not me and not task.done())
        log.warning(
            "%s still running after %g s; %d tasks waiting:\n  %s",
            what,
            waited,
            count,
            "\n  ".join(waiting_tasks(exclude=me)),
        )


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], again_every: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended; their exceptions are taken
    (not logged as never retrieved). A task still running ``again_every`` seconds after
    a cancel is cancelled again: one cancel can be lost (code that catches it, or
    Python 3.11's ``wait_for`` when what it awaited finished in the same turn), and a
    loop that goes on must not hold up a shutdown for good."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_every)
    for task in tasks:
        if not task.cancelled():
            task.exception()
