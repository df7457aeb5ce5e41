"""``smtpx users ...``: the submission users file (``auth.users_file``, read by
:mod:`smtpx.mta.users`).

The commands edit the file line by line: comments, blank lines and the other users' lines
stay as they are, and the file keeps its mode and (when the permissions allow) its owner.
Every write is atomic (a temporary file in the same directory, flushed to disk, renamed
over the old one). Hashing and parsing are those of :mod:`smtpx.mta.users`; an existing
file is checked with :meth:`~smtpx.mta.users.Users.load` before it is changed, so a bad
line is reported (``FILE:3: ...``, exit status 2) rather than carried along.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from smtpx.cli.common import EXIT_FAILURE, EXIT_USAGE, Failure, load_config
from smtpx.errors import ConfigError
from smtpx.mta.users import Users, _fsync_directory, hash_password
from smtpx.mta.users import _check_name as _valid_name

# _check_name (the name rule) and _fsync_directory are private in smtpx.mta.users: reused
# here rather than copied.

__all__ = ["users"]

F = TypeVar("F", bound=Callable[..., Any])

RESTART_HINT = "restart smtpx serve for the change to take effect"


@click.group()
def users() -> None:
    """The submission users file (auth.users_file): add, remove and list users.

    \b
    smtpx users add NAME --config smtpx.toml        prompts for the password (twice)
    smtpx users add NAME --file FILE --password-stdin --update
    smtpx users remove NAME --config smtpx.toml
    smtpx users list --config smtpx.toml

    smtpx serve reads the users file only when it starts: after a change, restart it
    (systemctl restart smtpx). smtpx daemon reload-tls does not read the users file again,
    and SIGHUP is not a reload (it kills smtpx serve).
    """


# -- which file --------------------------------------------------------------------------


def file_options(function: F) -> F:
    """``--file`` and ``--config`` (whose ``auth.users_file`` is the default file)."""
    function = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, exists=True),
        envvar="SMTPX_CONFIG",
        help="The smtpx serve configuration: its auth.users_file. Env: SMTPX_CONFIG.",
    )(function)
    return click.option(
        "--file",
        "users_file",
        type=click.Path(dir_okay=False),
        help="The users file (default: auth.users_file of --config).",
    )(function)


def _users_file(users_file: str | None, config_file: str | None) -> Path:
    if users_file:
        return Path(users_file)
    if not config_file:
        raise Failure("which users file? Give --file FILE or --config smtpx.toml", EXIT_USAGE)
    config = load_config(config_file)
    if config.auth.users_file is None:
        raise Failure(f"{config.source}: [auth] users_file is not set", EXIT_USAGE)
    return config.auth.users_file


def _check_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return _valid_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


# -- reading and writing -----------------------------------------------------------------


def _read(path: Path, *, missing_ok: bool = False) -> list[str] | None:
    """The file's lines (with their line endings), checked by the users module; None when
    the file does not exist and ``missing_ok``. A bad file exits with 2."""
    if missing_ok and not path.exists():
        return None
    try:
        Users.load(path)
    except ConfigError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    try:
        with open(path, encoding="utf-8", newline="") as file:
            return file.read().splitlines(keepends=True)
    except (OSError, UnicodeError) as exc:  # changed since Users.load read it
        raise Failure(f"{path}: cannot read the users file: {exc}", EXIT_USAGE) from None


def _find(lines: list[str], name: str) -> int | None:
    """The index of ``name``'s line, read as :meth:`Users.load` does (a file it accepted
    holds each name once)."""
    for index, raw in enumerate(lines):
        line = raw.strip()
        if line and not line.startswith("#") and line.partition(":")[0] == name:
            return index
    return None


def _ending(line: str) -> str:
    return line[len(line.splitlines()[0]) :] if line.splitlines() else line


def _write(path: Path, lines: list[str]) -> None:
    """Replace ``path`` with ``lines`` atomically, keeping its mode and owner (a new file
    gets mode 0600). Failing to write exits with 1."""
    # Through a symlink, replace the file it points to, not the link.
    target = Path(os.path.realpath(path))
    try:
        existing: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise Failure(f"{path}: {exc.strerror}", EXIT_FAILURE) from None
    try:
        fd, temp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise Failure(f"cannot write {path}: {exc.strerror or exc}", EXIT_FAILURE) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            if existing is None:
                os.fchmod(fd, 0o600)  # mkstemp already does; say it
            else:
                _keep_owner(fd, existing, path)
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        if isinstance(exc, OSError):
            raise Failure(f"cannot write {path}: {exc.strerror or exc}", EXIT_FAILURE) from None
        raise
    _fsync_directory(target.parent)


def _keep_owner(fd: int, existing: os.stat_result, path: Path) -> None:
    # Root editing a file that smtpx serve reads as its own user must not take it away.
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) == (existing.st_uid, existing.st_gid):
        return
    try:
        os.fchown(fd, existing.st_uid, existing.st_gid)
    except OSError as exc:
        click.echo(
            f"{click.get_current_context().command_path}: warning: {path} is now owned by "
            f"uid {mine.st_uid} gid {mine.st_gid}, not {existing.st_uid}:{existing.st_gid} "
            f"({exc.strerror}); smtpx serve may not be able to read it",
            err=True,
        )


def _password(name: str, from_stdin: bool) -> str:
    if from_stdin:
        raw = sys.stdin.buffer.readline()
        try:
            password = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Failure("the password on stdin is not UTF-8", EXIT_USAGE) from None
        password = password.removesuffix("\n").removesuffix("\r")
    else:
        password = str(
            click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
        )
    if not password:
        raise Failure("refusing an empty password", EXIT_USAGE)
    return password


# -- the commands ------------------------------------------------------------------------


@users.command()
@click.argument("name", callback=_check_name)
@file_options
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of prompting.",
)
@click.option(
    "--update", is_flag=True, help="Replace the password of NAME if it exists (else add NAME)."
)
def add(
    name: str,
    users_file: str | None,
    config_file: str | None,
    password_stdin: bool,
    update: bool,
) -> None:
    """Add user NAME (or, with --update, change their password).

    The file is created with mode 0600 if it does not exist. Its other lines are kept.
    Exit status 1 when NAME exists and --update is not given.
    """
    path = _users_file(users_file, config_file)
    lines = _read(path, missing_ok=True)
    index = None if lines is None else _find(lines, name)
    if index is not None and not update:
        raise Failure(f"user {name!r} exists in {path} (give --update to change the password)")
    line = f"{name}:{hash_password(_password(name, password_stdin))}"
    if lines is None:
        lines = Users().dumps().splitlines(keepends=True)  # the module's header comment
    if index is None:
        if lines and not _ending(lines[-1]):
            lines[-1] += "\n"
        lines.append(line + "\n")
    else:
        lines[index] = line + _ending(lines[index])
    _write(path, lines)
    done = "changed the password of" if index is not None else "added"
    click.echo(f"{done} {name} in {path}; {RESTART_HINT}")


@users.command()
@click.argument("name", callback=_check_name)
@file_options
def remove(name: str, users_file: str | None, config_file: str | None) -> None:
    """Remove user NAME (exit status 1 when there is no such user)."""
    path = _users_file(users_file, config_file)
    lines = _read(path)
    assert lines is not None
    index = _find(lines, name)
    if index is None:
        raise Failure(f"no user {name!r} in {path}")
    del lines[index]
    _write(path, lines)
    click.echo(f"removed {name} from {path}; {RESTART_HINT}")


@users.command("list")
@file_options
def list_(users_file: str | None, config_file: str | None) -> None:
    """Print the user names, one per line, in file order."""
    path = _users_file(users_file, config_file)
    try:
        names = list(Users.load(path))
    except ConfigError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    for name in names:
        click.echo(name)
