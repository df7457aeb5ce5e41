"""smtpx.testing.LoopTurns: the event loop's turns while a block awaits."""

from __future__ import annotations

import asyncio

from smtpx.testing import LoopTurns


def test_counts_the_turns_a_block_lets_the_loop_make() -> None:
    async def run() -> tuple[int, int, int]:
        async with LoopTurns() as three:
            for _ in range(3):
                await asyncio.sleep(0)
        async with LoopTurns() as none:
            sum(range(1000))  # no await: the loop never turns
        others = len(asyncio.all_tasks()) - 1  # (the counter's task is gone)
        return three.count, none.count, others

    assert asyncio.run(run()) == (3, 0, 0)
