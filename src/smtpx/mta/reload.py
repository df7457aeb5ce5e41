"""What a reload (``SIGHUP``) may change in a running MTA, and what needs a restart.

:func:`merge` takes the configuration running and the one the file now gives, and
returns the one to run with: the new values of the keys that can change live, and the
running values of those that cannot, each named in a :class:`Refusal` (the MTA logs it).

Live: ``[relay]``, ``[auth]`` (the users file, read again at every reload), the paths of
the certificate and key (read again at every reload, when TLS is on), ``[routing]``
(routes, smarthost, TLS per host, credentials, chunking),
``[dkim]``, ``[local]``, ``[log]``, ``[[milters]]`` (sessions that start after the
reload use the new list; those under way keep their milters), and in ``[spool]`` the
retry intervals (for mail spooled from then on), the delivery limits, ``bounce``,
``delay_warning_after``, ``unreachable_backoff`` (a reload lifts every suspension) and
``failed_retention``.

Restart: ``hostname``, all of ``[server]`` (listeners, limits and timeouts are built into
the server), ``[control]``, TLS turned on or off and ``tls.min_version``,
``auth.allow_plaintext`` (a server setting), and in ``[spool]`` where the mail is:
``dir``, ``fsync``, ``backend`` and ``[spool.postgresql]``; ``[dns]``, ``[inbound]``, in
``[routing]`` the resolver and the MTA-STS, DANE and TLS-RPT settings, and the guards
(``[dnsbl]``, ``[rate_limits]``, ``[greylist]``, ``[redis]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from smtpx.mta.config import MtaConfig
from smtpx.mta.config_toml import toml_value

__all__ = ["RESTART_KEYS", "Refusal", "changed_keys", "merge"]

# section -> its keys that only a restart changes ("*": every key of the section)
RESTART_KEYS: dict[str, tuple[str, ...]] = {
    "server": ("*",),
    "control": ("*",),
    "tls": ("min_version",),
    "auth": ("allow_plaintext",),
    "spool": (
        "dir",
        "fsync",
        "backend",
        "postgresql",
        "monitor_every",
        "monitor_alert_after",
        "monitor_max_frozen_age",
    ),
    # the resolvers, the TLS policies and the inbound judge are built once, at start
    "routing": ("resolver", "mta_sts", "dane", "tlsrpt", "warm_connections"),
    "log": ("fingerprints",),  # a server setting
    "dns": ("*",),
    "inbound": ("*",),
    # the guards keep counts and triplets (and a Redis connection) across sessions
    "dnsbl": ("*",),
    "rate_limits": ("*",),
    "greylist": ("*",),
    "redis": ("*",),
}
_SECRET_KEYS = frozenset({"spool.postgresql", "redis.url"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """A key the file changed that keeps its running value until a restart."""

    key: str
    running: str
    wanted: str

    def __str__(self) -> str:
        return (
            f"{self.key} cannot change without a restart: it stays {self.running} "
            f"(the file says {self.wanted}; restart smtpx to use it)"
        )


def _shown(key: str, value: Any) -> str:
    if key in _SECRET_KEYS:
        return "as it was" if value is None else "the running one"
    return "(not set)" if value is None else toml_value(key.rpartition(".")[2], value)


def _leaves(config: MtaConfig) -> Iterator[tuple[str, str, Any]]:
    """(section, key, value) of every key; section "" for the top level."""
    yield "", "hostname", config.hostname
    yield "", "milters", config.milters
    for section in fields(config):
        record = getattr(config, section.name)
        if section.name in ("hostname", "milters", "source"):
            continue
        for key in fields(record):
            yield section.name, key.name, getattr(record, key.name)


def changed_keys(old: MtaConfig, new: MtaConfig) -> list[str]:
    """The keys (``section.key``) whose values differ."""
    before = {(s, k): v for s, k, v in _leaves(old)}
    return [f"{s}.{k}" if s else k for s, k, v in _leaves(new) if before[s, k] != v]


def _restart_only(section: str, key: str, old: MtaConfig, new: MtaConfig) -> bool:
    if section == "":
        # hostname: the greeting, EHLO, Received:, the client's EHLO; [[milters]] is live
        return key == "hostname"
    if section == "tls" and key == "cert_file":
        return old.tls.enabled != new.tls.enabled  # turned on or off; a new path is live
    keys = RESTART_KEYS.get(section, ())
    return "*" in keys or key in keys


def merge(running: MtaConfig, wanted: MtaConfig) -> tuple[MtaConfig, list[Refusal]]:
    """The configuration to run with, and the changes it refuses (see the docstring)."""
    refused: list[Refusal] = []
    kept: dict[str, dict[str, Any]] = {}
    for name in changed_keys(running, wanted):
        section, _, key = name.rpartition(".")
        if not _restart_only(section, key, running, wanted):
            continue
        old = getattr(getattr(running, section), key) if section else running.hostname
        new = getattr(getattr(wanted, section), key) if section else wanted.hostname
        refused.append(Refusal(name, _shown(name, old), _shown(name, new)))
        kept.setdefault(section, {})[key] = old
        if (section, key) == ("tls", "cert_file"):
            kept["tls"]["key_file"] = running.tls.key_file  # (the pair goes together)
    top = kept.pop("", {})
    sections = {s: replace(getattr(wanted, s), **values) for s, values in kept.items()}
    return replace(wanted, **top, **sections), refused
