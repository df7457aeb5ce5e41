"""``smtpx config show``: the effective configuration of ``smtpx serve``, as TOML."""

from __future__ import annotations

import click

from smtpx.cli.common import load_config

__all__ = ["config"]


@click.group()
def config() -> None:
    """The configuration smtpx serve runs with."""


@config.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    envvar="SMTPX_CONFIG",
    help="The smtpx serve configuration (default: the embedded one). Env: SMTPX_CONFIG.",
)
@click.option(
    "--secrets", is_flag=True, help='Print passwords as they are (by default: "(hidden)").'
)
def show(*, config_file: str | None, secrets: bool) -> None:
    """Print the effective configuration as TOML: every key of every section, defaults
    included, paths absolute, sizes and durations as written (35M, 1h30m).

    Keys without a value are comments (# cert_file = (not set)). With --secrets the
    output loads back to the same configuration: smtpx config show --secrets > full.toml.
    """
    from smtpx.mta.config import MtaConfig  # noqa: PLC0415 - keep --help fast
    from smtpx.mta.config_toml import to_toml  # noqa: PLC0415

    loaded = load_config(config_file) if config_file else MtaConfig.default()
    where = str(loaded.source) if loaded.source else "the embedded defaults"
    click.echo(f"# smtpx config show: {where}, with every default\n")
    click.echo(to_toml(loaded, secrets=secrets), nl=False)
