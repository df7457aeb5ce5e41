"""``smtpx daemon``: the running MTA itself (health, statistics, the connection cache,
reloading the TLS certificate), through the same control plane as ``smtpx spool``."""

from __future__ import annotations

import json
from typing import Any

import click

from smtpx.cli.client import ControlClient, Target
from smtpx.cli.common import run
from smtpx.cli.spool import _online, connection_options
from smtpx.units import short_duration as span

__all__ = ["daemon"]


@click.group()
def daemon() -> None:
    """The running smtpx serve: health, statistics, cache, TLS reload."""


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
