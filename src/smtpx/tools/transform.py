"""Transforms for comparing the mail two MTAs put out (F127, F128): make two streams of
messages comparable by normalising, dropping, hashing or masking what may differ (trace
fields, dates, ids), rewriting or hashing bodies, and sorting the stream.

A :class:`Transform` is read from a table (TOML in ``smtpx tools transform --config``)::

    [headers]
    strip_whitespace = true                  # every value on one line, spaces collapsed
    normalize_whitespace = [{name = "To"}]   # also ", " around commas
    filter = [{name = "Received"}, {name = "X-Mailer", contains = "Outlook"}]
    sort = true                              # fields by (name, value), recipients too
    dedup = [{name = "X-Seen"}]              # consecutive repeats of a field: one
    hash = [{name = "Message-ID"}]           # "[hidden : sha256 = ...]"
    mask = [{name = "Date"}]                 # "XXX"
    sort_emails = [{name = "Cc", dedup = true}]
    sort_words = [{name = "X-Tags"}]

    [bodies]
    rewrites = [{regex = "id=[0-9a-f]+", matches = "id=..."},
                {regex = "(?i)unsubscribe", entire_body = "A NEWSLETTER"}]
    hash = "parts"                           # or "whole"

    [messages]
    sort = ["sender", "recipients", "subject"]   # also envelope_id, body, headers

A field condition is a ``name`` (any case) and optionally ``contains`` (a substring of the
value). Header steps run in async_smtp's order: strip_whitespace, normalize_whitespace,
filter, sort, dedup, hash, mask, sort_emails, sort_words, sort again. Then the body
rewrites (each regular expression on the body, read as UTF-8), then the body hash.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smtpx.envelope import Envelope
from smtpx.errors import ConfigError, ParseError

__all__ = ["BodyTransform", "FieldCondition", "HeaderTransform", "Transform"]

SORT_KEYS = ("envelope_id", "sender", "recipients", "subject", "body", "headers")
_SPACES = re.compile(r"\s+")
_COMMAS = re.compile(r"\s*,\s*")


@dataclass(frozen=True, slots=True)
class FieldCondition:
    """Fields called ``name`` (any case) whose value contains ``contains`` (if given)."""

    name: str
    contains: str | None = None
    dedup: bool = False  # sort_emails and sort_words: drop repeats after sorting

    def __call__(self, name: str, value: str) -> bool:
        return name.lower() == self.name.lower() and (
            self.contains is None or self.contains in value
        )


def _first(conditions: Sequence[FieldCondition], name: str, value: str) -> FieldCondition | None:
    return next((c for c in conditions if c(name, value)), None)


def normalize_whitespace(value: str) -> str:
    """Runs of white space as one space, ``", "`` around commas, no space at the ends."""
    return _COMMAS.sub(", ", _SPACES.sub(" ", value)).strip()


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def _sorted_emails(value: str, dedup: bool) -> str:
    pairs = [p for p in email.utils.getaddresses([value]) if p != ("", "")]
    if not pairs:
        return value  # not an address list: left as it is
    ordered = sorted(pairs, key=lambda p: (p[1].lower(), p[0]))
    if dedup:
        ordered = [
            p for i, p in enumerate(ordered) if i == 0 or ordered[i - 1][1].lower() != p[1].lower()
        ]
    return ", ".join(email.utils.formataddr(p) for p in ordered)


def _sorted_words(value: str, dedup: bool) -> str:
    words = sorted(value.split())
    if dedup:
        words = list(dict.fromkeys(words))
    return " ".join(words)


Fields = list[tuple[str, str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderTransform:
    """The header steps of F127 (see the module docstring)."""

    strip_whitespace: bool = False
    normalize_whitespace: tuple[FieldCondition, ...] = ()
    filter: tuple[FieldCondition, ...] = ()
    sort: bool = False
    dedup: tuple[FieldCondition, ...] = ()
    hash: tuple[FieldCondition, ...] = ()
    mask: tuple[FieldCondition, ...] = ()
    sort_emails: tuple[FieldCondition, ...] = ()
    sort_words: tuple[FieldCondition, ...] = ()

    def fields(self, fields: Fields) -> Fields:
        if self.strip_whitespace:
            fields = [(n, " ".join(v.split())) for n, v in fields]
        fields = _map(fields, self.normalize_whitespace, lambda c, v: normalize_whitespace(v))
        fields = [(n, v) for n, v in fields if not _first(self.filter, n, v)]
        fields = self._sorted(fields)
        fields = self._deduped(fields)
        fields = _map(fields, self.hash, lambda c, v: f"[hidden : sha256 = {_sha256(v)}]")
        fields = _map(fields, self.mask, lambda c, v: "XXX")
        fields = _map(fields, self.sort_emails, lambda c, v: _sorted_emails(v, c.dedup))
        fields = _map(fields, self.sort_words, lambda c, v: _sorted_words(v, c.dedup))
        return self._sorted(fields)

    def _sorted(self, fields: Fields) -> Fields:
        return sorted(fields, key=lambda f: (f[0].lower(), f[1])) if self.sort else fields

    def _deduped(self, fields: Fields) -> Fields:
        kept: Fields = []
        for name, value in fields:
            if self._repeats(kept, name, value):
                continue
            kept.append((name, value))
        return kept

    def _repeats(self, kept: Fields, name: str, value: str) -> bool:
        """A dedup field right after a dedup field of the same name."""
        if not kept or kept[-1][0].lower() != name.lower():
            return False
        return bool(_first(self.dedup, name, value) and _first(self.dedup, *kept[-1]))


def _map(
    fields: Fields,
    conditions: Sequence[FieldCondition],
    change: Callable[[FieldCondition, str], str],
) -> Fields:
    if not conditions:
        return fields
    out: Fields = []
    for name, value in fields:
        condition = _first(conditions, name, value)
        out.append((name, value if condition is None else change(condition, value)))
    return out


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Where ``regex`` matches the body: the whole body becomes ``entire_body``, or each
    match becomes ``matches`` (a :func:`re.sub` template: ``\\1`` for groups)."""

    regex: re.Pattern[str]
    entire_body: str | None = None
    matches: str | None = None

    def __call__(self, body: str) -> str:
        if self.entire_body is not None:
            return self.entire_body if self.regex.search(body) else body
        assert self.matches is not None
        return self.regex.sub(self.matches, body)


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyTransform:
    """The body steps of F128: rewrites, then ``hash`` ("whole", "parts" or None)."""

    rewrites: tuple[Rewrite, ...] = ()
    hash: str | None = None

    def message(self, message: bytes) -> bytes:
        if not self.rewrites and self.hash is None:
            return message
        header, body = _split(message)
        if self.rewrites:
            text = body.decode("utf-8", "surrogateescape")
            for rewrite in self.rewrites:
                text = rewrite(text)
            body = text.encode("utf-8", "surrogateescape")
        if self.hash == "whole":
            body = f"BODY HIDDEN. HASH={hashlib.sha256(body).hexdigest()}\r\n".encode()
        elif self.hash == "parts":
            return _hash_parts(header + body)
        return header + body


def _split(message: bytes) -> tuple[bytes, bytes]:
    for marker in (b"\r\n\r\n", b"\n\n"):
        at = message.find(marker)
        if at >= 0:
            return message[: at + len(marker)], message[at + len(marker) :]
    return message, b""


def _hash_parts(message: bytes) -> bytes:
    """Each leaf's content replaced by its hash and former encoding (the structure stays)."""
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message)
    for part in parsed.walk():
        if part.is_multipart() or part.get_content_type() == "message/rfc822":
            continue
        payload = part.get_payload(decode=False)
        raw = payload.encode("ascii", "surrogateescape") if isinstance(payload, str) else b""
        encoding = part.get("Content-Transfer-Encoding", "7bit")
        digest = hashlib.sha256(raw).hexdigest()
        part.set_payload(f"PART HIDDEN. ORIGINAL_ENCODING:{encoding} HASH:{digest}\r\n")
        del part["Content-Transfer-Encoding"]
    policy = email.policy.compat32.clone(linesep="\r\n")
    return parsed.as_bytes(policy=policy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transform:
    """Headers, bodies and the order of a stream of messages (F127, F128)."""

    headers: HeaderTransform = field(default_factory=HeaderTransform)
    bodies: BodyTransform = field(default_factory=BodyTransform)
    sort: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> Transform:
        """Read the table of the module docstring (:class:`~smtpx.errors.ConfigError`)."""
        return _Reader().transform(table)

    def envelope(self, envelope: Envelope) -> Envelope:
        """One message transformed (its envelope recipients sorted too with headers.sort)."""
        body = _split(envelope.message)[1]
        fields = self.headers.fields(envelope.header_list())
        block = b"".join(f"{n}: {v}\r\n".encode("utf-8", "surrogateescape") for n, v in fields)
        message = self.bodies.message(block + b"\r\n" + body)
        info = envelope.info
        if self.headers.sort:
            info = info.with_recipients(sorted(info.recipients, key=str))
        return Envelope(info=info, message=message)

    def stream(self, envelopes: Iterable[Envelope]) -> list[Envelope]:
        """Every message transformed, then the stream sorted by ``sort``'s keys."""
        done = [self.envelope(e) for e in envelopes]
        if self.sort:
            done.sort(key=self._key)
        return done

    def _key(self, envelope: Envelope) -> tuple[str, ...]:
        values = {
            "envelope_id": lambda: str(envelope.id),
            "sender": lambda: str(envelope.sender),
            "recipients": lambda: ",".join(map(str, envelope.recipients)),
            "subject": lambda: envelope.last_header("Subject") or "",
            "body": lambda: envelope.body.decode("utf-8", "surrogateescape"),
            "headers": lambda: "\n".join(f"{n}: {v}" for n, v in envelope.header_list()),
        }
        return tuple(values[key]() for key in self.sort)


class _Reader:
    """The checks of :meth:`Transform.from_dict`, each error naming its key."""

    def transform(self, table: Mapping[str, Any]) -> Transform:
        self.keys(table, "", ("headers", "bodies", "messages"))
        sort = self.table(table.get("messages", {}), "messages", ("sort",)).get("sort", [])
        if not isinstance(sort, list) or any(k not in SORT_KEYS for k in sort):
            raise ConfigError(f"a list of: {', '.join(SORT_KEYS)}", key="messages.sort")
        return Transform(
            headers=self.headers(table.get("headers", {})),
            bodies=self.bodies(table.get("bodies", {})),
            sort=tuple(sort),
        )

    def keys(self, table: Mapping[str, Any], where: str, known: Sequence[str]) -> None:
        for key in table:
            if key not in known:
                name = f"{where}.{key}" if where else key
                raise ConfigError(f"unknown key (known keys: {', '.join(known)})", key=name)

    def table(self, value: object, where: str, known: Sequence[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise ConfigError("must be a table", key=where)
        self.keys(value, where, known)
        return value

    def headers(self, value: object) -> HeaderTransform:
        lists = ("normalize_whitespace", "filter", "dedup", "hash", "mask")
        listed = ("sort_emails", "sort_words")
        table = self.table(value, "headers", ("strip_whitespace", "sort", *lists, *listed))
        values: dict[str, Any] = {
            k: self.flag(table, k) for k in ("strip_whitespace", "sort") if k in table
        }
        for k in (*lists, *listed):
            if k in table:
                values[k] = self.conditions(table[k], f"headers.{k}", k in listed)
        return HeaderTransform(**values)

    def flag(self, table: Mapping[str, Any], key: str) -> bool:
        if not isinstance(table[key], bool):
            raise ConfigError("must be true or false", key=f"headers.{key}")
        return bool(table[key])

    def conditions(self, value: object, where: str, dedup: bool) -> tuple[FieldCondition, ...]:
        if not isinstance(value, list):
            raise ConfigError('must be a list of tables like {name = "To"}', key=where)
        found = []
        for n, item in enumerate(value):
            key = f"{where}[{n}]"
            entry = self.table(
                item, key, ("name", "contains", "dedup") if dedup else ("name", "contains")
            )
            name, contains = entry.get("name"), entry.get("contains")
            if not isinstance(name, str) or not name:
                raise ConfigError("needs a name", key=key)
            if contains is not None and not isinstance(contains, str):
                raise ConfigError("contains: a string", key=key)
            found.append(FieldCondition(name, contains, bool(entry.get("dedup", False))))
        return tuple(found)

    def bodies(self, value: object) -> BodyTransform:
        table = self.table(value, "bodies", ("rewrites", "hash"))
        hashing = table.get("hash")
        if hashing not in (None, "whole", "parts"):
            raise ConfigError('"whole" or "parts"', key="bodies.hash")
        rewrites = table.get("rewrites", [])
        if not isinstance(rewrites, list):
            raise ConfigError("must be a list of tables", key="bodies.rewrites")
        return BodyTransform(
            rewrites=tuple(
                self.rewrite(r, f"bodies.rewrites[{n}]") for n, r in enumerate(rewrites)
            ),
            hash=hashing,
        )

    def rewrite(self, value: object, key: str) -> Rewrite:
        entry = self.table(value, key, ("regex", "entire_body", "matches"))
        if ("entire_body" in entry) == ("matches" in entry):
            raise ConfigError("needs entire_body or matches (one of them)", key=key)
        try:
            regex = re.compile(str(entry.get("regex", "")))
        except re.error as exc:
            raise ConfigError(f"not a regular expression: {exc}", key=f"{key}.regex") from None
        if not entry.get("regex"):
            raise ConfigError("needs a regex", key=key)
        return Rewrite(regex, entry.get("entire_body"), entry.get("matches"))


def load(text: str) -> Transform:
    """A :class:`Transform` from TOML text."""
    import tomllib  # noqa: PLC0415

    try:
        return Transform.from_dict(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ParseError(f"not TOML: {exc}") from None
