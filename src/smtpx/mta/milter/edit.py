"""The message as milters see it (header fields, body chunks) and their changes to it.

A header field is kept as (name, rest): ``rest`` is everything after the colon, folds
included (CRLF), without the final CRLF, so an unchanged field is written back to the
octet. Milters get values folded with LF, as sendmail and Postfix send them, without the
one leading space unless they negotiated ``SMFIP_HDR_LEADSPC``; the values they send
back get CRLF again. Changes apply in the order the milters sent them (see
:func:`apply_headers`).
"""

from __future__ import annotations

from collections.abc import Iterable

from smtpx.mta.milter.protocol import Modification

__all__ = ["Field", "apply_headers", "from_milter", "parse_head", "render_head", "to_milter"]

Field = tuple[str, str | None]  # (name, rest); rest None: a line that is not a field


def _text(octets: bytes) -> str:
    return octets.decode("utf-8", "surrogateescape")


def parse_head(head: bytes) -> list[Field]:
    """The fields of a header section (with or without its blank line)."""
    fields: list[Field] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields and fields[-1][1] is not None:
            name, rest = fields[-1]
            fields[-1] = (name, f"{rest}\r\n{_text(line)}")
            continue
        head_name, colon, head_rest = line.partition(b":")
        fields.append((_text(head_name), _text(head_rest)) if colon else (_text(line), None))
    return fields


def render_head(fields: Iterable[Field]) -> bytes:
    """The header section again, without the blank line."""
    lines = (name if rest is None else f"{name}:{rest}" for name, rest in fields)
    return b"".join(line.encode("utf-8", "surrogateescape") + b"\r\n" for line in lines)


def to_milter(rest: str | None, leading_space: bool) -> str:
    """A field's value as a milter gets it."""
    value = (rest or "").replace("\r\n", "\n")
    return value if leading_space or not value.startswith(" ") else value[1:]


def from_milter(value: str, leading_space: bool) -> str:
    """A value from a milter as the rest of a field."""
    value = value.replace("\r\n", "\n").replace("\n", "\r\n")
    return value if leading_space else " " + value


def apply_headers(
    fields: list[Field], changes: Iterable[Modification], leading_space: bool
) -> list[Field]:
    """ADDHEADER appends; INSHEADER inserts at its index (0: the top); CHGHEADER changes
    the index-th field of that name (from 1; 0 counts as 1), deletes it when the value
    is empty, and adds it when there are fewer such fields and the value is not empty."""
    fields = list(fields)
    for change in changes:
        name, value = change.args[0], change.args[1] if len(change.args) > 1 else ""
        rest = from_milter(value, leading_space)
        if change.kind == b"h":
            fields.append((name, rest))
        elif change.kind == b"i":
            fields.insert(min(change.index, len(fields)), (name, rest))
        elif change.kind == b"m":
            _change(fields, name, max(change.index, 1), value, rest)
    return fields


def _change(fields: list[Field], name: str, occurrence: int, value: str, rest: str) -> None:
    seen = 0
    for position, (field_name, field_rest) in enumerate(fields):
        if field_rest is None or field_name.lower() != name.lower():
            continue
        seen += 1
        if seen == occurrence:
            if value:
                fields[position] = (field_name, rest)
            else:
                del fields[position]
            return
    if value:
        fields.append((name, rest))


def crlf(body: bytes) -> bytes:
    """A replacement body with CRLF line ends (a milter may send bare LF)."""
    return body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
