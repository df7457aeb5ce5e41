"""The ``smtpx`` command."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from smtpx._version import __version__
from smtpx.cli import config as _config
from smtpx.cli import console as _console
from smtpx.cli import daemon as _daemon
from smtpx.cli import db as _db
from smtpx.cli import dkim as _dkim
from smtpx.cli import log as _log
from smtpx.cli import route as _route
from smtpx.cli import send as _send
from smtpx.cli import sendmail as _sendmail
from smtpx.cli import spool as _spool
from smtpx.cli import tools as _tools
from smtpx.cli import users as _users
from smtpx.cli.common import Failure
from smtpx.errors import ConfigError, SMTPXError

if TYPE_CHECKING:
    from smtpx.mta.app import Mta

__all__ = ["main"]


class _Smtpx(click.Group):
    """The ``smtpx`` group, which is ``sendmail`` when run under that name (a symlink,
    as /usr/sbin/sendmail), and ``sendmail -bp`` as ``mailq``."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        name = os.path.basename(prog_name or sys.argv[0])
        if name not in ("sendmail", "mailq"):
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        if name == "mailq":
            argv = ["-bp", *argv]
        return _sendmail.sendmail.main(argv, name, complete_var, standalone_mode, **extra)


@click.group(cls=_Smtpx, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smtpx")
def main() -> None:
    """smtpx: an asyncio SMTP toolkit and mail transfer agent.

    \b
    smtpx serve --config smtpx.toml          run the MTA
    smtpx spool status                       what is queued (table, exim, json, ids)
    smtpx spool shape                        the queue by domain and age (qshape)
    smtpx spool freeze|send|remove|recover   operate the queue
    smtpx spool events --follow              watch deliveries as they happen
    smtpx daemon status|cache|errors|reload-tls   the running MTA itself
    smtpx config show                        the configuration, defaults included
    smtpx console [--open]                   the web console's address, with its token
    smtpx users add|remove|list              submission users (auth.users_file)
    smtpx dkim keygen DOMAIN SELECTOR        a DKIM key and its DNS record
    smtpx db check|migrate                   the shared PostgreSQL queue
    smtpx send / smtpx sendmail -t           send mail from the command line
    smtpx select EXPR FILE                   does an envelope selector pick a message
    smtpx tools transform --config F FILE    normalise mail to compare two MTAs
    smtpx log sessions|select LOG            the JSON mail log read back

    Run as sendmail or mailq (a symlink to smtpx), smtpx is sendmail(8) and mailq.

    The spool commands talk to smtpx serve through its control socket: that of
    --config (or SMTPX_CONFIG), else that of the smtpx serve running (found from any
    directory), else ./var/control.sock.

    \b
    Exit status:
      0  success
      1  the operation failed, or problems were found (fsck, bsmtp refusals)
      2  usage or configuration error (bad option, bad config file, refused token)
      3  cannot reach smtpx serve (control socket or URL) or the SMTP server

    \b
    Shell completion (bash; zsh and fish likewise with zsh_source, fish_source):
      eval "$(_SMTPX_COMPLETE=bash_source smtpx)"
    """


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    help="TOML configuration (default: the embedded one: 127.0.0.1:2525, ./var/spool, MX).",
)
@click.option(
    "--spool-dir", type=click.Path(file_okay=False), help="Spool directory (overrides the config)."
)
@click.option(
    "--listen",
    multiple=True,
    metavar="HOST:PORT",
    help="Listen here instead of the configured [server] listen addresses (repeatable).",
)
@click.option(
    "--log-level",
    # smtpx.mta.config.LOG_LEVELS, without importing it (--help stays fast)
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
    help="Log level (overrides the config's log.level).",
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    show_default=True,
    help="Event loop: uvloop when installed (the uvloop extra), else asyncio.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Check the configuration, the files it names (certificate and key, users, "
    "token) and exit: 0 when all is well, 2 otherwise.",
)
# Set by the supervisor of [server] workers = N on the workers it starts (smtpx.cli.workers).
@click.option("--worker", hidden=True)
@click.option("--ports", hidden=True)
@click.option("--fds", hidden=True)
@click.option("--balance", hidden=True)
def serve(
    *,
    config_file: str | None,
    spool_dir: str | None,
    listen: tuple[str, ...],
    log_level: str | None,
    loop: str,
    check: bool,
    worker: str | None,
    ports: str | None,
    fds: str | None,
    balance: str | None,
) -> None:
    """Run the relay MTA until SIGTERM or SIGINT; SIGHUP reloads the configuration, the
    users file and the TLS files (what needs a restart is refused in the log). With
    [server] workers = N (N > 1), this process supervises N that accept mail."""
    import ssl  # noqa: PLC0415

    from smtpx.cli import workers as _workers  # noqa: PLC0415
    from smtpx.maillog import configure_logging  # noqa: PLC0415
    from smtpx.mta.app import Mta  # noqa: PLC0415 - keep --help fast
    from smtpx.mta.config import ListenAddress, MtaConfig  # noqa: PLC0415

    def load() -> MtaConfig:
        """The file (or the defaults) with this command line's overrides: at start, and
        again at every reload."""
        config = MtaConfig.load(config_file) if config_file else MtaConfig.default()
        if spool_dir is not None:
            spool = dataclasses.replace(config.spool, dir=Path(spool_dir).absolute())
            config = dataclasses.replace(config, spool=spool)
        if listen:
            addresses = tuple(ListenAddress.parse(text, default_port=25) for text in listen)
            config = dataclasses.replace(
                config, server=dataclasses.replace(config.server, listen=addresses)
            )
        if log_level is not None:
            config = dataclasses.replace(
                config, log=dataclasses.replace(config.log, level=log_level.lower())
            )
        return config if spec is None else spec.apply(config)

    spec = None if worker is None else _workers.WorkerSpec(worker, ports, fds, balance)

    try:
        config = load()
        config.check_files()
        # Building the MTA reads the users file and loads the certificate: a bad one is
        # a configuration error, reported before anything listens.
        set_logging = configure_logging if spec is None else spec.logging(configure_logging)
        mta = Mta(config, reload_config=load, set_logging=set_logging)
    except (ConfigError, ValueError, OSError, ssl.SSLError) as exc:
        click.echo(f"smtpx serve: configuration error: {exc}", err=True)
        sys.exit(2)
    if check:
        if config.spool.backend.value == "postgresql" and config.spool.postgresql is not None:
            try:
                click.echo(f"smtpx serve: {_db.check_database(config.spool.postgresql.dsn)}")
            except Failure as failure:
                click.echo(f"smtpx serve: {failure.message}", err=True)
                sys.exit(2)
        click.echo(f"smtpx serve: configuration ok ({config_file or 'the embedded default'})")
        return
    set_logging(config.log.level, config.log.format)
    if loop == "uvloop" or (loop == "auto" and _have_uvloop()):
        import uvloop  # noqa: PLC0415

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    source = Path(config_file).absolute() if config_file else None
    try:
        if spec is not None:
            asyncio.run(_workers.run_worker(mta, spec))
        elif config.server.workers > 1:
            command = _workers.worker_command(config_file, spool_dir, listen, log_level, loop)
            if not asyncio.run(_workers.run_supervisor(config, source, command)):
                sys.exit(1)
        else:
            asyncio.run(_serve(mta, source))
    except SMTPXError as exc:
        click.echo(f"smtpx serve: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"smtpx serve: {exc}", err=True)
        sys.exit(1)


def _have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


async def _serve(mta: Mta, config_file: Path | None) -> None:
    from smtpx.cli import locate  # noqa: PLC0415
    from smtpx.mta.workers import adopt_shards  # noqa: PLC0415

    config = mta.config
    await adopt_shards(config, 1)  # the mail of workers there were before, if any
    # Signals are handled before the runtime record says smtpx runs: a SIGHUP sent as
    # soon as it appears must reload, not kill.
    async with mta:
        with mta.signals():
            ports = mta.server.ports
            record = locate.write_record(
                os.getpid(),
                config_file,
                config.control.socket,
                [
                    (listener.name.partition(" ")[0], _bound(listener.host, port))
                    for listener, port in zip(mta.server.config.listeners, ports, strict=True)
                ],
            )
            try:
                await _announce(mta, record)
            finally:
                locate.remove_record(record)
        click.echo("smtpx: shutting down (finishing sessions and deliveries)", err=True)


async def _announce(mta: Mta, record: Path | None) -> None:
    """Say where the MTA listens, then wait for SIGTERM or SIGINT."""
    config = mta.config
    ports = mta.server.ports
    where = ", ".join(
        f"{listener.name or listener} (port {port})"
        for listener, port in zip(mta.server.config.listeners, ports, strict=True)
    )
    click.echo(f"smtpx {__version__}: listening on {where}", err=True)
    click.echo(
        f"  spool {config.spool.dir} ({len(mta.spool.messages)} queued); "
        f"local domains: {', '.join(config.relay.local_domains)} -> {config.local.maildir}",
        err=True,
    )
    found = f"found from any directory ({record})" if record else "no runtime record written"
    click.echo(f"  control socket {config.control.socket}; {found}", err=True)
    if config.server.listen:
        click.echo("  try: echo hi | smtpx send --to postmaster@localhost --subject hi", err=True)
    await mta.wait_for_signal()


def _bound(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# The subcommands live in their modules (smtpx.cli.spool, .send, .tools).
main.add_command(_spool.spool)
main.add_command(_daemon.daemon)
main.add_command(_config.config)
main.add_command(_users.users)
main.add_command(_dkim.dkim)
main.add_command(_db.db)
main.add_command(_route.route)
main.add_command(_send.send)
main.add_command(_sendmail.sendmail)
main.add_command(_tools.bsmtp)
main.add_command(_tools.select)
main.add_command(_tools.tools)
main.add_command(_log.log)
main.add_command(_console.web_console)
main.add_command(_tools.stress_test)
