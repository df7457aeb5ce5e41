"""Counting the event loop's turns: how many times the loop ran its ready callbacks
while some code awaited. A test reads from it whether a wait let the loop go on (a
loop blocked by a synchronous call turns once) or how long, in turns, something put a
piece of work off."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

__all__ = ["LoopTurns"]


class LoopTurns:
    """``async with LoopTurns() as turns: ...`` then ``turns.count``: the turns the
    running loop made inside the block (a task of its own counts one a turn)."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopTurns:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0)  # (the counter's first turn: the block's start)
        self.count = 0
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)
