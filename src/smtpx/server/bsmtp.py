"""Reading BSMTP: a session transcript (commands and content, no replies) turned back into
envelopes (F122).

Each accepted message comes out as an :class:`~smtpx.envelope.Envelope`; each command the
session refuses comes out as the :class:`~smtpx.protocol.Reply` a server would have sent.
Parameters are checked as if the server had advertised every extension smtpx knows, since
no server ever answered the writer's HELO.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO

from smtpx.envelope import Envelope, EnvelopeId, EnvelopeInfo
from smtpx.errors import RemoteProtocolError
from smtpx.protocol import replies
from smtpx.protocol.addresses import Address
from smtpx.protocol.commands import Bdat, Command, Data, Ehlo, Helo, Mail, Quit, Rcpt, Rset
from smtpx.protocol.connection import Limits, ServerConnection
from smtpx.protocol.events import NEED_DATA, ConnectionClosed, DataChunk, EndOfChunk, EndOfData
from smtpx.protocol.extensions import Extensions
from smtpx.protocol.replies import Reply

__all__ = ["read_bsmtp"]

# F122: BSMTP files may hold big messages.
MAX_MESSAGE_SIZE = 250 * 1024 * 1024

_EVERYTHING = Extensions(
    pipelining=True,
    size=0,
    eightbitmime=True,
    smtputf8=True,
    enhancedstatuscodes=True,
    chunking=True,
    binarymime=True,
    dsn=True,
)


def read_bsmtp(source: bytes | IO[bytes], *, chunk_size: int = 65536) -> Iterator[Envelope | Reply]:
    """Envelopes and refusals, in the order of the transcript ``source``."""
    conn = ServerConnection(
        Limits(max_message_size=MAX_MESSAGE_SIZE, max_text_line=None), assume=_EVERYTHING
    )
    conn.send(replies.service_ready("bsmtp"))
    pieces = _pieces(source, chunk_size)
    mail: Mail | None = None
    recipients: list[Address] = []
    content: list[bytes] = []
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as error:
            yield error.reply
            conn.send(error.reply)
            continue
        if event is NEED_DATA:
            conn.receive_data(next(pieces, b""))
            continue
        if isinstance(event, ConnectionClosed):
            return
        if isinstance(event, DataChunk):
            content.append(event.data)
        elif isinstance(event, Mail):
            mail, recipients, content = event, [], []
            conn.send(replies.sender_ok())
        elif isinstance(event, Rcpt):
            recipients.append(event.recipient)
            conn.send(replies.recipient_ok())
        elif isinstance(event, Data):
            conn.send(replies.start_mail_input())
        elif isinstance(event, (EndOfData, EndOfChunk)):
            if isinstance(event, EndOfChunk) and not event.last:
                conn.send(replies.chunk_ok(sum(map(len, content))))
                continue
            assert mail is not None
            info = EnvelopeInfo(
                sender=mail.sender,
                sender_args=mail.params,
                recipients=tuple(recipients),
                id=EnvelopeId.create(),
            )
            yield Envelope(info=info, message=b"".join(content))
            content = []
            conn.send(replies.queued(str(info.id)))
        elif isinstance(event, Bdat):
            pass  # its octets follow as DataChunk events
        elif isinstance(event, Command):
            conn.send(_answer(event))


def _answer(command: Command) -> Reply:
    if isinstance(command, Ehlo):
        return replies.ehlo_ok("bsmtp", "", _EVERYTHING.to_lines())
    if isinstance(command, Helo):
        return replies.helo_ok("bsmtp")
    if isinstance(command, Quit):
        return replies.closing()
    if isinstance(command, Rset):
        return replies.ok()
    return replies.not_implemented(command.verb)


def _pieces(source: bytes | IO[bytes], size: int) -> Iterator[bytes]:
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    while chunk := stream.read(size):
        yield chunk
