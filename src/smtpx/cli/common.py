"""What the ``smtpx`` commands share: exit codes, errors, parameter types, consoles.

This module stays light (click and the standard library) so that ``smtpx --help`` and
shell completion start fast; commands import aiohttp, rich and the MTA when they run.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

    from smtpx.envelope import HostPort
    from smtpx.mta.config import MtaConfig

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "DurationType",
    "Failure",
    "HostPortType",
    "RetryIntervalType",
    "console",
    "load_config",
    "read_secret",
    "run",
]

EXIT_OK = 0
EXIT_FAILURE = 1  # the operation failed, or problems were found (fsck, bsmtp refusals)
EXIT_USAGE = 2  # bad usage or configuration (click's own usage errors use 2 as well)
EXIT_UNREACHABLE = 3  # the daemon (control socket or URL) or the SMTP server is unreachable

T = TypeVar("T")


class Failure(click.ClickException):
    """An expected error: printed as ``smtpx <command>: <message>`` (no traceback), and
    the process exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = exit_code
        context = click.get_current_context(silent=True)
        self.prefix = context.command_path if context is not None else "smtpx"

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code

    def show(self, file: IO[Any] | None = None) -> None:
        click.secho(f"{self.prefix}: {self.format_message()}", file=file or sys.stderr, fg="red")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh event loop (each command is one ``asyncio.run``)."""
    return asyncio.run(coroutine)


class DurationType(click.ParamType[float]):
    """A duration like ``30s``, ``10m``, ``1h30m``, ``7d`` (or bare seconds), as seconds:
    what :func:`smtpx.units.short_duration` prints reads back."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float | int):
            return float(value)
        from smtpx.units import parse_duration  # noqa: PLC0415

        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class RetryIntervalType(click.ParamType[str]):
    """A retry interval, ``5m`` or ``5m~30s`` (kept as its text)."""

    name = "interval"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from smtpx.envelope import RetryInterval  # noqa: PLC0415 - keep --help fast
        from smtpx.errors import ParseError  # noqa: PLC0415

        try:
            return str(RetryInterval.parse(str(value)))
        except ParseError:
            self.fail(f"not a retry interval (like 5m or 5m~30s): {value!r}", param, ctx)


class HostPortType(click.ParamType["HostPort"]):
    """``host``, ``host:port`` or ``[ipv6]:port`` (port 25 when left out)."""

    name = "host:port"

    def __init__(self, default_port: int = 25) -> None:
        self.default_port = default_port

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from smtpx.envelope import HostPort  # noqa: PLC0415 - keep --help fast
        from smtpx.errors import ParseError  # noqa: PLC0415

        if isinstance(value, HostPort):
            return value
        try:
            return HostPort.parse(str(value), default_port=self.default_port)
        except (ParseError, ValueError) as exc:
            self.fail(f"not a host:port: {value!r} ({exc})", param, ctx)


def host_port(value: HostPort) -> tuple[str, int]:
    return value.host, value.port


def load_config(path: str | Path) -> MtaConfig:
    """The ``smtpx serve`` configuration at ``path``; a bad file exits with 2."""
    from smtpx.errors import ConfigError  # noqa: PLC0415 - keep --help fast
    from smtpx.mta.config import MtaConfig  # noqa: PLC0415

    try:
        return MtaConfig.load(path)
    except ConfigError as exc:
        raise Failure(f"configuration error: {exc}", EXIT_USAGE) from None


def read_secret(path: str | Path, what: str) -> str:
    """The first line of a password or token file; a missing or empty one exits with 2."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Failure(f"cannot read the {what} file {str(path)!r}: {detail}", EXIT_USAGE) from None
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise Failure(f"the {what} file {str(path)!r} is empty", EXIT_USAGE)
    return secret


def console(*, stderr: bool = False, width: int | None = None) -> Console:
    """A rich console on the current stdout (or stderr). Output that is not a terminal
    gets no colours and, for tables, ``width`` columns instead of 80."""
    from rich.console import Console  # noqa: PLC0415 - keep --help fast

    stream = sys.stderr if stderr else sys.stdout
    probe = Console(file=stream)
    if probe.is_terminal or width is None:
        return probe
    return Console(file=stream, width=width)
