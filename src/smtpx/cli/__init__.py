"""The ``smtpx`` command."""

from __future__ import annotations

import sys

import click

from smtpx._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smtpx")
def main() -> None:
    """smtpx: an asyncio SMTP toolkit and mail transfer agent."""


@main.command()
@click.option("--config", type=click.Path(dir_okay=False), help="TOML configuration file.")
def serve(config: str | None) -> None:
    """Run the relay MTA (listens on 127.0.0.1:2525 by default)."""
    click.echo(
        "smtpx serve: the relay MTA is not built yet. The protocol core is in place; the\n"
        "server, spool and relay arrive with issues #4 and #5. Run `make test` to see what works.",
        err=True,
    )
    sys.exit(1)
