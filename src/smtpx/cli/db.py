"""``smtpx db ...``: the shared PostgreSQL queue of ``[spool] backend = "postgresql"``.

``smtpx db migrate`` applies the schema migrations the database lacks (``smtpx serve``
does it at start too: this is for doing it on purpose, before a rolling upgrade);
``smtpx db check`` says whether the database answers and at which schema version.
"""

from __future__ import annotations

import asyncio

import click

from smtpx.cli.common import EXIT_FAILURE, EXIT_USAGE, Failure

__all__ = ["check_database", "db"]


@click.group()
def db() -> None:
    """The shared PostgreSQL queue ([spool] backend = "postgresql").

    \b
    smtpx db check   --config /etc/smtpx/smtpx.toml     does it answer, at which version
    smtpx db migrate --config /etc/smtpx/smtpx.toml     apply the missing migrations
    """


def _dsn(config_file: str | None) -> str:
    from smtpx.mta.config import MtaConfig  # noqa: PLC0415 - keep --help fast

    config = MtaConfig.load(config_file) if config_file else MtaConfig.default()
    settings = config.spool.postgresql
    if settings is None:
        raise Failure("the configuration has no [spool.postgresql] (dsn)", EXIT_USAGE)
    return settings.dsn


async def _migrate(dsn: str, *, apply: bool) -> tuple[list[int], int]:
    from smtpx.spool.pg.queue import connect_pool  # noqa: PLC0415 - needs asyncpg
    from smtpx.spool.pg.schema import migrate  # noqa: PLC0415

    pool = await connect_pool(dsn, size=1, timeout=10)
    try:
        applied = await migrate(pool) if apply else []
        async with pool.acquire() as conn:
            exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
            version = (
                await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
                if exists
                else 0
            )
        return applied, int(version)
    finally:
        await pool.close()


def check_database(dsn: str) -> str:
    """A line saying the database answers and its schema version; :class:`Failure`
    (exit 1) when it does not answer."""
    try:
        _, version = asyncio.run(_migrate(dsn, apply=False))
    except Exception as exc:  # asyncpg's and the OS's errors alike: say what it was
        raise Failure(f"the spool database does not answer: {exc}", EXIT_FAILURE) from None
    state = f"schema version {version}" if version else "no schema yet (migrated at start)"
    return f"the spool database answers: {state}"


@db.command()
@click.option("--config", "config_file", envvar="SMTPX_CONFIG", help="The configuration file.")
def check(config_file: str | None) -> None:
    """Say whether the database answers, and its schema version (exit 1 if not)."""
    click.echo(check_database(_dsn(config_file)))


@db.command(name="migrate")
@click.option("--config", "config_file", envvar="SMTPX_CONFIG", help="The configuration file.")
def migrate_command(config_file: str | None) -> None:
    """Apply the schema migrations the database lacks (safe to run again)."""
    try:
        applied, version = asyncio.run(_migrate(_dsn(config_file), apply=True))
    except Failure:
        raise
    except Exception as exc:
        raise Failure(f"migration failed: {exc}", EXIT_FAILURE) from None
    if applied:
        click.echo(f"applied migrations {', '.join(map(str, applied))}: now at version {version}")
    else:
        click.echo(f"nothing to do: the schema is at version {version}")
