"""In-memory SMTP sessions that record a transcript.

:class:`Session` wires a :class:`~smtpx.protocol.ClientConnection` to a
:class:`~smtpx.protocol.ServerConnection` through memory. The server side is driven by a
:class:`Handler` (override its methods to script a server); the client side is driven by
you, one step at a time. Every line that crosses is recorded::

    session = Session()
    session.start()
    session.command(Ehlo("client.example"))
    session.command(Mail(Sender.parse("<a@example.org>")))
    ...
    assert session.transcript() == '''
    S: 220 mx.test ESMTP smtpx
    C: EHLO client.example
    ...
    '''

``S:`` lines were written by the server, ``C:`` lines by the client.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from smtpx.errors import RemoteProtocolError
from smtpx.protocol import replies
from smtpx.protocol.commands import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from smtpx.protocol.connection import ClientConnection, Limits, ServerConnection
from smtpx.protocol.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    ConnectionClosed,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Response,
)
from smtpx.protocol.extensions import Extensions
from smtpx.protocol.replies import Reply, ReplyParser

__all__ = ["Handler", "ReceivedMessage", "Session", "Transcript"]

SERVER_NAME = "mx.test"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message the handler accepted."""

    mail: Mail
    recipients: tuple[Rcpt, ...]
    data: bytes


class Transcript:
    """Lines seen on the wire, by direction. Partial lines wait for their line end."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = {"C": b"", "S": b""}

    def record(self, who: str, data: bytes) -> None:
        data = self._partial[who] + data
        *whole, rest = data.split(b"\r\n")
        self._partial[who] = rest
        for line in whole:
            self.lines.append(f"{who}: {line.decode('utf-8', 'backslashreplace')}".rstrip(" "))

    def flush(self) -> None:
        """Record unfinished lines too (marked with a trailing ``⏎?``)."""
        for who, rest in self._partial.items():
            if rest:
                self.lines.append(f"{who}: {rest.decode('utf-8', 'backslashreplace')}⏎?")
                self._partial[who] = b""

    def text(self) -> str:
        return "\n".join(self.lines) + "\n" if self.lines else ""


@dataclass
class Handler:
    """A scriptable in-memory server: one method per event, each returning the reply.

    The defaults accept everything (the extensions in ``extensions`` are advertised) and
    keep accepted messages in ``messages``. ``auth`` maps a username to a password for
    AUTH PLAIN and LOGIN.
    """

    greeting: Reply = field(default_factory=lambda: replies.service_ready(SERVER_NAME))
    extensions: Extensions = field(
        default_factory=lambda: Extensions(
            pipelining=True,
            size=10_240_000,
            eightbitmime=True,
            smtputf8=True,
            enhancedstatuscodes=True,
            chunking=True,
            dsn=True,
        )
    )
    auth: dict[str, str] = field(default_factory=dict)
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")  # advertised when ``auth`` is set
    tls: bool = False  # offer and accept STARTTLS (the server needs a TLS context)
    tls_active: bool = False
    messages: list[ReceivedMessage] = field(default_factory=list)
    errors: list[RemoteProtocolError] = field(default_factory=list)
    _mail: Mail | None = None
    _rcpts: list[Rcpt] = field(default_factory=list)
    _data: list[bytes] = field(default_factory=list)
    _auth_steps: list[str] = field(default_factory=list)
    _auth_mech: str = ""

    # -- session ----------------------------------------------------------------------

    def ehlo(self, command: Ehlo) -> Reply:
        ext = self.extensions
        if self.auth:
            ext = dataclasses.replace(ext, auth=self.auth_mechanisms)
        if self.tls and not self.tls_active:
            ext = dataclasses.replace(ext, starttls=True)
        return replies.ehlo_ok(SERVER_NAME, "greets " + command.domain, ext.to_lines())

    def helo(self, command: Helo) -> Reply:
        return replies.helo_ok(SERVER_NAME)

    def mail(self, command: Mail) -> Reply:
        self._mail = command
        self._rcpts = []
        return replies.sender_ok()

    def rcpt(self, command: Rcpt) -> Reply:
        self._rcpts.append(command)
        return replies.recipient_ok()

    def data(self, command: Data) -> Reply:
        self._data = []
        return replies.start_mail_input()

    def chunk(self, data: bytes) -> None:
        self._data.append(data)

    def end_of_data(self) -> Reply:
        return self._accept()

    def end_of_chunk(self, last: bool) -> Reply:
        """A BDAT chunk has been read; the last one ends the message as the end of DATA
        does (so a script's ``end_of_data`` answers both)."""
        if not last:
            return replies.chunk_ok(sum(map(len, self._data)))
        return self.end_of_data()

    def _accept(self) -> Reply:
        assert self._mail is not None
        message = ReceivedMessage(self._mail, tuple(self._rcpts), b"".join(self._data))
        self.messages.append(message)
        self._data = []
        return replies.queued(f"MSG{len(self.messages)}")

    def other(self, command: Command) -> Reply:
        if isinstance(command, Rset):
            self._data = []
            return replies.ok()
        if isinstance(command, Noop):
            return replies.ok()
        if isinstance(command, Quit):
            return replies.closing()
        if isinstance(command, Vrfy):
            return replies.cannot_verify()
        if isinstance(command, Expn):
            return replies.not_implemented("EXPN")
        if isinstance(command, Help):
            return replies.help_text()
        if isinstance(command, StartTls):
            if not self.tls:
                return replies.tls_not_available()
            self.tls_active = True
            return replies.ready_to_start_tls()
        if isinstance(command, Auth):
            return self.auth_start(command)
        return replies.command_unrecognized(command.verb)

    # -- AUTH PLAIN / LOGIN (enough to script transcripts) -------------------------------

    def auth_start(self, command: Auth) -> Reply:
        self._auth_mech = command.mechanism
        self._auth_steps = []
        if command.initial_response is not None:
            return self.auth_response(AuthResponse(command.initial_response))
        if command.mechanism == "LOGIN":
            return replies.auth_challenge(_b64("Username:"))
        return replies.auth_challenge("")

    def auth_response(self, response: AuthResponse) -> Reply:
        if response.cancelled:
            return replies.auth_cancelled()
        try:
            value = base64.b64decode(response.line, validate=True).decode("utf-8")
        except ValueError:
            return replies.syntax_error("Invalid base64 data")
        self._auth_steps.append(value)
        if self._auth_mech == "PLAIN":
            _, user, password = ([*value.split("\x00"), "", "", ""])[:3]
        elif len(self._auth_steps) == 1:
            return replies.auth_challenge(_b64("Password:"))
        else:
            user, password = self._auth_steps
        if self.auth.get(user) == password and user:
            return replies.auth_succeeded()
        return replies.auth_failed()

    def protocol_error(self, error: RemoteProtocolError) -> Reply:
        self.errors.append(error)
        return error.reply

    # -- dispatch ---------------------------------------------------------------------

    def handle(self, event: object) -> Reply | None:
        if isinstance(event, Ehlo):
            return self.ehlo(event)
        if isinstance(event, Helo):
            return self.helo(event)
        if isinstance(event, Mail):
            return self.mail(event)
        if isinstance(event, Rcpt):
            return self.rcpt(event)
        if isinstance(event, Data):
            return self.data(event)
        if isinstance(event, Bdat):
            return None
        if isinstance(event, DataChunk):
            self.chunk(event.data)
            return None
        if isinstance(event, EndOfData):
            return self.end_of_data()
        if isinstance(event, EndOfChunk):
            return self.end_of_chunk(event.last)
        if isinstance(event, AuthResponse):
            return self.auth_response(event)
        if isinstance(event, Command):
            return self.other(event)
        return None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


class Session:
    """A client connection and a server connection joined in memory."""

    def __init__(self, handler: Handler | None = None, *, limits: Limits | None = None) -> None:
        self.handler = handler if handler is not None else Handler()
        self.client = ClientConnection()
        self.server = ServerConnection(limits)
        self.record = Transcript()
        self.responses: list[Response] = []
        self.server_closed = False
        self._raw_replies = ReplyParser()

    def start(self) -> Reply:
        """The server greets; return the greeting the client received."""
        self.server.send(self.handler.greeting)
        (response,) = self.pump()
        return response.reply

    def command(self, *commands: Command) -> list[Reply]:
        """Send the commands in one flight (pipelined); return their replies."""
        for command in commands:
            self.client.send(command)
        return [r.reply for r in self.pump()]

    def send_raw(self, data: bytes) -> list[Reply]:
        """Bytes straight from the client, bypassing its checks (for hostile input).

        The replies are parsed apart from the client connection, which is left behind:
        after raw input, keep talking raw.
        """
        self.record.record("C", data)
        self.server.receive_data(data)
        self._drive_server()
        out = self.server.data_to_send()
        self.record.record("S", out)
        self._raw_replies.feed(out)
        return list(self._raw_replies)

    def message(self, body: bytes, *chunks: bytes) -> Reply:
        """Send content after a 354, then the terminator; return the final reply."""
        for piece in (body, *chunks):
            self.client.send(DataChunk(piece))
        self.client.send(EndOfData())
        (response,) = self.pump()
        return response.reply

    def bdat(self, *chunks: bytes) -> list[Reply]:
        """Send each chunk as one BDAT, the last one with LAST, pipelined."""
        for i, chunk in enumerate(chunks):
            self.client.send(Bdat(len(chunk), last=i == len(chunks) - 1))
            self.client.send(DataChunk(chunk))
        return [r.reply for r in self.pump()]

    def auth_response(self, text: str) -> Reply:
        self.client.send(AuthResponse(text))
        (response,) = self.pump()
        return response.reply

    def close_client(self) -> None:
        """The client closes its end without QUIT."""
        self.server.receive_data(b"")
        self._run_server()

    def pump(self) -> list[Response]:
        """Move bytes both ways until neither side has anything to say."""
        out = self.client.data_to_send()
        if out:
            self.record.record("C", out)
            self.server.receive_data(out)
        return self._run_server()

    def _run_server(self) -> list[Response]:
        events: list[Response] = []
        while True:
            self._drive_server()
            out = self.server.data_to_send()
            if not out:
                break
            self.record.record("S", out)
            self.client.receive_data(out)
            events.extend(self._client_events())
            more = self.client.data_to_send()
            if more:
                self.record.record("C", more)
                self.server.receive_data(more)
        self.responses.extend(events)
        return events

    def _client_events(self) -> Iterable[Response]:
        while True:
            event = self.client.next_event()
            if isinstance(event, Response):
                yield event
            else:
                return

    def _drive_server(self) -> None:
        server = self.server
        while True:
            try:
                event = server.next_event()
            except RemoteProtocolError as error:
                server.send(self.handler.protocol_error(error))
                continue
            if event is NEED_DATA or event is PAUSED:
                return
            if isinstance(event, ConnectionClosed):
                self.server_closed = True
                return
            reply = self.handler.handle(event)
            if reply is not None:
                server.send(reply)

    def transcript(self) -> str:
        self.record.flush()
        return self.record.text()
