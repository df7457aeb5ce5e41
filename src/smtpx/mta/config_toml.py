"""An :class:`~smtpx.mta.config.MtaConfig` written back as TOML: ``smtpx config show``.

Every key of every section is written, defaults included, in the forms the loader reads
(sizes as ``35M``, durations as ``5m`` or ``1h30m``, paths absolute), so that the text
loads back to an equal configuration. A key that is not set (None) is written as a
comment, ``# cert_file = (not set)``: TOML has no null, and the comment still shows that
the key exists. Secrets (the passwords of ``[routing.credentials]``, the password in
``spool.postgresql.dsn``) are written as ``"(hidden)"`` unless ``secrets`` is true.

A small writer rather than a TOML library: strings are JSON strings, which TOML reads
as basic strings, and the comments for unset keys are beyond what a TOML library writes.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from smtpx.client.config import TlsConfig
from smtpx.envelope import HostPort, RetryInterval
from smtpx.mta.config import (
    HostCredentials,
    ListenAddress,
    MtaConfig,
    _key_text,
)
from smtpx.spool.types import PostgresSettings
from smtpx.units import format_duration, format_size

__all__ = ["HIDDEN", "to_toml", "toml_value"]

HIDDEN = "(hidden)"
SIZE_KEYS = frozenset({"max_message_size", "spill_threshold", "max_buffered", "max_spilled"})
# floats that are plain numbers (the other floats are durations: "5m")
NUMBER_KEYS = frozenset({"threshold", "weight", "codes"})
_DSN_PASSWORD = re.compile(r"^(\w+://[^:/@]*:)([^@]*)(@)")


def to_toml(config: MtaConfig, *, secrets: bool = False) -> str:
    """The whole configuration as TOML (see the module docstring)."""
    writer = _Writer(secrets)
    writer.line(f"hostname = {toml_value('hostname', config.hostname)}")
    for section in fields(config):
        if section.name not in ("hostname", "milters", "source"):
            writer.section(section.name, getattr(config, section.name))
    writer.table("milters", config.milters)  # [[milters]], none by default
    return "\n".join(writer.lines) + "\n"


def toml_value(key: str, value: Any) -> str:
    """One value as TOML writes it (not None: see :meth:`_Writer.keys`); ``key`` tells
    a size (``35M``) from a count."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return json.dumps(format_size(value)) if key in SIZE_KEYS else str(value)
    if isinstance(value, float):
        return repr(value) if key in NUMBER_KEYS else json.dumps(format_duration(value))
    if isinstance(value, enum.Enum):
        return json.dumps(value.value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(key, item) for item in value) + "]"
    if isinstance(
        value,
        str
        | Path
        | ListenAddress
        | HostPort
        | RetryInterval
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network,
    ):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, Mapping):  # inline: { "127.0.0.2" = 2.0 }
        inner = ", ".join(f"{_key_text(k)} = {toml_value(key, v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if _is_table(value):  # inline: { enabled = true, ca_file = "/etc/ca.pem" }
        pairs = ((f.name, getattr(value, f.name)) for f in fields(value))
        inner = ", ".join(f"{_key_text(k)} = {toml_value(k, v)}" for k, v in pairs if v is not None)
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"{key}: no TOML form for {value!r}")


class _Writer:
    def __init__(self, secrets: bool) -> None:
        self.secrets = secrets
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def keys(self, pairs: Iterable[tuple[str, Any]]) -> None:
        for key, value in pairs:
            if value is None:
                self.line(f"# {_key_text(key)} = (not set)")
            else:
                self.line(f"{_key_text(key)} = {toml_value(key, value)}")

    def section(self, name: str, record: Any) -> None:
        self.line("")
        self.line(f"[{name}]")
        tables: list[tuple[str, Any]] = []
        plain: list[tuple[str, Any]] = []
        for f in fields(record):
            value = getattr(record, f.name)
            if f.metadata.get("toml") is False:
                continue  # set by smtpx itself (a worker's index), not a key of the file
            if f.name in ("tls", "sign") and not value:
                plain.append((f.name, value))  # an empty array of tables: [] says so
            elif (
                isinstance(value, Mapping)
                or _is_table(value)
                or f.name in ("tls", "sign")
                or (isinstance(value, tuple) and value and all(map(_is_table, value)))
            ):
                tables.append((f.name, value))
            elif (name, f.name) == ("redis", "url") and value and not self.secrets:
                plain.append((f.name, _hide_password(value)))
            elif (name, f.name) == ("spool", "failed_retention") and value is None:
                plain.append((f.name, "never"))
            else:
                plain.append((f.name, value))
        self.keys(plain)
        for key, value in tables:
            self.table(f"{name}.{key}", value)

    def table(self, path: str, value: Any) -> None:
        if isinstance(value, PostgresSettings):
            self.line("")
            self.line(f"[{path}]")
            self.keys(
                [
                    ("dsn", value.dsn if self.secrets else _hide_password(value.dsn)),
                    ("node", value.node),
                    ("lease", value.lease),
                    ("pool_size", value.pool_size),
                ]
            )
        elif path == "routing.tls":
            for suffix, settings in value:
                self.line("")
                self.line(f"[[{path}]]")
                self.keys(_client_tls(suffix, settings))
        elif isinstance(value, tuple):  # [[dkim.sign]], [[dnsbl.zones]], [[rate_limits.rules]]
            for entry in value:
                self.line("")
                self.line(f"[[{path}]]")
                self.keys((f.name, getattr(entry, f.name)) for f in fields(entry))
        elif isinstance(value, Mapping):
            self.line("")
            self.line(f"[{path}]")
            for key, item in value.items():
                self.line(f"{_key_text(key)} = {self.inline(key, item)}")

        else:  # a sub-table with keys of its own ([routing.mta_sts], [inbound.arc_seal])
            self.line("")
            self.line(f"[{path}]")
            self.keys((f.name, getattr(value, f.name)) for f in fields(value))

    def inline(self, key: str, value: Any) -> str:
        if isinstance(value, HostCredentials):
            password = value.password if self.secrets else HIDDEN
            username = toml_value("username", value.username)
            return f"{{ username = {username}, password = {toml_value('password', password)} }}"
        return toml_value(key, value)


def _is_table(value: object) -> bool:
    """A settings record of its own (written as a sub-table), not a value with a text
    form (``HostPort``, ``ListenAddress``, ``RetryInterval``)."""
    scalar = (type, HostPort, ListenAddress, RetryInterval)
    return is_dataclass(value) and not isinstance(value, scalar)


def _hide_password(dsn: str) -> str:
    """``postgresql://user:secret@host/db`` as ``postgresql://user:(hidden)@host/db``."""
    return _DSN_PASSWORD.sub(lambda m: m[1] + HIDDEN + m[3], dsn)


def _client_tls(suffix: str, settings: TlsConfig) -> list[tuple[str, Any]]:
    return [
        ("suffix", suffix),
        ("mode", settings.mode),
        ("certificate", settings.certificate),
        ("ca_file", settings.ca_file),
        ("min_version", settings.min_version),
    ]
