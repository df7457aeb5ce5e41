"""``smtpx spool ...``: inspect and operate the queue of a running ``smtpx serve`` (F124).

Every command talks to the daemon's control plane (:mod:`smtpx.mta.control`); ``status``,
``count`` and ``show`` can also read the spool directory itself (``--offline``: read-only,
safe while the daemon runs, though its newest records may not be seen yet), and ``fsck``
always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import click

from smtpx.cli import locate
from smtpx.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    DurationType,
    Failure,
    RetryIntervalType,
    console,
    load_config,
    read_secret,
    run,
)

if TYPE_CHECKING:
    from smtpx.cli.client import ControlClient, Target

__all__ = ["spool"]

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "exim", "json", "ids")  # smtpx.cli.render.FORMATS, without importing rich
# The status words and queues of smtpx.spool.message.Status (what MessageFilter takes).
STATUS_WORDS = (
    "active",
    "frozen",
    "removed",
    "quarantine",
    "send_now",
    "send_at",
    "sending",
    "quarantined",
    "delivered",
)
# smtpx.spool.types.EventKind, without the ping (what GET /v1/spool/events?kind= takes).
EVENT_KINDS = (
    "spooled",
    "presend",
    "delivered",
    "delayed",
    "delayed_rate_limited",
    "frozen",
    "unfrozen",
    "removed",
    "recovered",
    "purged",
    "quarantined",
    "bounced",
)
CHUNK = 200  # ids per request for freeze/send/remove/recover
ASK_ABOVE = 3  # remove asks for confirmation for more ids than this (--yes does not)
_META = "smtpx.connection"


# -- where the spool is ------------------------------------------------------------------


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_META, {})[param.name] = value
    return value


def _option(*names: str, **attrs: Any) -> Callable[[F], F]:
    return click.option(*names, expose_value=False, callback=_remember, **attrs)


def connection_options(*, offline: bool) -> Callable[[F], F]:
    """The options that say where the daemon (or, with ``offline``, the spool) is."""
    options = [
        _option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, exists=True),
            envvar="SMTPX_CONFIG",
            help="The smtpx serve configuration: its [control] socket (or http address and "
            "token_file, with --tcp) and its spool dir. Env: SMTPX_CONFIG.",
        ),
        _option(
            "--socket",
            "socket_path",
            type=click.Path(dir_okay=False),
            envvar="SMTPX_SOCKET",
            help="The control socket (default: that of --config, else of the smtpx serve "
            "running, else ./var/control.sock). Env: SMTPX_SOCKET.",
        ),
        _option(
            "--url",
            metavar="http://127.0.0.1:PORT",
            help="The control plane over HTTP instead of the socket (needs a token).",
        ),
        _option(
            "--token-file",
            type=click.Path(dir_okay=False),
            help="The bearer token for --url/--tcp (default: control.token_file of --config).",
        ),
        _option(
            "--tcp",
            is_flag=True,
            help="With --config: use its control.http address and token instead of the socket.",
        ),
    ]
    if offline:
        options += [
            _option(
                "--offline",
                is_flag=True,
                help="Read the spool directory instead of asking the daemon (read-only).",
            ),
            _option(
                "--spool-dir",
                type=click.Path(file_okay=False),
                help="The spool directory to read (implies --offline; default: spool.dir of "
                "--config, else ./var/spool).",
            ),
        ]

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def spool_dir_options(function: F) -> F:
    """``--config`` and ``--spool-dir`` for commands that only read the directory."""
    function = _option(
        "--spool-dir",
        type=click.Path(file_okay=False),
        help="The spool directory (default: spool.dir of --config, else ./var/spool).",
    )(function)
    return _option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, exists=True),
        envvar="SMTPX_CONFIG",
        help="The smtpx serve configuration (for its spool dir). Env: SMTPX_CONFIG.",
    )(function)


def _spool_dir(options: dict[str, Any]) -> Path:
    if options.get("spool_dir"):
        return Path(options["spool_dir"]).absolute()
    if options.get("config_file"):
        return load_config(options["config_file"]).spool.dir
    return Path("var/spool").absolute()


def _source(ctx: click.Context) -> Target | Path:
    """The daemon to ask, or (offline) the spool directory to read."""
    from smtpx.cli.client import Target  # noqa: PLC0415 - aiohttp only when needed

    options: dict[str, Any] = ctx.meta.get(_META, {})
    socket_path = options.get("socket_path")
    url = options.get("url")
    token_file = options.get("token_file")
    tcp = bool(options.get("tcp"))
    if options.get("offline") or options.get("spool_dir"):
        if socket_path or url or token_file or tcp:
            raise click.UsageError(
                "--offline reads the spool directory: it takes no --socket, --url, "
                "--token-file or --tcp"
            )
        return _spool_dir(options)
    config = load_config(options["config_file"]) if options.get("config_file") else None
    if socket_path and (url or tcp):
        raise click.UsageError("give --socket, or --url/--tcp: not both")
    if url and tcp:
        raise click.UsageError("give --url or --tcp: not both")
    if url or tcp:
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise click.BadParameter(
                    f"not an http:// URL: {url!r}", ctx=ctx, param_hint="'--url'"
                )
        else:
            if config is None:
                raise click.UsageError("--tcp needs --config")
            address = config.control.http
            if address is None or address.port == 0:
                raise Failure(
                    f"{config.source}: [control] has no http address with a port", EXIT_USAGE
                )
            url = f"http://{address}"
        if token_file:
            token: str | None = read_secret(token_file, "token")
        elif config is not None and config.control.token_file is not None:
            token = read_secret(config.control.token_file, "token")
        else:
            token = None
        return Target(url=url, token=token)
    if token_file:
        raise click.UsageError("--token-file goes with --url or --tcp")
    if socket_path:
        path, found = Path(socket_path), "--socket"
    elif config is not None:
        path, found = config.control.socket, f"control.socket of {config.source}"
    else:
        path, found = locate.control_socket()
    return Target(socket=path.absolute(), found=found, offline=locate.offline_capable(ctx))


def _online(ctx: click.Context) -> Target:
    source = _source(ctx)
    assert not isinstance(source, Path)
    return source


# -- filters -------------------------------------------------------------------------------


def _check_regex(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise click.BadParameter(f"not a regular expression: {exc}", ctx, param) from None
    return value


def _check_selector(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from smtpx.errors import ParseError  # noqa: PLC0415
        from smtpx.selector import parse  # noqa: PLC0415

        try:
            parse(value)
        except ParseError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


SELECT_HELP = (
    "An envelope selector, like: envelope_sender /@example\\.com$/ and not "
    "exists_header X-Spam /yes/ (see smtpx select --help)."
)
select_option = click.option("--select", metavar="EXPR", callback=_check_selector, help=SELECT_HELP)


def filter_options(function: F) -> F:
    """The status filters (ANDed; for multi-valued fields any value may match)."""
    options = [
        click.option(
            "--id",
            metavar="ID",
            help="Goes by this id: a spool id, a transaction id (the 'queued as' id), or a "
            "Message-ID.",
        ),
        click.option(
            "--sender", metavar="RE", callback=_check_regex, help="Sender matches (any case)."
        ),
        click.option(
            "--recipient",
            metavar="RE",
            callback=_check_regex,
            help="A recipient (still to deliver, or failed) matches.",
        ),
        click.option(
            "--next-hop",
            metavar="RE",
            callback=_check_regex,
            help="A next hop (or the route) matches.",
        ),
        click.option(
            "--status",
            type=click.Choice(STATUS_WORDS),
            help="A status, or a queue (active, frozen, removed, quarantine).",
        ),
        click.option(
            "--older", type=DurationType(), help="Longer than this on the spool (like 10m)."
        ),
        click.option(
            "--younger", type=DurationType(), help="Shorter than this on the spool (like 1h)."
        ),
        select_option,
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _query(filters: dict[str, Any]) -> dict[str, str]:
    query: dict[str, str] = {}
    for name in ("id", "sender", "recipient", "next_hop", "status", "select"):
        if filters.get(name) is not None:
            query[name] = str(filters[name])
    for name in ("older", "younger"):
        if filters.get(name) is not None:
            query[name] = f"{float(filters[name])!r}s"
    return query


def _offline_messages(directory: Path, filters: dict[str, Any]) -> list[dict[str, Any]]:
    from smtpx.spool.filter import MessageFilter, message_json  # noqa: PLC0415
    from smtpx.spool.shards import shard_dirs  # noqa: PLC0415
    from smtpx.spool.spool import Spool  # noqa: PLC0415

    if not (directory / "journal").is_dir():
        raise Failure(f"{directory} is not a spool directory (no journal/ in it)", EXIT_USAGE)
    select = filters.pop("select", None)
    chosen = MessageFilter(**{k: v for k, v in filters.items() if v is not None})
    messages: list[Any] = []
    for part in shard_dirs(directory):  # (with workers: each one's shard too)
        found = chosen.select(Spool.status_from_disk(part), time.time())
        messages += found if select is None else _offline_select(part, found, select)
    messages.sort(key=lambda m: m.spool_date)
    return [message_json(m) for m in messages]


def _offline_select(directory: Path, messages: list[Any], select: str) -> list[Any]:
    from smtpx.protocol import dot_unstuff  # noqa: PLC0415
    from smtpx.selector import parse  # noqa: PLC0415
    from smtpx.spool.filter import selector_fields  # noqa: PLC0415
    from smtpx.spool.journal import Journal  # noqa: PLC0415

    selector, journal = parse(select), Journal(directory)

    def content(message: Any) -> bytes | None:
        if not selector.uses_headers:
            return None
        return dot_unstuff(journal.read_body_raw(message.location)[0])

    try:
        return [m for m in messages if selector.matches(selector_fields(m, content(m)))]
    except OSError as exc:
        raise Failure(f"cannot read a message of {directory}: {exc}", EXIT_FAILURE) from None


def _selected_ids(target: Target, select: str, statuses: tuple[str, ...]) -> list[str]:
    """The ids of the messages ``select`` picks whose status is one of ``statuses``."""
    body = run(_ask(target, lambda c: c.get_json("v1/spool/messages", {"select": select})))
    return [m["id"] for m in body["messages"] if m["status"] in statuses]


def _ids_or_select(ids: tuple[str, ...], select: str | None) -> None:
    if ids and select is not None:
        raise click.UsageError("give message ids or --select: not both")
    if not ids and select is None:
        raise click.UsageError("give message ids, or --select EXPR")


async def _ask(target: Target, request: Callable[[ControlClient], Any]) -> Any:
    from smtpx.cli.client import ControlClient  # noqa: PLC0415

    async with ControlClient(target) as client:
        return await request(client)


# -- the group -------------------------------------------------------------------------------


@click.group()
def spool() -> None:
    """Inspect and operate the spool of a running smtpx serve.

    Commands reach the daemon through its control socket (--socket; by default the
    [control] socket of --config, else that of the smtpx serve running, from any
    directory, else ./var/control.sock), or over HTTP with a bearer
    token (--url and --token-file, or --tcp with --config). status, count and show also
    work --offline on the spool directory; fsck always does.

    \b
    Many ids at once (remove asks first for more than 3 ids; --yes does not):
    smtpx spool status --format ids --status frozen | xargs -r smtpx spool remove --yes
    """


@spool.command()
@connection_options(offline=True)
@filter_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table (ages coloured), exim (like exim -bp), json, or ids (one per line).",
)
@click.pass_context
def status(ctx: click.Context, /, *, fmt: str, **filters: Any) -> None:
    """List the messages on the spool, oldest first."""
    from smtpx.cli import render  # noqa: PLC0415

    source = _source(ctx)
    if isinstance(source, Path):
        messages = _offline_messages(source, filters)
    else:
        query = _query(filters)
        body = run(_ask(source, lambda c: c.get_json("v1/spool/messages", query)))
        messages = body["messages"]
    out = console(width=render.TABLE_WIDTH)  # the terminal's width, when it is one
    shown = render.render_status(messages, fmt, time.time(), out.width)
    if isinstance(shown, str):
        click.echo(shown, nl=False)
    else:
        out.print(shown)


@spool.command()
@connection_options(offline=True)
@filter_options
@click.option(
    "--by",
    type=click.Choice(["recipient", "sender"]),
    default="recipient",
    show_default=True,
    help="Rows by destination domain, or by the sender's domain.",
)
@click.option(
    "--bucket",
    "first",
    type=DurationType(),
    default="5m",
    show_default=True,
    help="The first age bucket; each next one is twice as long (or, --linear, one more).",
)
@click.option(
    "--buckets",
    "count",
    type=click.IntRange(2, 30),
    default=10,
    show_default=True,
    help="How many age buckets (the last one holds everything older).",
)
@click.option("--linear", is_flag=True, help="Buckets of equal length instead of doubling.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def shape(
    ctx: click.Context,
    /,
    *,
    by: str,
    first: float,
    count: int,
    linear: bool,
    as_json: bool,
    **filters: Any,
) -> None:
    """The queue by domain and age, like Postfix's qshape.

    One row per destination domain (or --by sender), the busiest first under a TOTAL
    row; T is the row's total, then one column per age bucket, named by its upper
    bound: with the defaults 5m, 10m, 20m ... 10h40m, 21h20m, and 21h20m+ for anything
    older.
    Takes the filters of status (--status frozen: the frozen messages only).
    """
    from smtpx.cli.shape import shape_table  # noqa: PLC0415
    from smtpx.spool.shape import shape as count_shape  # noqa: PLC0415

    if first <= 0:
        raise click.BadParameter("must be more than 0", ctx=ctx, param_hint="'--bucket'")
    source = _source(ctx)
    if isinstance(source, Path):
        messages = _offline_messages(source, filters)
    else:
        query = _query(filters)
        body = run(_ask(source, lambda c: c.get_json("v1/spool/messages", query)))
        messages = body["messages"]
    result = count_shape(messages, time.time(), by=by, first=first, count=count, linear=linear)
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        console(width=180).print(shape_table(result))  # (wide when not a terminal)


@spool.command()
@connection_options(offline=True)
@filter_options
@click.option("--json", "as_json", is_flag=True, help='Print {"count": n, "by_status": {...}}.')
@click.pass_context
def count(ctx: click.Context, /, *, as_json: bool, **filters: Any) -> None:
    """Count the messages on the spool (the same filters as status)."""
    source = _source(ctx)
    if isinstance(source, Path):
        by_status: dict[str, int] = {}
        for message in _offline_messages(source, filters):
            by_status[message["status"]] = by_status.get(message["status"], 0) + 1
        result = {"count": sum(by_status.values()), "by_status": by_status}
    else:
        query = _query(filters)
        result = run(_ask(source, lambda c: c.get_json("v1/spool/count", query)))
    click.echo(json.dumps(result) if as_json else str(result["count"]))


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


async def _for_ids(
    target: Target, path: str, ids: list[str], extra: dict[str, Any], verb: str
) -> list[Any]:
    """POST ``ids`` in chunks, with a progress bar when there are several chunks."""
    from rich.progress import Progress  # noqa: PLC0415

    from smtpx.cli.client import ControlClient  # noqa: PLC0415

    chunks = [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]
    err = console(stderr=True)
    results: list[Any] = []
    done = 0
    async with ControlClient(target) as client:
        quiet = len(chunks) < 2 or not err.is_terminal
        with Progress(console=err, transient=True, disable=quiet) as progress:
            task = progress.add_task(verb, total=len(ids))
            for chunk in chunks:
                try:
                    results.append(await client.post_json(path, {"ids": chunk, **extra}))
                except Failure as exc:
                    # The API goes through the ids in order and stops at the first it
                    # cannot handle, which its error names first.
                    failed = exc.message.split(":", 1)[0]
                    before = ids.index(failed) if failed in ids else done
                    if before:
                        n = f"{before} id{'' if before == 1 else 's'}"
                        raise Failure(
                            f"{exc.message} (the {n} before it were done)", exc.exit_code
                        ) from None
                    raise
                done += len(chunk)
                progress.advance(task, len(chunk))
    return results


def _plural(n: int) -> str:
    return f"{n} message{'' if n == 1 else 's'}"


@spool.command()
@connection_options(offline=False)
@select_option
@click.argument("ids", nargs=-1, metavar="ID...")
@click.pass_context
def freeze(ctx: click.Context, /, *, select: str | None, ids: tuple[str, ...]) -> None:
    """Freeze messages (the ids, or the active ones --select picks): they stay on the
    spool, untried, until sent."""
    _ids_or_select(ids, select)
    active = ("send_now", "send_at", "sending")
    wanted = _unique(ids) if select is None else _selected_ids(_online(ctx), select, active)
    run(_for_ids(_online(ctx), "v1/spool/freeze", wanted, {}, "freezing"))
    click.echo(f"frozen: {_plural(len(wanted))}")


@spool.command("send")
@connection_options(offline=False)
@click.option("--all", "send_all", is_flag=True, help="Every frozen and waiting message.")
@click.option("--frozen", is_flag=True, help="Every frozen message.")
@click.option(
    "--retry-interval",
    "retry_intervals",
    multiple=True,
    type=RetryIntervalType(),
    help="Retry intervals to use first if this attempt fails (repeatable; like 5m or 5m~30s).",
)
@select_option
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.pass_context
def send_command(
    ctx: click.Context,
    /,
    *,
    send_all: bool,
    frozen: bool,
    retry_intervals: tuple[str, ...],
    select: str | None,
    ids: tuple[str, ...],
) -> None:
    """Try messages now: the given ids, or --all, or --frozen (unfreezing them), or the
    frozen and waiting ones --select picks."""
    if select is not None:
        if ids or send_all or frozen:
            raise click.UsageError("give --select alone: not with ids, --all or --frozen")
        ids = tuple(_selected_ids(_online(ctx), select, ("frozen", "send_at")))
        if not ids:
            click.echo(f"released: {_plural(0)}")
            return
    if ids and (send_all or frozen):
        raise click.UsageError("give message ids, or --all, or --frozen: not several")
    if send_all and frozen:
        raise click.UsageError("give --all or --frozen: not both")
    if not (ids or send_all or frozen):
        raise click.UsageError("give message ids, or --all, or --frozen")
    target = _online(ctx)
    extra: dict[str, Any] = {"retry_intervals": list(retry_intervals)}
    if ids:
        results = run(_for_ids(target, "v1/spool/send", _unique(ids), extra, "sending"))
        released = sum(int(r.get("released", 0)) for r in results)
    else:
        body = {**extra, ("all" if send_all else "frozen"): True}
        err = console(stderr=True)
        spinner = err.status("smtpx serve is releasing messages...")
        with spinner if err.is_terminal else contextlib.nullcontext():
            result = run(_ask(target, lambda c: c.post_json("v1/spool/send", body)))
        released = int(result.get("released", 0))
    click.echo(f"released: {_plural(released)}")


@spool.command()
@connection_options(offline=False)
@click.option("--yes", is_flag=True, help=f"Do not ask, even for more than {ASK_ABOVE} ids.")
@select_option
@click.argument("ids", nargs=-1, metavar="ID...")
@click.pass_context
def remove(ctx: click.Context, /, *, yes: bool, select: str | None, ids: tuple[str, ...]) -> None:
    """Remove messages (the ids, or those --select picks), in any state: never tried
    again, kept until purged, and brought back with recover --from removed.

    A message being sent right now is marked removed; the attempt under way ends as it
    ends (mail a server took cannot be called back), and the message stays removed,
    unless that attempt delivered it to every recipient. Asks first for more than 3
    messages (--yes: do not ask; needed when the answer cannot come from a terminal).
    """
    _ids_or_select(ids, select)
    queued = ("send_now", "send_at", "sending", "frozen")
    wanted = _unique(ids) if select is None else _selected_ids(_online(ctx), select, queued)
    if len(wanted) > ASK_ABOVE and not yes:
        click.confirm(f"Remove {_plural(len(wanted))}?", abort=True, err=True)
    run(_for_ids(_online(ctx), "v1/spool/remove", wanted, {}, "removing"))
    click.echo(f"removed: {_plural(len(wanted))}")


@spool.command()
@connection_options(offline=False)
@click.option(
    "--from",
    "source",
    type=click.Choice(["removed", "quarantine"]),
    required=True,
    help="Where the messages are now.",
)
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def recover(ctx: click.Context, /, *, source: str, ids: tuple[str, ...]) -> None:
    """Bring removed or quarantined messages back, frozen (then use send)."""
    wanted = _unique(ids)
    run(_for_ids(_online(ctx), "v1/spool/recover", wanted, {"from": source}, "recovering"))
    click.echo(f"recovered (frozen): {_plural(len(wanted))}")


@spool.command()
@connection_options(offline=False)
@click.option("--reason", required=True, help="Why they are held (shown with the message).")
@select_option
@click.argument("ids", nargs=-1, metavar="ID...")
@click.pass_context
def quarantine(
    ctx: click.Context, /, *, reason: str, select: str | None, ids: tuple[str, ...]
) -> None:
    """Hold messages (the ids, or those --select picks) in quarantine, in any state:
    never sent unless brought back with recover --from quarantine. The reason, with
    each message's envelope sender and From fields, is shown by show and status --json."""
    _ids_or_select(ids, select)
    if not reason.strip():
        raise click.UsageError("--reason: say why the messages are held")
    queued = ("send_now", "send_at", "sending", "frozen", "removed")
    wanted = _unique(ids) if select is None else _selected_ids(_online(ctx), select, queued)
    run(_for_ids(_online(ctx), "v1/spool/quarantine", wanted, {"reason": reason}, "holding"))
    click.echo(f"quarantined: {_plural(len(wanted))}")


@spool.command()
@connection_options(offline=False)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def purge(ctx: click.Context, /, *, yes: bool, ids: tuple[str, ...]) -> None:
    """Delete removed or quarantined messages for good (no recover after this)."""
    wanted = _unique(ids)
    if not yes:
        click.confirm(f"Delete {_plural(len(wanted))} for good?", abort=True, err=True)
    run(_for_ids(_online(ctx), "v1/spool/purge", wanted, {}, "purging"))
    click.echo(f"purged: {_plural(len(wanted))}")


@spool.command()
@connection_options(offline=True)
@click.option("--raw", is_flag=True, help="Print the message itself, as received.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON of the control plane.")
@click.argument("message_id", metavar="ID")
@click.pass_context
def show(ctx: click.Context, /, *, raw: bool, as_json: bool, message_id: str) -> None:
    """Show messages: envelope, state, attempts and header fields.

    ID is a spool id; or the id of the SMTP transaction that brought the mail (the id of
    the "250 ... queued as ID" reply and of the Received: field), which names every spool
    message made from it, one per destination domain; or a Message-ID (with or without
    <>). Every message that ID names is shown. --json prints one object for a spool id,
    else a list.
    """
    from smtpx.cli import render  # noqa: PLC0415

    if raw and as_json:
        raise click.UsageError("give --raw or --json: not both")
    source = _source(ctx)
    if isinstance(source, Path):
        found = _offline_show(source, message_id)
    else:
        found = run(_ask(source, lambda client: _online_show(client, message_id, raw=raw)))
    if raw:
        if len(found) != 1:
            ids = ", ".join(str(shown["id"]) for shown, _ in found)
            raise Failure(
                f"{message_id} names {len(found)} messages ({ids}): give one of their ids",
                EXIT_USAGE,
            )
        click.echo(found[0][1], nl=False)
        return
    messages = [shown for shown, _ in found]
    if as_json:
        exact = [m for m in messages if m["id"] == message_id]
        click.echo(json.dumps(exact[0] if exact else messages, indent=2))
        return
    out = console(width=render.TABLE_WIDTH)
    for n, message in enumerate(messages):
        if n:
            out.print()
        render.render_message(message, out, time.time())


def _named(messages: list[dict[str, Any]], message_id: str) -> list[dict[str, Any]]:
    """The messages ``message_id`` names: the one whose spool id it is, else every match."""
    if not messages:
        raise Failure(f"{message_id}: not found", EXIT_FAILURE)
    return [m for m in messages if m["id"] == message_id] or messages


async def _online_show(
    client: ControlClient, message_id: str, *, raw: bool
) -> list[tuple[dict[str, Any], bytes]]:
    listed = await client.get_json("v1/spool/messages", {"id": message_id})
    found: list[tuple[dict[str, Any], bytes]] = []
    for message in _named(listed["messages"], message_id):
        path = f"v1/spool/messages/{quote(message['id'], safe='')}"
        if raw:
            found.append((message, await client.get_bytes(path, {"raw": "1"})))
        else:
            found.append((await client.get_json(path), b""))
    return found


def _offline_show(directory: Path, message_id: str) -> list[tuple[dict[str, Any], bytes]]:
    from smtpx.envelope import Envelope  # noqa: PLC0415
    from smtpx.protocol import dot_unstuff  # noqa: PLC0415
    from smtpx.spool.filter import MessageFilter, message_json  # noqa: PLC0415
    from smtpx.spool.journal import Journal  # noqa: PLC0415
    from smtpx.spool.shards import shard_dirs  # noqa: PLC0415
    from smtpx.spool.spool import Spool  # noqa: PLC0415

    if not (directory / "journal").is_dir():
        raise Failure(f"{directory} is not a spool directory (no journal/ in it)", EXIT_USAGE)
    chosen = MessageFilter(id=message_id)
    matches, journals = [], {}
    for part in shard_dirs(directory):  # (with workers: each one's shard too)
        for spooled in chosen.select(Spool.status_from_disk(part), time.time()):
            matches.append(spooled)
            journals[spooled.id] = Journal(part)
    by_id = {m.id: m for m in matches}
    found = []
    for message in _named([message_json(m) for m in matches], message_id):
        spooled = by_id[message["id"]]
        try:
            body, damage = journals[spooled.id].read_body_raw(spooled.location)
        except OSError as exc:
            raise Failure(f"{spooled.id}: cannot read its body: {exc}", EXIT_FAILURE) from None
        content = dot_unstuff(body)
        headers = Envelope.create(sender="<>", recipients=[], message=content).headers()
        shown = {**message, "headers": [list(h) for h in headers]}
        if damage is not None:
            shown["damaged"] = str(damage)
        found.append((shown, content))
    return found


@spool.command()
@connection_options(offline=False)
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until interrupted (Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print the NDJSON lines as they come.")
@click.option(
    "--timeout",
    type=DurationType(),
    default="5s",
    show_default=True,
    help="Without --follow: stop after this long (or at the first ping).",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(EVENT_KINDS),
    help="Only events of this kind (repeatable).",
)
@click.option(
    "--queue",
    type=click.Choice(("active", "frozen", "removed", "quarantine", "delivered")),
    help="Only events that leave the message in this queue.",
)
@click.option(
    "--existing",
    is_flag=True,
    help="First list the messages already there (of --queue), as 'listed' events.",
)
@click.pass_context
def events(
    ctx: click.Context,
    /,
    *,
    follow: bool,
    as_json: bool,
    timeout: float,
    kinds: tuple[str, ...],
    queue: str | None,
    existing: bool,
) -> None:
    """Print spool events as they happen (spooled, delivered, delayed, frozen...).

    Without --follow: until the daemon's next ping or --timeout, whichever comes first.
    To follow a queue: smtpx spool events --follow --queue frozen --existing.
    """
    query = {"kind": ",".join(kinds)} if kinds else {}
    query |= {"queue": queue} if queue else {}
    query |= {"existing": "1"} if existing else {}
    target = _online(ctx)
    try:
        run(_events(target, follow=follow, as_json=as_json, timeout=timeout, query=query))
    except KeyboardInterrupt:
        return


async def _events(
    target: Target, *, follow: bool, as_json: bool, timeout: float, query: dict[str, str]
) -> None:
    from smtpx.cli import render  # noqa: PLC0415
    from smtpx.cli.client import watch  # noqa: PLC0415

    out = console()
    # Without --follow, ask for a ping soon: the first one ends the listing.
    if not follow:
        query = {**query, "ping": f"{max(0.1, timeout / 2):g}"}
    path = "v1/spool/events" + (f"?{urlencode(query)}" if query else "")
    async for text, event in watch(
        target, path, follow=follow, timeout=timeout, what="spool events"
    ):
        if as_json:
            click.echo(text)
        elif event.get("kind") != "ping":
            out.print(render.render_event(event), soft_wrap=True)


@spool.command()
@spool_dir_options
@click.option(
    "--verify-bodies/--no-verify-bodies",
    default=True,
    show_default=True,
    help="Read every body and check its checksum (--no-verify-bodies: metadata only).",
)
@click.option(
    "--max-frozen-age",
    type=DurationType(),
    help="Report messages frozen for longer than this (like 7d).",
)
@click.option(
    "--max-due-age",
    type=DurationType(),
    help="Report messages due for longer than this without an attempt (like 1h).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@click.option(
    "--watch",
    "every",
    type=DurationType(),
    help="Check again every DURATION and print when a problem starts and ends.",
)
@click.option(
    "--alert-after",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --watch: checks in a row that must find a problem before it is reported.",
)
@click.option(
    "--cycles", type=click.IntRange(min=1), help="With --watch: stop after this many checks."
)
@click.pass_context
def fsck(
    ctx: click.Context,
    /,
    *,
    verify_bodies: bool,
    max_frozen_age: float | None,
    max_due_age: float | None,
    as_json: bool,
    every: float | None,
    alert_after: int,
    cycles: int | None,
) -> None:
    """Check the spool directory (read-only; safe while smtpx serve runs).

    Reports damaged records, missing or truncated journal segments, messages whose records
    were lost, files kept in corrupt/, bodies that fail their checksum, bodies missing from
    their segment, stray files, and messages stuck too long. Exit status 0: clean; 1:
    problems found.

    With --watch it keeps checking, and prints a line (a JSON object with --json) when
    a problem has been found by --alert-after checks in a row ("start") and when it is
    gone ("end"). It runs until interrupted, or for --cycles checks: then the exit status
    is 1 if problems are still reported.
    """
    from smtpx.spool.fsck import check_all  # noqa: PLC0415

    directory = _spool_dir(ctx.meta.get(_META, {}))
    if every is not None:
        from smtpx.cli.fsck_watch import watch  # noqa: PLC0415

        if not (directory / "journal").is_dir():
            raise Failure(f"{directory} is not a spool directory (no journal/ in it)", EXIT_USAGE)
        alerting = watch(
            directory,
            every=every,
            alert_after=alert_after,
            cycles=cycles,
            as_json=as_json,
            verify_bodies=verify_bodies,
            max_due_age=max_due_age,
            max_frozen_age=max_frozen_age,
        )
        ctx.exit(EXIT_FAILURE if alerting else 0)
    problems = check_all(
        directory,
        verify_bodies=verify_bodies,
        max_due_age=max_due_age,
        max_frozen_age=max_frozen_age,
    )
    if any(p.kind == "not-a-spool" for p in problems):
        raise Failure(f"{directory} is not a spool directory (no journal/ in it)", EXIT_USAGE)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "spool": str(directory),
                    "problems": [
                        {"kind": p.kind, "where": p.where, "description": p.description}
                        for p in problems
                    ],
                },
                indent=2,
            )
        )
    else:
        for problem in problems:
            click.echo(str(problem))
        n = len(problems)
        summary = f"{directory}: " + (
            "clean" if not n else f"{n} problem{'' if n == 1 else 's'} found"
        )
        click.secho(summary, fg="green" if not n else "red")
    if problems:
        ctx.exit(EXIT_FAILURE)


@spool.command(name="migrate")
@click.option(
    "--to",
    "target",
    type=click.Choice(["postgresql", "journal"]),
    required=True,
    help="Where the queue goes: the PostgreSQL queue of [spool.postgresql], or the "
    "journal in spool.dir. It comes from the other one.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    envvar="SMTPX_CONFIG",
    required=True,
    help="The configuration naming both (spool.dir and [spool.postgresql]).",
)
def migrate_command(target: str, config_file: str) -> None:
    """Move the queue from the journal to PostgreSQL, or back. Stop smtpx serve first.

    Every message is copied under its own id with its state; then the copies leave the
    source. Safe to run again after an interruption: what the target has is skipped. A
    message whose body is damaged stays where it was, and is listed (exit 1).
    """
    from smtpx.spool.migrate import migrate_queue  # noqa: PLC0415

    config = load_config(config_file)
    if config.spool.postgresql is None:
        raise Failure("the configuration has no [spool.postgresql] (dsn)", EXIT_USAGE)
    report = asyncio.run(_migrate(config, target, migrate_queue))
    for message_id, problem in report.damaged:
        click.echo(f"left behind, damaged: {message_id}: {problem}", err=True)
    click.echo(
        f"moved {len(report.copied)} messages to the {target} store"
        + (f" ({len(report.already_there)} were there already)" if report.already_there else "")
        + f"; {report.purged} left the source"
    )
    if report.damaged:
        sys.exit(EXIT_FAILURE)


async def _migrate(config: Any, target: str, migrate: Any) -> Any:
    from smtpx.spool.journal import SpoolLocked  # noqa: PLC0415
    from smtpx.spool.journal_store import JournalStore  # noqa: PLC0415
    from smtpx.spool.pg.store import PgStore  # noqa: PLC0415 - needs asyncpg
    from smtpx.spool.types import SpoolConfig  # noqa: PLC0415

    settings = config.spool
    stats: dict[str, int] = {}
    journal = JournalStore(SpoolConfig(directory=settings.dir, fsync=settings.fsync), stats)
    database = PgStore(
        SpoolConfig(directory=settings.dir, postgresql=settings.postgresql),
        stats,
        time.time,
    )
    try:
        await journal.open()
    except SpoolLocked as exc:  # smtpx serve still runs
        raise Failure(str(exc), EXIT_FAILURE) from None
    try:
        await database.open()
        if not database.ready:
            raise Failure("the spool database does not answer", EXIT_FAILURE)
        source, destination = (journal, database) if target == "postgresql" else (database, journal)
        return await migrate(source, destination)
    finally:
        await database.close()
        await journal.close()
