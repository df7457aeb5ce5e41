"""The BSMTP writer (F73): envelopes written as a batch SMTP transcript, no replies read.

Batch SMTP (RFC 2442) is the client's half of an SMTP dialogue kept in a file or a pipe::

    HELO bsmtp
    MAIL FROM:<sender@example.org>
    RCPT TO:<rcpt@example.org>
    DATA
    <the message, dot-stuffed, CRLF line ends>
    .
    RSET

One ``MAIL``/``RCPT``.../``DATA``/content/``RSET`` block per envelope and no ``QUIT``, as
``async_smtp``'s ``Client.Bsmtp.write`` does. The server reads it back with its BSMTP
reader (F122). Lines are written by the protocol core's command records and
:func:`~smtpx.protocol.dot_stuff`, the same code as a live session uses; there is no TLS
and no AUTH in a batch.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Protocol

from smtpx.envelope import Envelope
from smtpx.protocol.commands import Data, Helo, Mail, Rcpt, Rset
from smtpx.protocol.data import dot_stuff

__all__ = ["BinaryWriter", "bsmtp_bytes", "write_bsmtp"]


class BinaryWriter(Protocol):
    """Anything with ``write(bytes)``: a binary file, ``io.BytesIO``, ``sys.stdout.buffer``."""

    def write(self, data: bytes, /) -> object: ...


def _envelope_bytes(envelope: Envelope) -> bytes:
    info = envelope.info
    return b"".join(
        (
            Mail(info.sender, info.sender_args).to_bytes(),
            *(Rcpt(recipient).to_bytes() for recipient in info.recipients),
            Data().to_bytes(),
            # CRLF line ends, leading dots doubled, a final CRLF if missing, ".CRLF".
            dot_stuff(envelope.message),
            Rset().to_bytes(),
        )
    )


def write_bsmtp(
    out: BinaryWriter,
    envelopes: Iterable[Envelope],
    *,
    helo: str = "bsmtp",
    prelude: bool = True,
) -> None:
    """Write ``envelopes`` to ``out`` as BSMTP: ``HELO <helo>`` (left out when
    ``prelude`` is false, to append to an existing batch), then for each envelope
    ``MAIL FROM`` with its ``sender_args`` as given, one ``RCPT TO`` per recipient,
    ``DATA``, the dot-stuffed message and ``.``, and ``RSET``. No ``QUIT``.

    Each envelope is one ``write`` call; ``envelopes`` may be a lazy iterator. Nothing is
    flushed or closed: ``out`` stays the caller's.
    """
    if prelude:
        out.write(Helo(helo).to_bytes())
    for envelope in envelopes:
        if not isinstance(envelope, Envelope):
            raise TypeError(f"expected an Envelope, not {type(envelope).__name__}")
        out.write(_envelope_bytes(envelope))


def bsmtp_bytes(
    envelopes: Iterable[Envelope],
    *,
    helo: str = "bsmtp",
    prelude: bool = True,
) -> bytes:
    """The BSMTP text of ``envelopes`` (see :func:`write_bsmtp`) as one bytes value."""
    buffer = io.BytesIO()
    write_bsmtp(buffer, envelopes, helo=helo, prelude=prelude)
    return buffer.getvalue()
