"""Local delivery into maildirs: ``<root>/<domain>/<local part>/new/``.

Each message is written to ``tmp/``, flushed, and renamed into ``new/`` (the maildir
protocol); ``new/`` is flushed too, so the rename is durable before the spool forgets
the message. ``Return-Path`` and ``Delivered-To`` are added on top (RFC 5321 4.4: the
final delivery MTA records the envelope sender). Files use LF line endings, as maildir
readers expect. The content is read, converted and written a slice at a time (a large
message is never whole in memory), and a file is renamed into ``new/`` only once all of
it was read: a body found damaged on the way leaves nothing behind. A subaddress
(``alice+tag@d``) goes into its mailbox's maildir (alice's), as the recipient table
says; ``Delivered-To`` keeps the whole address.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from smtpx.content import CHUNK, Content, ContentUnreadable, read_chunks
from smtpx.errors import ParseError
from smtpx.protocol import replies
from smtpx.protocol.data import LfLines
from smtpx.protocol.domains import domain_to_ascii
from smtpx.protocol.replies import Reply
from smtpx.spool.manifest import fsync_directory
from smtpx.spool.message import SpooledMessage

__all__ = ["MaildirAgent"]

_SAFE = re.compile(r"[^A-Za-z0-9._+=-]")
SLICE = CHUNK  # octets converted and written at a time


class MaildirAgent:
    """A :class:`~smtpx.spool.spool.LocalAgent` that writes maildirs under ``root``."""

    reads_chunks = True  # takes content read a chunk at a time (ChunkReadingAgent)

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

    async def deliver(self, message: SpooledMessage, content: Content) -> list[tuple[str, Reply]]:
        return await asyncio.to_thread(self._deliver, message, content)

    def _deliver(self, message: SpooledMessage, content: Content) -> list[tuple[str, Reply]]:
        results = []
        for recipient in message.recipients:
            headers = f"Return-Path: {message.sender}\nDelivered-To: {recipient}\n".encode()
            try:
                path = self._write(self.mailbox(self.mailbox_of(recipient)), headers, content)
            except ContentUnreadable as exc:  # the spool's disk: this recipient later
                reply = replies.local_error(str(exc))
            except OSError as exc:
                reply = replies.local_error(f"Cannot write the mailbox: {exc.strerror}")
            else:
                reply = replies.ok(f"Delivered to {path.name}")
            results.append((recipient, reply))
        return results

    def _write(self, mailbox: Path, headers: bytes, content: Content) -> Path:
        """The message (``headers``, then ``content`` with LF line endings, read and
        converted a slice at a time) in a new file of ``mailbox``, durably. Whatever
        fails (reading the content included), the file in ``tmp/`` is removed."""
        for sub in ("tmp", "new", "cur"):
            (mailbox / sub).mkdir(parents=True, exist_ok=True)
        name = f"{time.time():.6f}.P{os.getpid()}Q{next(self._counter)}.{self.hostname}"
        temporary = mailbox / "tmp" / name
        try:
            with open(temporary, "wb") as file:
                file.write(headers)
                # (A failure to read the content is not the mailbox's: ContentUnreadable.)
                for part in lf_chunks(read_chunks(content, SLICE)):
                    file.write(part)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        final = mailbox / "new" / name
        os.rename(temporary, final)
        # The rename is durable only once new/ is: without this a crash could leave the
        # message in tmp/ (which readers skip, and clean) after the spool forgot it.
        fsync_directory(final.parent)
        return final


def lf_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The ``chunks`` with CRLF turned into LF, a CRLF cut between two chunks
    included."""
    lines = LfLines()
    for chunk in chunks:
        if part := lines.convert(chunk):
            yield part
    if tail := lines.end():
        yield tail


def _itself(recipient: str) -> str:
    return recipient


def _folder(domain: str) -> str:
    try:
        return domain_to_ascii(domain).lower()
    except ParseError:  # not from the spool, whose addresses were all parsed
        return domain.lower()
