"""``smtpx daemon``: the running MTA itself (health, statistics, the connection cache,
its errors, reloading the TLS certificate), through the same control plane as
``smtpx spool``."""

from __future__ import annotations

import json
from typing import Any

import click

from smtpx.cli.client import ControlClient, Target, watch
from smtpx.cli.common import DurationType, run
from smtpx.cli.spool import _online, connection_options
from smtpx.units import iso_time
from smtpx.units import short_duration as span

__all__ = ["daemon"]


@click.group()
def daemon() -> None:
    """The running smtpx serve: health, statistics, cache, errors, TLS reload."""


async def _get(target: Target, path: str) -> Any:
    async with ControlClient(target) as client:
        return await client.get_json(path)


async def _post(target: Target, path: str) -> Any:
    async with ControlClient(target) as client:
        return await client.post_json(path, {})


def _show(data: Any, as_json: bool, lines: list[str]) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else "\n".join(lines))


@daemon.command()
@connection_options(offline=False)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.pass_context
def status(ctx: click.Context, /, *, as_json: bool) -> None:
    """Version, uptime, listeners, sessions and message counters."""
    target = _online(ctx)
    health = run(_get(target, "healthz"))
    server = run(_get(target, "v1/server"))
    lines = [
        f"smtpx {server['version']} on {server['hostname']}, up {span(health['uptime'])}",
        "listeners: " + ", ".join(f"{x['name']} (port {x['port']})" for x in server["listeners"]),
        f"sessions open: {server['sessions']}",
        "server: " + ", ".join(f"{k}={v}" for k, v in sorted(server["stats"].items())),
        "spool:  " + ", ".join(f"{k}={v}" for k, v in sorted(server["spool"].items())),
    ]
    _show({"health": health, "server": server}, as_json, lines)


@daemon.command()
@connection_options(offline=False)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.pass_context
def cache(ctx: click.Context, /, *, as_json: bool) -> None:
    """The outbound connection cache: open, idle and busy sessions per destination."""
    data = run(_get(_online(ctx), "v1/cache"))
    lines = [f"open {data['open']}, opened {data['opened']}, reused {data['reused']}"]
    lines += [
        f"  {name}: open {v['open']}, idle {v['idle']}, busy {v['busy']}"
        for name, v in sorted(data["destinations"].items())
    ]
    _show(data, as_json, lines)


@daemon.command("reload-tls")
@connection_options(offline=False)
@click.pass_context
def reload_tls(ctx: click.Context, /) -> None:
    """Read the TLS certificate and key files again (new handshakes use them)."""
    run(_post(_online(ctx), "v1/tls/reload"))
    click.echo("TLS certificate reloaded")


@daemon.command()
@connection_options(offline=False)
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until interrupted (Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print the NDJSON lines as they come.")
@click.option(
    "--recent",
    type=click.IntRange(0, 100),
    default=10,
    show_default=True,
    help="First show this many of the last errors the daemon kept.",
)
@click.option(
    "--timeout",
    type=DurationType(),
    default="5s",
    show_default=True,
    help="Without --follow: stop after this long (or at the first heartbeat).",
)
@click.pass_context
def errors(
    ctx: click.Context, /, *, follow: bool, as_json: bool, recent: int, timeout: float
) -> None:
    """Print the daemon's error-level log records as they happen.

    Each has a sequence number: a gap means errors were logged while nobody watched (the
    daemon keeps the last 100). Heartbeats come every 10 s with --follow.
    """
    try:
        run(_errors(_online(ctx), follow=follow, as_json=as_json, recent=recent, timeout=timeout))
    except KeyboardInterrupt:
        return


async def _errors(
    target: Target, *, follow: bool, as_json: bool, recent: int, timeout: float
) -> None:
    ping = "" if follow else f"&ping={max(0.1, timeout / 2):g}"
    path = f"v1/errors?recent={recent}{ping}"
    async for text, event in watch(target, path, follow=follow, timeout=timeout, what="errors"):
        if as_json:
            click.echo(text)
        elif event.get("kind") == "error":
            click.echo(_error_text(event))


def _error_text(event: dict[str, Any]) -> str:
    """``#seq 2026-11-24T04:51:50Z error logger: message``, then the traceback."""
    when = iso_time(float(event.get("time", 0)))
    text = f"#{event.get('seq')} {when} {event.get('level')} {event.get('logger')}: "
    text += str(event.get("message"))
    fields = event.get("fields")
    if isinstance(fields, dict):
        text += "".join(f" {k}={v}" for k, v in fields.items() if k not in ("flows",))
    if event.get("exception"):
        text += "\n" + str(event["exception"])
    return text
