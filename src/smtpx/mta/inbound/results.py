"""The Authentication-Results header field (RFC 8601): written with authres, and the
removal of fields that claim our authserv-id on mail arriving from elsewhere (section 5).

::

    field = authentication_results("mx.example.org", [
        MethodResult("spf", "pass", properties=(("smtp.mailfrom", "a@example.com"),)),
        MethodResult("dmarc", "fail", comment="p=reject", properties=(("header.from", "x"),)),
    ])
    # b"Authentication-Results: mx.example.org;\\r\\n\\tspf=pass smtp.mailfrom=a@example.com;..."

Each result (``resinfo``) goes on a line of its own, so the field stays readable and
under the 998-octet line limit however many signatures a message carries.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import authres

__all__ = [
    "FIELD",
    "MethodResult",
    "authentication_results",
    "authserv_id_of",
    "without_our_results",
]

FIELD = "Authentication-Results"
_COMMENT_UNSAFE = re.compile(r"[^\x20-\x27\x2a-\x5b\x5d-\x7e]")  # not ( ) \ or controls


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One ``method=result`` with its optional comment, ``reason`` and ``ptype.property``
    values, in the order given (RFC 8601 2.2)."""

    method: str
    result: str
    comment: str = ""
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        """The resinfo as RFC 8601 writes it (remembered: the same results recur)."""
        return _text(self)


@functools.lru_cache(maxsize=4096)
def _text(result: MethodResult) -> str:
    props = []
    for key, value in result.properties:
        ptype, _, name = key.partition(".")
        props.append(authres.core.AuthenticationResultProperty(ptype, name, value))
    written = authres.core.AuthenticationResult(
        result.method,
        result=result.result,
        result_comment=_comment(result.comment) or None,
        reason=result.reason or None,
        properties=props,
    )
    return str(written)


def _comment(text: str) -> str:
    return _COMMENT_UNSAFE.sub("?", text).strip()


def authentication_results(authserv_id: str, results: Sequence[MethodResult]) -> bytes:
    """The whole field, folded, ending with CRLF; ``none`` when there are no results."""
    lines = [f"{FIELD}: {authserv_id}"]
    lines += [result.text() for result in results] or ["none"]
    return (";\r\n\t".join(lines) + "\r\n").encode("ascii", "replace")


# -- reading the authserv-id of a field ---------------------------------------------------

_CFWS = re.compile(rb"(?:[ \t\r\n]+|\((?:[^()\\]|\\.)*\))*", re.DOTALL)
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_TOKEN = re.compile(rb"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+")  # RFC 2045 token, or dot-atom


def authserv_id_of(value: bytes) -> str | None:
    """The authserv-id at the start of an Authentication-Results field value (comments and
    folding skipped, a quoted-string unquoted), lower case; None when there is none.
    Nested comments are one level deep at most here: a field whose id hides behind
    deeper ones is not trusted to be anyone's and gets no id."""
    at = _CFWS.match(value).end()  # type: ignore[union-attr]
    quoted = _QUOTED.match(value, at)
    if quoted:
        raw = re.sub(rb"\\(.)", rb"\1", quoted.group(1))
    else:
        token = _TOKEN.match(value, at)
        if token is None:
            return None
        raw = token.group()
    return raw.decode("utf-8", "replace").lower().rstrip(".") or None


def without_our_results(header_block: bytes, authserv_id: str) -> tuple[bytes, int]:
    """``header_block`` (fields ending with CRLF, the empty line after them included or
    not) without the Authentication-Results fields that claim ``authserv_id`` (RFC 8601
    section 5: a border MTA MUST delete them before adding its own), and how many went.
    A field whose authserv-id cannot be read is removed as well: it might claim ours."""
    ours = authserv_id.lower().rstrip(".")
    kept: list[bytes] = []
    removed = 0
    for field in _fields(header_block):
        name, colon, value = field.partition(b":")
        if colon and name.strip().lower() == FIELD.lower().encode():
            claimed = authserv_id_of(value)
            if claimed is None or claimed == ours:
                removed += 1
                continue
        kept.append(field)
    return b"".join(kept), removed


def _fields(block: bytes) -> list[bytes]:
    """The fields of a header block, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields
