"""Finding the running ``smtpx serve`` from any directory: its control socket (for
``smtpx spool`` and ``smtpx daemon``), its SMTP listener (for ``smtpx send`` and
``sendmail``) and its configuration (for ``sendmail -bv``).

While it runs, ``smtpx serve`` keeps a record of itself, ``serve-PID.json``, in a runtime
directory: ``$SMTPX_RUNTIME_DIR`` when set, else ``$XDG_RUNTIME_DIR/smtpx``, else
``/run/smtpx`` (for root, or when it exists and is writable: systemd's
``RuntimeDirectory``), else ``$TMPDIR/smtpx-UID`` (mode 0700, like tmux's). The CLI looks
in the same places, and takes these, the first that applies:

1. what the command line says (``--socket``, ``--server``; their environment variables);
2. the configuration named by ``--config`` or ``SMTPX_CONFIG``;
3. the record of the one ``smtpx serve`` running (several: the command asks which);
4. ``/etc/smtpx/smtpx.toml`` (where ``contrib/`` installs it), when it exists;
5. the embedded default (``./var/control.sock``, ``127.0.0.1:2525``), as ``smtpx serve``
   without a file would use it.

Only ``[server] listen``, ``[control] socket`` and ``[relay] local_domains`` are read from a
configuration file for this: password files it names need not be readable by whoever runs
``sendmail``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from smtpx.cli.common import EXIT_USAGE, Failure

if TYPE_CHECKING:
    from smtpx.envelope import HostPort
    from smtpx.mta.config import ListenAddress, MtaConfig

__all__ = [
    "STANDARD_CONFIG",
    "Record",
    "control_socket",
    "local_domain",
    "mta_config",
    "records",
    "remove_record",
    "smtp_server",
    "write_record",
]

STANDARD_CONFIG = Path("/etc/smtpx/smtpx.toml")
SYSTEM_RUNTIME = Path("/run/smtpx")
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


# -- the runtime directory ---------------------------------------------------------------


def _private_tmp() -> Path:
    return Path(tempfile.gettempdir()) / f"smtpx-{os.getuid()}"


def _candidates() -> list[Path]:
    explicit = os.environ.get("SMTPX_RUNTIME_DIR")
    if explicit:
        return [Path(explicit)]
    found = []
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        found.append(Path(xdg) / "smtpx")
    return [*found, SYSTEM_RUNTIME, _private_tmp()]


def _usable(directory: Path) -> bool:
    """Safe to trust: anything but the shared temporary directory's, which must be ours
    and private (another user could have made it first)."""
    if directory != _private_tmp() or "SMTPX_RUNTIME_DIR" in os.environ:
        return True
    try:
        info = directory.lstat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and info.st_mode & 0o077 == 0 and directory.is_dir()


def _write_dir() -> Path | None:
    for directory in _candidates():
        if directory == SYSTEM_RUNTIME and not (
            os.getuid() == 0 or (directory.is_dir() and os.access(directory, os.W_OK))
        ):
            continue
        try:
            directory.mkdir(mode=0o700, parents=directory != _private_tmp(), exist_ok=True)
        except OSError:
            continue
        if _usable(directory):
            return directory
    return None


# -- records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """What a running ``smtpx serve`` says about itself."""

    path: Path
    pid: int
    config: Path | None  # None: the embedded default, relative to ``cwd``
    cwd: Path
    control_socket: Path
    listeners: tuple[tuple[str, str], ...]  # (kind, "host:port" as bound)

    def describe(self) -> str:
        return f"the running smtpx serve (pid {self.pid}, {self.path})"

    def smtp(self) -> HostPort | None:
        """The first plain SMTP listener, as a client reaches it."""
        from smtpx.mta.config import ListenAddress  # noqa: PLC0415

        for kind, text in self.listeners:
            if kind == "smtp":
                return _reachable(ListenAddress.parse(text, default_port=25))
        return None


def write_record(
    pid: int,
    config: Path | None,
    control: Path,
    listeners: Iterable[tuple[str, str]],
) -> Path | None:
    """Record the running daemon (see the module docstring); None when no runtime
    directory can be used. Records of daemons no longer running are removed."""
    directory = _write_dir()
    if directory is None:
        return None
    for stale in _read(directory):
        if not _alive(stale.pid):
            with contextlib.suppress(OSError):
                stale.path.unlink()
    data = {
        "pid": pid,
        "config": None if config is None else str(config),
        "cwd": str(Path.cwd()),
        "control_socket": str(control),
        "listeners": [list(item) for item in listeners],
    }
    path = directory / f"serve-{pid}.json"
    partial = path.with_suffix(".tmp")
    try:
        partial.write_text(json.dumps(data) + "\n", encoding="utf-8")
        partial.chmod(0o644)
        partial.replace(path)
    except OSError:
        return None
    return path


def remove_record(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _read(directory: Path) -> Iterator[Record]:
    try:
        paths = sorted(directory.glob("serve-*.json"))
    except OSError:
        return
    for path in paths:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            yield Record(
                path=path,
                pid=int(data["pid"]),
                config=None if data["config"] is None else Path(data["config"]),
                cwd=Path(data["cwd"]),
                control_socket=Path(data["control_socket"]),
                listeners=tuple((str(k), str(a)) for k, a in data["listeners"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable, half-written or not ours: not a daemon to talk to


def records() -> list[Record]:
    """The records of the daemons running now, found in the runtime directories."""
    found: dict[Path, Record] = {}
    for directory in _candidates():
        if _usable(directory):
            for record in _read(directory):
                if _alive(record.pid):
                    found.setdefault(record.path.resolve(), record)
    return list(found.values())


def _running() -> Record | None:
    """The one running daemon, None when there is none; several: a usage error."""
    running = records()
    if len({r.control_socket for r in running}) > 1:
        lines = "".join(
            f"\n  pid {r.pid}: {r.config or 'embedded default in ' + str(r.cwd)}" for r in running
        )
        raise Failure(
            f"several smtpx serve are running; say which with --config or --socket:{lines}",
            EXIT_USAGE,
        )
    return running[0] if running else None


# -- configurations ------------------------------------------------------------------------


_READ = (("server", "listen"), ("control", "socket"), ("relay", "local_domains"))


def _addresses(path: Path | None) -> MtaConfig:
    """``[server] listen``, ``[control] socket`` and ``[relay] local_domains`` of the file
    at ``path`` (or of the embedded default); nothing else of it is read."""
    from smtpx.errors import ConfigError  # noqa: PLC0415
    from smtpx.mta.config import MtaConfig  # noqa: PLC0415

    subset: dict[str, object] = {"hostname": "localhost"}  # skips the FQDN lookup
    try:
        if path is not None:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
            for section, key in _READ:
                table = document.get(section, {})
                subset[section] = (
                    {key: table[key]} if isinstance(table, dict) and key in table else {}
                )
        return MtaConfig.from_dict(subset, base_dir=None if path is None else path.parent)
    except (OSError, UnicodeError, tomllib.TOMLDecodeError, ConfigError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Failure(f"configuration error: {path}: {detail}", EXIT_USAGE) from None


def _reachable(address: ListenAddress) -> HostPort:
    from smtpx.envelope import HostPort  # noqa: PLC0415

    return HostPort(_WILDCARDS.get(address.host, address.host), address.port or 25)


def _first_listen(config: MtaConfig, where: str) -> HostPort:
    if not config.server.listen:
        raise Failure(f"{where} has no [server] listen address: give --server", EXIT_USAGE)
    return _reachable(config.server.listen[0])


def control_socket(config_file: str | None = None) -> tuple[Path, str]:
    """The control socket when ``--socket`` is not given, and how it was found (for
    messages)."""
    if config_file:
        path = Path(config_file).absolute()
        return _addresses(path).control.socket, f"control.socket of {path}"
    running = _running()
    if running is not None:
        return running.control_socket, running.describe()
    if STANDARD_CONFIG.exists():
        return _addresses(STANDARD_CONFIG).control.socket, f"control.socket of {STANDARD_CONFIG}"
    default = Path("var/control.sock").absolute()
    return default, "the default, ./var/control.sock"


def smtp_server(config_file: str | None) -> tuple[HostPort, str]:
    """The SMTP server to submit to when ``--server`` is not given, and how it was found."""
    if config_file:
        path = Path(config_file).absolute()
        return _first_listen(_addresses(path), str(path)), f"server.listen of {path}"
    running = _running()
    found = running.smtp() if running is not None else None
    if running is not None and found is not None:
        return found, running.describe()
    if STANDARD_CONFIG.exists():
        where = str(STANDARD_CONFIG)
        return _first_listen(_addresses(STANDARD_CONFIG), where), f"server.listen of {where}"
    default = _first_listen(_addresses(None), "the embedded default")
    return default, "the embedded default configuration"


def local_domain(config_file: str | None) -> str:
    """The first local domain of the configuration in effect (``--config``, the running
    daemon's, the standard file or the embedded default): what ``sendmail root`` means."""
    running = None if config_file else _running()
    if config_file:
        path: Path | None = Path(config_file).absolute()
    elif running is not None:
        path = running.config
    else:
        path = STANDARD_CONFIG if STANDARD_CONFIG.exists() else None
    domains = _addresses(path).relay.local_domains
    return domains[0] if domains else "localhost"


def mta_config(config_file: str | None) -> MtaConfig:
    """The whole configuration in effect (``--config``, the running daemon's, the standard
    file, or the embedded default), loaded as ``smtpx serve`` loads it."""
    from smtpx.cli.common import load_config  # noqa: PLC0415
    from smtpx.mta.config import MtaConfig  # noqa: PLC0415

    if config_file:
        return load_config(config_file)
    running = _running()
    if running is not None:
        if running.config is None:
            return MtaConfig.default(base_dir=running.cwd)
        return load_config(running.config)
    if STANDARD_CONFIG.exists():
        return load_config(STANDARD_CONFIG)
    return MtaConfig.default()


def describe_down(target_socket: Path, found: str, *, offline: bool) -> str:
    """The message for a control socket nobody answers on."""
    what = "a stale socket" if target_socket.exists() else "no socket there"
    hint = "; or read the spool on disk with --offline" if offline else ""
    return (
        f"smtpx serve is not running: nothing answers on {target_socket} ({what}; found "
        f"from {found}). Start it, or say where it is with --config or --socket{hint}"
    )


def offline_capable(ctx: click.Context) -> bool:
    return any(param.name == "offline" for param in ctx.command.params)
