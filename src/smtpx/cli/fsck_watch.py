"""``smtpx spool fsck --watch``: the spool monitor (F103) on the command line."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

__all__ = ["watch"]

# How the command runs its loop (tests give it a virtual clock).
runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run


def watch(
    directory: Path,
    *,
    every: float,
    alert_after: int,
    cycles: int | None,
    as_json: bool,
    **check_options: Any,
) -> bool:
    """Check ``directory`` every ``every`` seconds and print each alert (a problem seen
    in ``alert_after`` checks in a row, then gone); True when problems are alerting at
    the end (after ``cycles`` checks)."""
    from smtpx.spool.fsck import check_all  # noqa: PLC0415
    from smtpx.spool.monitor import Alert, Monitor  # noqa: PLC0415

    monitor = Monitor(alert_after=alert_after)
    once = functools.partial(check_all, directory, **check_options)

    async def checked() -> list[Any]:
        return await asyncio.to_thread(once)

    def report(alert: Alert) -> None:
        if as_json:
            click.echo(json.dumps(alert.to_json()))
        else:
            click.secho(str(alert), fg="red" if alert.event == "start" else "green")

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a watch: not an error
        runner(monitor.run(checked, every, report, cycles=cycles))
    return bool(monitor.alerting)
