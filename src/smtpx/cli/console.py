"""``smtpx console``: the address of the web console (:mod:`smtpx.mta.console`) of the
running ``smtpx serve``, with its token in the fragment (which a browser never sends)."""

from __future__ import annotations

import webbrowser
from urllib.parse import quote

import click

from smtpx.cli import locate
from smtpx.cli.common import EXIT_USAGE, Failure, read_secret

__all__ = ["console_url", "web_console"]


def console_url(config_file: str | None) -> str:
    """``http://HOST:PORT/console/#token=...`` from the configuration in effect (its
    ``[control] http`` and ``token_file``)."""
    config = locate.mta_config(config_file)
    address, token_file = config.control.http, config.control.token_file
    if address is None or address.port == 0 or token_file is None:
        raise Failure(
            f"{config.source}: the console needs [control] http (a loopback address with a "
            "port) and token_file; or forward the control socket to a port of your own "
            "and open /console/ there",
            EXIT_USAGE,
        )
    token = read_secret(token_file, "token")
    return f"http://{address}/console/#token={quote(token, safe='')}"


@click.command("console")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    envvar="SMTPX_CONFIG",
    help="The smtpx serve configuration (default: the running one's). Env: SMTPX_CONFIG.",
)
@click.option("--open", "open_it", is_flag=True, help="Open it in a web browser as well.")
def web_console(config_file: str | None, open_it: bool) -> None:
    """Print the web console's address, the token included: whoever has it can operate
    the queue (keep it out of shared logs and screens)."""
    url = console_url(config_file)
    click.echo(url)
    if open_it and not webbrowser.open(url):
        raise Failure("no web browser could be started: open the address above")
