"""Compose a message and send it in one call (F118-F121 of ``reference/async_smtp.md``).

::

    from smtpx import simplemail

    status = await simplemail.send(
        host="mx.example.org",
        from_="Ops <ops@example.org>",
        to=["alice@example.org"],
        bcc=["audit@example.org"],
        subject="Nightly report",
        content=simplemail.text_monospace(report),
        attachments=[simplemail.Attachment("report.csv", csv_bytes)],
    )

Everything MIME is done by the stdlib :mod:`email` package (``EmailMessage``,
``email.policy``, ``email.utils``, :mod:`mimetypes`); nothing here writes MIME by hand.

* Content builders (:func:`text`, :func:`html`, :func:`text_monospace`, :func:`custom`,
  :func:`alternatives`, :func:`mixed`, :func:`with_related`, :func:`of_file`) return an
  immutable :class:`Content`: a description of a MIME entity that is rendered into fresh
  ``email`` objects each time a message is built, so one value can go into many messages.
* :class:`Attachment` is a file attached to a message (``Content-Disposition:
  attachment``, non-ASCII names encoded per RFC 2231 by the stdlib).
* :func:`build` makes the :class:`~email.message.EmailMessage`; :func:`send` builds and
  sends it and raises :class:`~smtpx.client.DeliveryError` on any rejection;
  :func:`send_message` sends a prebuilt message and returns the raw status.

Text bodies are encoded for a 7-bit path (the stdlib picks quoted-printable or base64 for
non-ASCII text), so a message is deliverable whether or not the server offers 8BITMIME.
Header fields use ``policy.SMTP`` (RFC 2047 encoded-words for non-ASCII names and
subjects, A-labels for non-ASCII domains), or ``policy.SMTPUTF8`` (RFC 6532 raw UTF-8)
only when some address in the header has a non-ASCII local part, which has no ASCII form.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import email.errors
import email.policy
import email.utils
import getpass
import mimetypes
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.headerregistry import Address as MailboxHeader
from email.headerregistry import AddressHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy
from html import escape as _escape_html
from pathlib import Path
from typing import TypeAlias

from smtpx.auth import Credentials
from smtpx.client import Accepted, ClientConfig, DeliveryError, EnvelopeStatus, connect
from smtpx.envelope import Envelope
from smtpx.errors import ParseError
from smtpx.io.resolve import Resolver
from smtpx.maillog.levels import QUIET, remapped
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.params import MailParams

__all__ = [
    "AddressLike",
    "Addresses",
    "Attachment",
    "Content",
    "HeadersLike",
    "alternatives",
    "build",
    "custom",
    "guess_type",
    "html",
    "mixed",
    "of_file",
    "send",
    "send_message",
    "text",
    "text_monospace",
    "with_related",
]

AddressLike: TypeAlias = str | Address | MailboxHeader
"""One address: text as in a header (``"Jo <jo@example.org>"``, ``"jo@example.org"``; a
comma-separated list is several addresses), a bare :class:`~smtpx.protocol.Address`, or a
stdlib :class:`email.headerregistry.Address`."""

Addresses: TypeAlias = AddressLike | Iterable[AddressLike]
"""One address or a collection of them."""

HeadersLike: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]
"""Extra header fields, as a mapping or as (name, value) pairs (which may repeat names)."""

# Content is rendered for a 7-bit path: with cte_type="7bit" the stdlib chooses
# quoted-printable or base64 for non-ASCII text rather than 8bit (RFC 6152 needs the
# server's 8BITMIME for that). SMTPUTF8 is used only when an address needs it (RFC 6532).
_ASCII_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_UTF8_POLICY = email.policy.SMTPUTF8.clone(cte_type="7bit")

_DEFAULT_TYPE = "application/octet-stream"
# mimetypes reports compression as an "encoding" (a.tar.gz is application/x-tar + gzip);
# the file as a whole is the compressed type.
_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}


# ---------------------------------------------------------------------------------------
# Content


def _split_type(content_type: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """``"text/csv; header=present"`` -> ("text", "csv", (("header", "present"),)).

    The stdlib's header parser reads the value; a value it cannot read as ``type/subtype``
    raises ValueError.
    """
    probe = MIMEPart(policy=email.policy.default)
    try:
        probe["Content-Type"] = content_type
    except (ValueError, email.errors.HeaderParseError) as exc:
        raise ValueError(f"bad content type {content_type!r}: {exc}") from None
    header = probe["Content-Type"]
    if header.defects or "/" not in content_type:
        raise ValueError(f"bad content type {content_type!r}")
    maintype, subtype = probe.get_content_maintype(), probe.get_content_subtype()
    params = tuple((k, v) for k, v in probe.get_params(failobj=[])[1:] if isinstance(v, str))
    return maintype, subtype, params


def guess_type(filename: str) -> str:
    """The MIME type of a file, guessed from its name with :mod:`mimetypes`
    (``application/octet-stream`` when nothing fits)."""
    guessed, encoding = mimetypes.guess_type(filename, strict=False)
    if encoding is not None:
        return _COMPRESSED_TYPES.get(encoding, _DEFAULT_TYPE)
    return guessed or _DEFAULT_TYPE


class Content(abc.ABC):
    """An immutable description of a MIME entity: a message body or one part of one.

    Made by the builder functions of this module. :meth:`part` renders it into a fresh
    :class:`email.message.MIMEPart`; :func:`build` renders it into the message itself.
    """

    __slots__ = ()

    @abc.abstractmethod
    def _fill(self, part: MIMEPart) -> None:
        """Write this content (Content-* fields and payload) into an empty ``part``."""

    @property
    @abc.abstractmethod
    def content_type(self) -> str:
        """The MIME type, ``maintype/subtype``, lower case."""

    def part(self, policy: EmailPolicy[EmailMessage] = _ASCII_POLICY) -> MIMEPart:
        """A new stdlib part holding this content."""
        part = MIMEPart(policy=policy)
        self._fill(part)
        return part


def _attach(parent: MIMEPart, content: Content) -> MIMEPart:
    child = MIMEPart(policy=parent.policy)
    content._fill(child)
    parent.attach(child)
    return child


def _header_pairs(headers: HeadersLike) -> tuple[tuple[str, str], ...]:
    pairs = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)
    for pair in pairs:
        if (
            len(pair) != 2
            or not all(isinstance(item, str) for item in pair)
            or not pair[0]
            or ":" in pair[0]
        ):
            raise ValueError(f"a header must be a (name, value) pair of strings: {pair!r}")
    return pairs


@dataclass(frozen=True, slots=True)
class _Single(Content):
    """A leaf: text (``str`` with a ``text/*`` type, sent as UTF-8) or bytes."""

    data: str | bytes
    maintype: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()
    filename: str | None = None
    disposition: str | None = None
    cte: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def content_type(self) -> str:
        return f"{self.maintype}/{self.subtype}"

    def _fill(self, part: MIMEPart) -> None:
        data = self.data
        is_text = self.maintype == "text" and isinstance(data, str)
        if is_text:
            part.set_content(
                data,
                subtype=self.subtype,
                charset="utf-8",
                cte=self.cte,
                disposition=self.disposition,
                filename=self.filename,
            )
        else:
            if isinstance(data, str):
                data = data.encode("utf-8")
            part.set_content(
                data,
                self.maintype,
                self.subtype,
                cte=self.cte or "base64",
                disposition=self.disposition,
                filename=self.filename,
            )
        # replace=True keeps Content-Type in its place (the stdlib's params= moves it last).
        for name, value in self.params:
            # Text is encoded here as UTF-8, whatever charset the caller's type named.
            if not (is_text and name.lower() == "charset"):
                part.set_param(name, value, replace=True)
        for name, value in self.headers:
            part[name] = value


@dataclass(frozen=True, slots=True)
class _Multipart(Content):
    """``multipart/mixed``, ``/alternative`` or ``/related`` over some parts.

    ``inline_first`` marks a single-part first child ``Content-Disposition: inline``: the
    main body of a message with attachments (F121).
    """

    subtype: str
    parts: tuple[Content, ...]
    inline_first: bool = False
    start_type: bool = False  # multipart/related: type= names the root's type (RFC 2387)

    @property
    def content_type(self) -> str:
        return f"multipart/{self.subtype}"

    def _fill(self, part: MIMEPart) -> None:
        part.clear_content()
        if self.subtype == "mixed":
            part.make_mixed()
        elif self.subtype == "alternative":
            part.make_alternative()
        else:
            part.make_related()
        for index, content in enumerate(self.parts):
            child = _attach(part, content)
            if index == 0:
                if self.start_type:
                    part.set_param("type", child.get_content_type(), replace=True)
                if (
                    self.inline_first
                    and not child.is_multipart()
                    and "Content-Disposition" not in child
                ):
                    child["Content-Disposition"] = "inline"


@dataclass(frozen=True, slots=True)
class _WithId(Content):
    """A resource of a ``multipart/related``: ``content`` with ``Content-ID: <cid>``."""

    cid: str
    content: Content

    @property
    def content_type(self) -> str:
        return self.content.content_type

    def _fill(self, part: MIMEPart) -> None:
        self.content._fill(part)
        del part["Content-ID"]
        part["Content-ID"] = f"<{self.cid}>"


def text(s: str) -> Content:
    """``text/plain; charset="utf-8"``; the stdlib picks the transfer encoding."""
    return _Single(s, "text", "plain")


def html(s: str) -> Content:
    """``text/html; charset="utf-8"``."""
    return _Single(s, "text", "html")


def text_monospace(s: str) -> Content:
    """Plain text with an HTML ``<pre>`` alternative, so that mail readers that render
    HTML (Gmail, for one) show it in a fixed-width font (F120)."""
    body = (
        '<html><body><pre style="font-family: monospace">'
        f"{_escape_html(s, quote=False)}</pre></body></html>\n"
    )
    return alternatives(text(s), html(body))


def custom(
    data: str | bytes,
    content_type: str,
    *,
    filename: str | None = None,
    disposition: str | None = None,
    cte: str | None = None,
    extra_headers: HeadersLike = (),
) -> Content:
    """Any single-part content.

    ``content_type`` may carry parameters (``"text/csv; header=present"``). Text (``str``
    with a ``text/*`` type) is sent as UTF-8; other ``str`` data is encoded as UTF-8 and,
    like bytes, sent base64 unless ``cte`` says otherwise. ``filename`` implies
    ``Content-Disposition: attachment`` unless ``disposition`` is given. ``extra_headers``
    are added to the part.
    """
    maintype, subtype, params = _split_type(content_type)
    if maintype == "multipart":
        raise ValueError("use alternatives(), mixed() or with_related() for multipart content")
    if not isinstance(data, str | bytes):
        raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
    return _Single(
        data,
        maintype,
        subtype,
        params=params,
        filename=filename,
        disposition=disposition,
        cte=cte,
        headers=_header_pairs(extra_headers),
    )


def _contents(contents: tuple[Content | str, ...], what: str) -> tuple[Content, ...]:
    if not contents:
        raise ValueError(f"{what}() needs at least one part")
    out = tuple(text(c) if isinstance(c, str) else c for c in contents)
    for content in out:
        if not isinstance(content, Content):
            raise TypeError(f"{what}() takes Content values, not {type(content).__name__}")
    return out


def alternatives(*contents: Content | str) -> Content:
    """``multipart/alternative``: the same message in several forms, plainest first
    (RFC 2046 5.1.4: readers show the last form they can)."""
    return _Multipart("alternative", _contents(contents, "alternatives"))


def mixed(*contents: Content | str) -> Content:
    """``multipart/mixed``: parts shown one after the other."""
    return _Multipart("mixed", _contents(contents, "mixed"))


def with_related(
    main_html: Content | str,
    resources: Mapping[str, Content] | Iterable[tuple[str, Content]],
) -> Content:
    """``multipart/related``: an HTML body and the resources it refers to as
    ``cid:<name>`` (inline images, say), each given ``Content-ID: <name>`` (RFC 2392).

    ``main_html`` text is taken as HTML.
    """
    main = html(main_html) if isinstance(main_html, str) else main_html
    pairs = tuple(resources.items()) if isinstance(resources, Mapping) else tuple(resources)
    parts: list[Content] = [main]
    seen: set[str] = set()
    for cid, content in pairs:
        if not cid or any(c in cid for c in '<>"\\ \t\r\n') or not cid.isascii():
            raise ValueError(
                f"a content id must be plain ASCII without <>, quotes or spaces: {cid!r}"
            )
        if cid in seen:
            raise ValueError(f"content id {cid!r} given twice")
        seen.add(cid)
        if not isinstance(content, Content):
            raise TypeError(f"resource {cid!r} must be Content, not {type(content).__name__}")
        parts.append(_WithId(cid, content))
    return _Multipart("related", tuple(parts), start_type=True)


def of_file(path: str | os.PathLike[str], content_type: str | None = None) -> Content:
    """The content of a file, named after it (``Content-Disposition: inline``).

    The type is guessed from the file name with :mod:`mimetypes` unless given
    (``application/octet-stream`` when nothing fits). A ``text/*`` file that is valid
    UTF-8 is sent as UTF-8 text; anything else as base64 bytes.
    """
    file = Path(path)
    raw = file.read_bytes()
    maintype, subtype, params = _split_type(content_type or guess_type(file.name))
    if maintype == "multipart":
        raise ValueError("a file cannot be sent as multipart content")
    data: str | bytes = raw
    if maintype == "text":
        with contextlib.suppress(UnicodeDecodeError):
            data = raw.decode("utf-8")
    return _Single(data, maintype, subtype, params, filename=file.name, disposition="inline")


@dataclass(frozen=True, slots=True, init=False)
class Attachment(Content):
    """A file attached to a message (F121).

    Sent with ``Content-Disposition: attachment; filename=...`` and the name also as the
    ``name`` parameter of ``Content-Type`` (for older readers); the stdlib encodes a
    non-ASCII name per RFC 2231. ``content_type`` is guessed from ``filename`` when not
    given. ``str`` data with a ``text/*`` type goes as UTF-8 text.
    """

    filename: str
    data: bytes | str
    content_type: str

    def __init__(self, filename: str, data: bytes | str, content_type: str | None = None) -> None:
        if not isinstance(filename, str) or not filename:
            raise ValueError("an attachment needs a file name")
        if not isinstance(data, bytes | str):
            raise TypeError(f"data must be bytes or str, not {type(data).__name__}")
        ctype = content_type or guess_type(filename)
        maintype, _, _ = _split_type(ctype)
        if maintype == "multipart":
            raise ValueError("an attachment cannot be multipart")
        object.__setattr__(self, "filename", filename)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "content_type", ctype)

    @classmethod
    def of_file(
        cls,
        path: str | os.PathLike[str],
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> Attachment:
        """Attach a file from disk, under its own name unless ``filename`` is given."""
        file = Path(path)
        return cls(filename or file.name, file.read_bytes(), content_type)

    def _fill(self, part: MIMEPart) -> None:
        maintype, subtype, params = _split_type(self.content_type)
        leaf = _Single(
            self.data,
            maintype,
            subtype,
            params=(*params, ("name", self.filename)),
            filename=self.filename,
            disposition="attachment",
        )
        leaf._fill(part)


# ---------------------------------------------------------------------------------------
# Addresses


_REGISTRY = HeaderRegistry()


def _parse_mailboxes(value: str, what: str) -> list[MailboxHeader]:
    try:
        header = _REGISTRY("To", value)
    except Exception as exc:  # the stdlib parser raises anything from IndexError up
        raise ParseError(f"{what}: not an address: {value!r}") from exc
    defects = [d for d in header.defects if not isinstance(d, email.errors.NonASCIILocalPartDefect)]
    if not isinstance(header, AddressHeader) or defects or not header.addresses:
        detail = f" ({defects[0]})" if defects else ""
        raise ParseError(f"{what}: not an address: {value!r}{detail}")
    return list(header.addresses)


def _bare(mailbox: MailboxHeader, what: str) -> Address:
    """The envelope address of a header mailbox, checked against RFC 5321/6531."""
    try:
        return Address.parse(mailbox.addr_spec)
    except ParseError as exc:
        raise ParseError(f"{what}: {exc}") from None


def _mailboxes(value: Addresses | None, what: str) -> list[MailboxHeader]:
    if value is None:
        return []
    items: list[object] = (
        [value] if isinstance(value, str | Address | MailboxHeader) else list(value)
    )
    out: list[MailboxHeader] = []
    for item in items:
        if isinstance(item, Address):
            if not item.domain:
                raise ParseError(f"{what}: {item} has no domain")
            out.append(MailboxHeader(username=item.local_part, domain=item.domain))
        elif isinstance(item, MailboxHeader):
            out.append(item)
        elif isinstance(item, str):
            out.extend(_parse_mailboxes(item, what))
        else:
            raise TypeError(f"{what}: not an address: {item!r}")
    for mailbox in out:
        _bare(mailbox, what)
    return out


def _for_header(mailboxes: list[MailboxHeader], *, utf8: bool) -> tuple[MailboxHeader, ...]:
    """Mailboxes as they go in a header: without SMTPUTF8, non-ASCII domains become
    A-labels (RFC 5890), since the stdlib would otherwise write encoded-words into them."""
    if utf8:
        return tuple(mailboxes)
    return tuple(
        MailboxHeader(
            display_name=m.display_name,
            username=m.username,
            domain=_bare(m, "address").ascii_domain,
        )
        for m in mailboxes
    )


# ---------------------------------------------------------------------------------------
# Building


# Header fields build() writes from its own arguments; giving them in extra_headers would
# make two. Message-ID and Date in extra_headers are honoured instead of generated.
_RESERVED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "in-reply-to",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)


def _tracing_headers() -> list[tuple[str, str]]:
    """Where a message was sent from: the host, the user (when known), the program."""
    try:
        user: str | None = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry
        user = None
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    found = [("X-Sending-Host", socket.gethostname()), ("X-Sending-User", user)]
    return [(n, v) for n, v in [*found, ("X-Sending-Program", program)] if v]


def _msg_id(value: str) -> str:
    value = value.strip()
    if not value or any(c in value for c in " \t\r\n"):
        raise ValueError(f"not a message id: {value!r}")
    return value if value.startswith("<") and value.endswith(">") else f"<{value}>"


def build(
    *,
    from_: AddressLike,
    to: Addresses,
    cc: Addresses = (),
    bcc: Addresses = (),
    reply_to: Addresses | None = None,
    subject: str,
    content: Content | str,
    attachments: Iterable[Attachment] = (),
    extra_headers: HeadersLike = (),
    message_id: str | None = None,
    in_reply_to: str | None = None,
    date: datetime.datetime | str | None = None,
    auto_generated: bool = False,
    domain: str | None = None,
    tracing_headers: bool = False,
) -> EmailMessage:
    """Compose a message (F119).

    Header fields, in this order: ``extra_headers``; ``From``; ``To``; ``Cc``;
    ``Reply-To``; ``Subject``; ``Message-ID``; ``In-Reply-To``; ``Auto-Submitted:
    auto-generated`` and ``Precedence: bulk`` when ``auto_generated``; ``Date``; with
    ``tracing_headers``, ``X-Sending-Host``, ``X-Sending-User`` and ``X-Sending-Program``
    (this machine's name, the user and the program: off by default, as they tell
    strangers about the sender's system); then the MIME fields. ``bcc`` is checked but
    **never written**: Bcc recipients exist only in the envelope (see :func:`send`).

    ``Message-ID`` is ``message_id``, or the one in ``extra_headers``, or a fresh
    :func:`email.utils.make_msgid` id on ``domain`` (by default the From address's
    domain, so that no DNS lookup is made); there is only ever one, and two different
    ones given raise ValueError. ``Date`` is ``date`` (a datetime, or text used as is),
    or a ``Date`` in ``extra_headers``, or now. ``content`` text is :func:`text`.
    With ``attachments`` the message is ``multipart/mixed``: the content first
    (``Content-Disposition: inline``), then each attachment.

    The message's policy is ``policy.SMTP``, or ``policy.SMTPUTF8`` when an address in the
    header has a non-ASCII local part (both with 7-bit content transfer encodings).
    Bad addresses raise :class:`~smtpx.errors.ParseError`.
    """
    from_list = _mailboxes(from_, "from_")
    if len(from_list) != 1:
        raise ValueError(f"from_ must be exactly one address, not {len(from_list)}")
    to_list = _mailboxes(to, "to")
    cc_list = _mailboxes(cc, "cc")
    bcc_list = _mailboxes(bcc, "bcc")
    reply_list = _mailboxes(reply_to, "reply_to")
    if not (to_list or cc_list or bcc_list):
        raise ValueError("a message needs at least one recipient (to, cc or bcc)")
    body = text(content) if isinstance(content, str) else content
    if not isinstance(body, Content):
        raise TypeError(f"content must be Content or str, not {type(body).__name__}")
    attached = tuple(attachments)
    for item in attached:
        if not isinstance(item, Attachment):
            raise TypeError(f"attachments must be Attachment values, not {type(item).__name__}")

    extras: list[tuple[str, str]] = []
    ids = [] if message_id is None else [_msg_id(message_id)]
    dates: list[str] = []
    extra_names: set[str] = set()
    for name, value in _header_pairs(extra_headers):
        lower = name.lower()
        if lower in _RESERVED:
            raise ValueError(f"{name} is written by build(); give it as an argument")
        if lower == "message-id":
            ids.append(_msg_id(value))
        elif lower == "date":
            dates.append(value)
        else:
            extras.append((name, value))
            extra_names.add(lower)
    if len(set(ids)) > 1:
        raise ValueError(f"two different Message-IDs given: {', '.join(sorted(set(ids)))}")
    if date is not None:
        dates.insert(0, date if isinstance(date, str) else email.utils.format_datetime(date))
    if len(set(dates)) > 1:
        raise ValueError("two different Dates given")

    all_mailboxes = [*from_list, *to_list, *cc_list, *reply_list]
    utf8 = any(not m.username.isascii() for m in all_mailboxes)
    msg = EmailMessage(policy=_UTF8_POLICY if utf8 else _ASCII_POLICY)
    for name, value in extras:
        msg[name] = value
    msg["From"] = _for_header(from_list, utf8=utf8)[0]
    if to_list:
        msg["To"] = _for_header(to_list, utf8=utf8)
    if cc_list:
        msg["Cc"] = _for_header(cc_list, utf8=utf8)
    if reply_list:
        msg["Reply-To"] = _for_header(reply_list, utf8=utf8)
    msg["Subject"] = subject
    if ids:
        msg["Message-ID"] = ids[0]
    else:
        id_domain = domain or _bare(from_list[0], "from_").ascii_domain
        msg["Message-ID"] = email.utils.make_msgid(domain=id_domain)
    if in_reply_to is not None:
        msg["In-Reply-To"] = _msg_id(in_reply_to)
    if auto_generated:
        # RFC 3834 5: mark it so that autoresponders leave it alone.
        if "auto-submitted" not in extra_names:
            msg["Auto-Submitted"] = "auto-generated"
        if "precedence" not in extra_names:
            msg["Precedence"] = "bulk"
    msg["Date"] = dates[0] if dates else email.utils.formatdate(localtime=True)
    if tracing_headers:
        for name, value in _tracing_headers():
            if name.lower() not in extra_names:
                msg[name] = value
    msg["MIME-Version"] = "1.0"
    if attached:
        body = _Multipart("mixed", (body, *attached), inline_first=True)
    body._fill(msg)
    return msg


# ---------------------------------------------------------------------------------------
# Sending


def _wire_bytes(message: EmailMessage | bytes) -> bytes:
    """The message as it goes into DATA (not dot-stuffed; Bcc is left to
    :func:`_without_bcc`): an ``EmailMessage`` is written with its own policy but CRLF
    line ends and no ``>From`` mangling; bytes are taken as they are.
    """
    if isinstance(message, EmailMessage):
        return message.as_bytes(policy=message.policy.clone(linesep="\r\n", mangle_from_=False))
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    raise TypeError(f"message must be an EmailMessage or bytes, not {type(message).__name__}")


def _without_bcc(envelope: Envelope) -> Envelope:
    # Like smtplib.send_message: a Bcc field in a prebuilt message would show the blind
    # recipients to everyone (RFC 5322 3.6.3).
    if envelope.find_all_headers("Bcc") or envelope.find_all_headers("Resent-Bcc"):
        return envelope.filter_headers(lambda name, _: name.lower() not in ("bcc", "resent-bcc"))
    return envelope


async def send_message(
    message: EmailMessage | bytes,
    *,
    sender: Sender | Address | str,
    recipients: Iterable[Address | str],
    host: str = "localhost",
    port: int = 25,
    config: ClientConfig | None = None,
    credentials: Credentials | None = None,
    resolver: Resolver | None = None,
    sender_args: MailParams | str | None = None,
) -> EnvelopeStatus:
    """Send a prebuilt message (F118 ``Expert``) and return the raw status.

    ``sender`` and ``recipients`` are envelope addresses (``a@b``, ``<a@b>``, ``<>`` for
    the null sender). An ``EmailMessage`` is serialised with CRLF line ends; bytes go as
    they are (bare LF becomes CRLF). ``Bcc`` and ``Resent-Bcc`` fields are removed from
    either. Connection errors raise (see :func:`smtpx.client.connect`); rejections come
    back as the status. The client's info lines are logged at debug (F116, as
    async_smtp's Simplemail does: a one-off send does not fill an info log).
    """
    envelope = Envelope.create(
        sender=sender,
        recipients=recipients,
        message=_wire_bytes(message),
        sender_args=sender_args if sender_args is not None else MailParams(),
    )
    envelope = _without_bcc(envelope)
    with remapped(QUIET):
        async with connect(
            host, port, config=config, credentials=credentials, resolver=resolver
        ) as client:
            return await client.send(envelope)


def _envelope_sender(value: Sender | AddressLike) -> Sender:
    if isinstance(value, Sender):
        return value
    if isinstance(value, str) and value.strip() == "<>":
        return Sender.NULL
    mailboxes = _mailboxes(value, "bounce_to")
    if len(mailboxes) != 1:
        raise ValueError("bounce_to must be exactly one address")
    return Sender(_bare(mailboxes[0], "bounce_to"))


async def send(
    *,
    host: str = "localhost",
    port: int = 25,
    config: ClientConfig | None = None,
    credentials: Credentials | None = None,
    resolver: Resolver | None = None,
    from_: AddressLike,
    to: Addresses,
    cc: Addresses = (),
    bcc: Addresses = (),
    reply_to: Addresses | None = None,
    subject: str,
    content: Content | str,
    attachments: Iterable[Attachment] = (),
    extra_headers: HeadersLike = (),
    message_id: str | None = None,
    in_reply_to: str | None = None,
    date: datetime.datetime | str | None = None,
    auto_generated: bool = False,
    domain: str | None = None,
    tracing_headers: bool = False,
    bounce_to: Sender | AddressLike | None = None,
    sender_args: MailParams | str | None = None,
    allow_rejected_recipients: bool = False,
) -> Accepted:
    """Compose a message with :func:`build` and send it to ``host:port`` (F118).

    The envelope sender is ``bounce_to`` (``"<>"`` for the null sender), else the bare
    From address; the envelope recipients are ``to``, ``cc`` and ``bcc``, each address
    once. Any rejection (of the sender, of the message, or of a recipient unless
    ``allow_rejected_recipients``) raises :class:`~smtpx.client.DeliveryError`, whose
    ``status`` says what happened; otherwise the :class:`~smtpx.client.Accepted` status is
    returned. Connection and session errors raise as from :func:`smtpx.client.connect`.
    """
    message = build(
        from_=from_,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        content=content,
        attachments=attachments,
        extra_headers=extra_headers,
        message_id=message_id,
        in_reply_to=in_reply_to,
        date=date,
        auto_generated=auto_generated,
        domain=domain,
        tracing_headers=tracing_headers,
    )
    sender = (
        _envelope_sender(bounce_to)
        if bounce_to is not None
        else Sender(_bare(_mailboxes(from_, "from_")[0], "from_"))
    )
    recipients = dict.fromkeys(
        _bare(mailbox, "recipient")
        for mailbox in (*_mailboxes(to, "to"), *_mailboxes(cc, "cc"), *_mailboxes(bcc, "bcc"))
    )
    status = await send_message(
        message,
        sender=sender,
        recipients=recipients,
        host=host,
        port=port,
        config=config,
        credentials=credentials,
        resolver=resolver,
        sender_args=sender_args,
    )
    if isinstance(status, Accepted):
        status.ok_or_error(allow_rejected_recipients=allow_rejected_recipients)
        return status
    raise DeliveryError(status)
