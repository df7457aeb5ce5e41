"""Who receives mail for the local domains: mailboxes, aliases, catch-alls, subaddresses.

A :class:`RecipientTable` answers at RCPT time, so that mail for an unknown user is
refused with ``550 5.1.1`` (the client tells its sender) instead of accepted and bounced
later (backscatter: bounces to forged senders get a server blocklisted). Its entries come
from ``[local]`` (``mailboxes``, ``aliases``, ``catch_all``) and from
``recipients_file``, which is read again when it changes (checked at most once a second,
on lookups) or on :meth:`RecipientTable.reload` (the SIGHUP hook).

Entries name a local part (``alice``: in every local domain) or an address
(``alice@example.org``: in that domain only). An alias maps a name to targets: local parts
(in the domain the mail came for), local addresses (looked up again: aliases nest) or
remote addresses (relayed). The alias key ``@example.org`` is that domain's catch-all;
``catch_all`` is the catch-all of every local domain. With a subaddress delimiter
(``+``), ``alice+tag`` is ``alice`` when ``alice+tag`` itself is not known; a mailbox
keeps the tag (``alice+tag@example.org`` reaches alice's mailbox; Dovecot can file it by
tag). ``postmaster`` is always accepted (RFC 5321 4.5.1). With no entry at all, every
local part is accepted, as without a table.

Lookups are case-insensitive. An alias whose expansion loops, or reaches a local address
that is not known, answers ``451 4.3.5`` (a broken table is the operator's to fix; the
sender retries) and the error is logged.

The file holds one entry a line: ``name`` for a mailbox, ``name: target, target`` for an
alias; ``#`` starts a comment line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smtpx.errors import ConfigError, ParseError
from smtpx.mta.config import MtaConfig, a_label
from smtpx.protocol import replies
from smtpx.protocol.addresses import Address
from smtpx.protocol.replies import Reply

__all__ = [
    "Broken",
    "Deliver",
    "RecipientTable",
    "Resolution",
    "Unknown",
    "check_name",
    "check_target",
]

log = logging.getLogger("smtpx.mta")

MAX_DEPTH = 20  # aliases of aliases; deeper is taken for a loop
CHECK_INTERVAL = 1.0  # seconds between two looks at the file's modification time
_CATCH_ALL = "@"


@dataclass(frozen=True, slots=True)
class Deliver:
    """Known: deliver to ``targets`` (the recipient itself for a mailbox). ``expanded``:
    an alias gave more than one target (RFC 3461 6.2.7.3 then wants an ``expanded``
    notice for NOTIFY=SUCCESS)."""

    targets: tuple[Address, ...]
    expanded: bool = False


@dataclass(frozen=True, slots=True)
class Unknown:
    """No such recipient: ``550 5.1.1``."""

    @property
    def reply(self) -> Reply:
        return replies.mailbox_unavailable("Recipient address rejected: User unknown")


@dataclass(frozen=True, slots=True)
class Broken:
    """The table cannot answer for this recipient (an alias loop, an alias to an unknown
    local address): ``451 4.3.5``, logged for the operator."""

    why: str

    @property
    def reply(self) -> Reply:
        return Reply.of(451, "Recipient table error, try again later", "4.3.5")


Resolution = Deliver | Unknown | Broken

_LOCAL_RE = re.compile(r"[^\s@:,]+")


def _domain(text: str) -> str:
    return a_label(text)


def check_name(text: str) -> str:
    """A table key as stored: ``local``, ``local@domain`` or ``@domain`` (lower case,
    the domain as an A-label). Raises ValueError saying what is wrong."""
    local, at, domain = text.strip().rpartition("@")
    if not at:
        local, domain = domain, ""
    if at and not domain:
        raise ValueError(f"{text!r}: no domain after @")
    if local and not _LOCAL_RE.fullmatch(local):
        raise ValueError(f"{text!r} is not a local part or an address")
    if not local and not at:
        raise ValueError("empty name")
    return f"{local.lower()}@{_domain(domain)}" if at else local.lower()


def check_target(text: str) -> str:
    """An alias target as stored: a local part (lower case) or an address (parsed, its
    domain lower case). Raises ValueError saying what is wrong."""
    text = text.strip()
    if "@" not in text:
        if not _LOCAL_RE.fullmatch(text):
            raise ValueError(f"{text!r} is not a local part or an address")
        return text.lower()
    try:
        address = Address.parse(text)
    except ParseError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return str(Address(address.local_part, address.domain.lower()))


@dataclass(frozen=True, slots=True)
class _Entries:
    mailboxes: frozenset[str]
    aliases: Mapping[str, tuple[str, ...]]

    @property
    def empty(self) -> bool:
        return not self.mailboxes and not self.aliases


def parse_file(text: str, where: str) -> _Entries:
    """The entries of a recipients file; errors name ``where`` and the line."""
    mailboxes: set[str] = set()
    aliases: dict[str, tuple[str, ...]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, rest = line.partition(":")
        try:
            key = check_name(name)
            if not colon:
                mailboxes.add(key)
                continue
            targets = tuple(check_target(t) for t in re.split(r"[,\s]+", rest.strip()) if t)
        except ValueError as exc:
            raise ConfigError(f"line {number}: {exc}", file=where) from None
        if not targets:
            raise ConfigError(
                f"line {number}: the alias {name.strip()!r} has no target", file=where
            )
        aliases[key] = targets
    return _Entries(frozenset(mailboxes), aliases)


class RecipientTable:
    """The known recipients of the local domains (see the module docstring).

    ``local_domains`` are A-labels (``relay.local_domains``); ``clock`` paces the checks
    of ``file`` (monotonic seconds).
    """

    def __init__(
        self,
        local_domains: Iterable[str],
        *,
        mailboxes: Iterable[str] = (),
        aliases: Mapping[str, Sequence[str]] | None = None,
        catch_all: Sequence[str] = (),
        delimiter: str = "+",
        file: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local_domains = frozenset(local_domains)
        aliases = dict(aliases or {})
        if catch_all:
            aliases[_CATCH_ALL] = tuple(catch_all)
        self._own = _Entries(
            frozenset(check_name(m) for m in mailboxes),
            {
                check_name(k) if k != _CATCH_ALL else k: tuple(map(check_target, v))
                for k, v in aliases.items()
            },
        )
        self.delimiter = delimiter
        self.file = None if file is None else Path(file)
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._checked = clock()
        self._entries = self._own
        if self.file is not None:
            self.reload()

    @classmethod
    def from_config(cls, config: MtaConfig) -> RecipientTable:
        """The table ``[local]`` of ``config`` describes."""
        local = config.local
        return cls(
            config.relay.local_domains,
            mailboxes=local.mailboxes,
            aliases=local.aliases,
            catch_all=local.catch_all,
            delimiter=local.subaddress_delimiter,
            file=local.recipients_file,
        )

    @property
    def enabled(self) -> bool:
        """False when no entry is configured: every local part is accepted."""
        return not self._entries.empty

    # -- the file -------------------------------------------------------------------------

    def reload(self) -> None:
        """Read ``file`` again now (the SIGHUP hook). On an error the table in use stays
        and :class:`~smtpx.errors.ConfigError` says what is wrong."""
        if self.file is None:
            return
        try:
            stamp = _stamp(self.file)
            text = self.file.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"cannot read the recipients file: {detail}", file=str(self.file)
            ) from None
        found = parse_file(text, str(self.file))
        self._entries = _Entries(
            self._own.mailboxes | found.mailboxes, {**self._own.aliases, **found.aliases}
        )
        self._stamp = stamp
        log.info(
            "recipients: %d mailboxes and %d aliases from %s",
            len(found.mailboxes),
            len(found.aliases),
            self.file,
        )

    def check_file(self) -> bool:
        """The file watcher: read the file again when it changed since it was read (at
        most once every :data:`CHECK_INTERVAL`). True when it was read; a file that
        cannot be read or parsed is logged, and the table in use stays."""
        now = self._clock()
        if self.file is None or now - self._checked < CHECK_INTERVAL:
            return False
        self._checked = now
        try:
            if _stamp(self.file) == self._stamp:
                return False
            self.reload()
        except (OSError, ConfigError) as exc:
            log.error("recipients: %s; the table in use stays", exc)
            return False
        return True

    # -- lookups --------------------------------------------------------------------------

    def resolve(self, recipient: Address) -> Resolution:
        """What to do with mail for ``recipient``, an address in a local domain."""
        self.check_file()
        if not self.enabled:
            return Deliver((recipient,))
        found = self._resolve(recipient, ())
        if isinstance(found, Broken):
            log.error("recipients: %s: %s", recipient, found.why)
            return found
        if isinstance(found, Unknown):
            return found
        targets = tuple(dict.fromkeys(found))  # each target once, in order
        return Deliver(targets, expanded=len(targets) > 1)

    def mailbox(self, recipient: str) -> str:
        """The mailbox address ``recipient`` is delivered into: without its subaddress
        (``alice+tag@d`` is ``alice@d``) unless ``alice+tag`` is a mailbox itself."""
        local, at, domain = recipient.rpartition("@")
        base, detail = self._split(local)
        if not at or not detail or self._is_mailbox(local.lower(), domain.lower()):
            return recipient
        return f"{base}@{domain}"

    def _split(self, local: str) -> tuple[str, str]:
        if not self.delimiter:
            return local, ""
        base, sep, detail = local.partition(self.delimiter)
        return (base, sep + detail) if base and sep else (local, "")

    def _is_mailbox(self, local: str, domain: str) -> bool:
        mailboxes = self._entries.mailboxes
        return local in mailboxes or f"{local}@{domain}" in mailboxes

    def _alias(self, local: str, domain: str) -> tuple[str, ...] | None:
        aliases = self._entries.aliases
        return aliases.get(f"{local}@{domain}") or aliases.get(local)

    def _resolve(self, address: Address, path: tuple[str, ...]) -> list[Address] | Unknown | Broken:
        local = address.local_part.lower()
        try:
            domain = _domain(address.domain)
        except ValueError:
            return Unknown()
        key = f"{local}@{domain}"
        if key in path:  # an alias that names itself: its mailbox, if it has one
            if self._is_mailbox(local, domain) or self._is_mailbox(self._split(local)[0], domain):
                return [address]
            return Broken(f"alias loop: {' -> '.join((*path, key))}")
        if len(path) >= MAX_DEPTH:
            return Broken(f"aliases nested deeper than {MAX_DEPTH}: {' -> '.join(path)}")
        base = self._split(local)[0]
        targets = self._alias(local, domain) or self._alias(base, domain)
        if targets is None:
            if self._is_mailbox(local, domain) or self._is_mailbox(base, domain):
                return [address]
            if base == "postmaster":
                return [address]  # RFC 5321 4.5.1: always accepted
            aliases = self._entries.aliases
            targets = aliases.get(f"@{domain}") or aliases.get(_CATCH_ALL)
            if targets is None:
                return Unknown()
        return self._expand(targets, address.domain, (*path, key))

    def _expand(
        self, targets: tuple[str, ...], domain: str, path: tuple[str, ...]
    ) -> list[Address] | Broken:
        found: list[Address] = []
        for target in targets:
            address = Address.parse(target) if "@" in target else Address(target, domain)
            if not self._local(address.domain):
                found.append(address)  # remote: relayed
                continue
            result = self._resolve(address, path)
            if isinstance(result, Unknown):
                return Broken(f"{path[-1]}: the alias target {address} is not a known recipient")
            if isinstance(result, Broken):
                return result
            found.extend(result)
        return found

    def _local(self, domain: str) -> bool:
        try:
            return _domain(domain) in self.local_domains
        except ValueError:
            return False


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is written or replaced."""
    status = path.stat()
    return status.st_mtime_ns, status.st_size, status.st_ino
