"""Local delivery into maildirs: ``<root>/<domain>/<local part>/new/``.

Each message is written to ``tmp/``, flushed, and renamed into ``new/`` (the maildir
protocol); ``new/`` is flushed too, so the rename is durable before the spool forgets
the message. ``Return-Path`` and ``Delivered-To`` are added on top (RFC 5321 4.4: the
final delivery MTA records the envelope sender). Files use LF line endings, as maildir
readers expect. A subaddress (``alice+tag@d``) goes into its mailbox's maildir (alice's),
as the recipient table says; ``Delivered-To`` keeps the whole address.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from smtpx.errors import ParseError
from smtpx.protocol import replies
from smtpx.protocol.domains import domain_to_ascii
from smtpx.protocol.replies import Reply
from smtpx.spool.manifest import fsync_directory
from smtpx.spool.message import SpooledMessage

__all__ = ["MaildirAgent"]

_SAFE = re.compile(r"[^A-Za-z0-9._+=-]")
SLICE = 1 << 20  # octets converted and written at a time


class MaildirAgent:
    """A :class:`~smtpx.spool.spool.LocalAgent` that writes maildirs under ``root``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        hostname: str | None = None,
        *,
        mailbox_of: Callable[[str], str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.hostname = _SAFE.sub("_", hostname or socket.gethostname())
        # The recipient table's mailbox for an address (alice+tag@d: alice@d).
        self.mailbox_of = mailbox_of or _itself
        self._counter = itertools.count()

    def mailbox(self, recipient: str) -> Path:
        """The maildir of ``recipient``: its domain and local part, lower-cased, made safe
        for file names (no path can escape ``root``). The domain is in its A-label form
        (IDNA 2008), so every way of writing it (U-labels, fullwidth letters, A-labels)
        is one folder."""
        local, _, domain = recipient.rpartition("@")
        if not local:
            local, domain = domain, "localhost"  # <Postmaster>
        return self.root / _SAFE.sub("_", _folder(domain)) / _SAFE.sub("_", local.lower())

    async def deliver(self, message: SpooledMessage, content: bytes) -> list[tuple[str, Reply]]:
        return await asyncio.to_thread(self._deliver, message, content)

    def _deliver(self, message: SpooledMessage, content: bytes) -> list[tuple[str, Reply]]:
        results = []
        for recipient in message.recipients:
            headers = f"Return-Path: {message.sender}\nDelivered-To: {recipient}\n".encode()
            try:
                path = self._write(self.mailbox(self.mailbox_of(recipient)), headers, content)
            except OSError as exc:
                results.append(
                    (recipient, replies.local_error(f"Cannot write the mailbox: {exc.strerror}"))
                )
                continue
            results.append((recipient, replies.ok(f"Delivered to {path.name}")))
        return results

    def _write(self, mailbox: Path, headers: bytes, content: bytes) -> Path:
        """The message (``headers``, then ``content`` with LF line endings, converted a
        slice at a time: a large message is not copied whole once more) in a new file of
        ``mailbox``, durably."""
        for sub in ("tmp", "new", "cur"):
            (mailbox / sub).mkdir(parents=True, exist_ok=True)
        name = f"{time.time():.6f}.P{os.getpid()}Q{next(self._counter)}.{self.hostname}"
        temporary = mailbox / "tmp" / name
        with open(temporary, "wb") as file:
            file.write(headers)
            for part in lf_slices(content):
                file.write(part)
            file.flush()
            os.fsync(file.fileno())
        final = mailbox / "new" / name
        os.rename(temporary, final)
        # The rename is durable only once new/ is: without this a crash could leave the
        # message in tmp/ (which readers skip, and clean) after the spool forgot it.
        fsync_directory(final.parent)
        return final


def lf_slices(content: bytes, size: int = SLICE) -> Iterator[bytes]:
    """``content`` with CRLF turned into LF, in slices of about ``size`` octets (a CRLF
    is never cut in two)."""
    start, end = 0, len(content)
    while start < end:
        stop = min(start + size, end)
        if content[stop - 1 : stop] == b"\r" and content[stop : stop + 1] == b"\n":
            stop += 1
        yield content[start:stop].replace(b"\r\n", b"\n")
        start = stop


def _itself(recipient: str) -> str:
    return recipient


def _folder(domain: str) -> str:
    try:
        return domain_to_ascii(domain).lower()
    except ParseError:  # not from the spool, whose addresses were all parsed
        return domain.lower()
