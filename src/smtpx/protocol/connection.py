"""The two ends of an SMTP session, sans-I/O.

Bytes go in with ``receive_data()`` (``b""`` means the peer closed), events come out of
``next_event()``, and what you ``send()`` comes back out of ``data_to_send()`` as bytes to
write. Nothing here reads a socket, starts a task or looks at a clock, so the same core
serves the asyncio server and client, BSMTP files, and in-memory tests.

Both roles follow :mod:`smtpx.protocol.states`: the server moves when it sends a reply,
the client when it receives one.

Server::

    conn = ServerConnection()
    conn.send(replies.service_ready("mx.example.org"))
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            conn.send(exc.reply)      # 500/501/503/552/...: the core chose the reply
            continue
        if event is NEED_DATA:
            write(conn.data_to_send()); conn.receive_data(read()); continue
        ...                           # a command, DataChunk, EndOfData, ...
        conn.send(reply)

Pipelined commands are taken one at a time: after an event that needs a reply,
``next_event()`` returns ``PAUSED`` until you ``send()`` it. Replies therefore leave in
the order the commands came, and a server that only writes when ``next_event()`` says
``NEED_DATA`` sends one batch of replies per batch of pipelined commands (RFC 2920).

LMTP (RFC 2033) is the same session with two differences, both here: ``LHLO`` is the
greeting (HELO and EHLO are unknown commands, and LHLO is one to an SMTP server), and the
end of the message content (DATA's final dot, or the last BDAT) gets one reply per
accepted recipient, in RCPT order (section 4.2): ``replies_owed`` says how many a server
still owes, and a client sees each as a :class:`Response`.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass

from smtpx.errors import LocalProtocolError, ParseError, RemoteProtocolError, UnknownCommand
from smtpx.protocol import replies
from smtpx.protocol.commands import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    StartTls,
    parse_command,
)
from smtpx.protocol.data import BareNewlines, DataReader, DotStuffer
from smtpx.protocol.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    ConnectionClosed,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Response,
    Sentinel,
)
from smtpx.protocol.extensions import Extensions
from smtpx.protocol.lenient import STRICT, AddressGrammar
from smtpx.protocol.replies import Reply, ReplyParser
from smtpx.protocol.states import (
    ALLOWED,
    AUTH_RESPONSE,
    BDAT_LAST,
    CONNECT,
    END_OF_DATA,
    State,
    kind_of,
    next_state,
    refusal,
)

__all__ = ["ClientConnection", "Limits", "ServerConnection"]

_NO_EXTENSIONS = Extensions()
# A server sends the same few EHLO replies over and over: each is parsed once.
# (Extensions are immutable, so sessions can share them.)
_parse_extensions = functools.lru_cache(maxsize=64)(Extensions.parse)
_ERROR = "ERROR"  # the kind of a line the core refused itself; its reply changes no state
_CLOSED = ConnectionClosed()
_END_OF_DATA = EndOfData()


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What a server connection accepts. Every limit cites the RFC it comes from.

    * ``max_command_line``: octets in a command line, CRLF included. RFC 5321 4.5.3.1.4
      sets 512 as the minimum, and extensions grow it (RFC 1869 section 4.1.2; DSN's ORCPT
      alone can add 500), so the default is 2048, like Postfix's ``line_length_limit``.
    * ``max_auth_line``: a SASL response line; RFC 4954 section 4 asks for 12288. An
      AUTH command with its initial response may run to it too (clients send OAuth
      tokens of 1-2 KB that way, though the RFC says not to).
    * ``max_text_line``: a line of message content, CRLF included (RFC 5321 4.5.3.1.6:
      1000). None: no limit.
    * ``max_message_size``: decoded content octets; None: no limit. A message over it is
      read to its end and refused with 552 5.3.4 (RFC 1870 section 6.3).
    * ``max_recipients``: accepted recipients per transaction; further RCPTs get
      452 4.5.3 (RFC 5321 4.5.3.1.10 asks to accept at least 100). None: no limit.
    * ``bare_newlines``: REJECT (default) or NORMALIZE a bare CR or LF; see
      :mod:`smtpx.protocol.data`. Applies to message content and command lines.
    * ``require_helo``: refuse MAIL before HELO/EHLO with 503 (RFC 5321 4.1.4 lets a
      server insist on it).
    * ``require_tls``: until TLS is up, every command but NOOP, EHLO, HELO, STARTTLS and
      QUIT gets ``530 5.7.0`` (RFC 3207 section 4).
    * ``require_auth``: until the client has authenticated, every command but AUTH, EHLO,
      HELO, NOOP, RSET, STARTTLS and QUIT gets ``530 5.7.0`` (RFC 4954 section 6).
    * ``lmtp``: speak LMTP (RFC 2033): LHLO instead of HELO and EHLO, and one reply per
      recipient at the end of the content.
    * ``addresses``: the paths MAIL and RCPT take; strict RFC 5321 unless widened
      (:mod:`smtpx.protocol.lenient`: a ``default_domain``, async_smtp's lenient forms).
    """

    max_command_line: int = 2048
    max_auth_line: int = 12288
    max_text_line: int | None = 1000
    max_message_size: int | None = None
    max_recipients: int | None = None
    bare_newlines: BareNewlines = BareNewlines.REJECT
    require_helo: bool = False
    require_tls: bool = False
    require_auth: bool = False
    lmtp: bool = False
    addresses: AddressGrammar = STRICT


ServerEvent = (
    Command | DataChunk | EndOfData | EndOfChunk | AuthResponse | ConnectionClosed | Sentinel
)


class ServerConnection:
    """The server end of one SMTP session.

    Public attributes (read them, don't set them): ``state``; ``helo`` (the accepted
    HELO/EHLO command, None before one or after STARTTLS); ``extensions`` (what the last
    accepted EHLO reply advertised; parameters and commands are checked against it);
    ``tls`` (STARTTLS done); ``authenticated``; ``mail`` (the accepted MAIL of the current
    transaction); ``recipients`` (accepted so far in it); ``message_size`` (octets of
    content read in it).
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        assume: Extensions | None = None,
        tls: bool = False,
    ) -> None:
        """``assume``: check MAIL/RCPT parameters against these extensions whatever the
        client said (HELO, or no greeting at all). For reading BSMTP files, where no
        server ever advertised anything. ``tls``: the channel is TLS from its first byte
        (implicit TLS, RFC 8314)."""
        self.limits = limits if limits is not None else Limits()
        self._assume = assume
        self.state = State.GREETING
        self.helo: Helo | Ehlo | None = None
        self.extensions = _NO_EXTENSIONS
        self.tls = tls
        self.authenticated = False
        self.mail: Mail | None = None
        self.recipients = 0
        self.message_size = 0
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._eof = False
        self._skipping = False  # inside an over-long line: drop bytes until its LF
        self._pending: str | None = CONNECT  # the kind the next reply answers
        self._pending_command: Command | None = None
        self._queued: ServerEvent | None = None
        self._reader: DataReader | None = None
        # The last DATA content was taken as it came: nothing dot-unstuffed, no line ending
        # changed (DataReader.verbatim): it is its own DATA form. False after BDAT.
        self.content_verbatim = False
        self._chunk_left: int | None = None  # octets of the current BDAT chunk still to read
        self._chunk_command: Bdat | None = None  # None while discarding a refused chunk
        self._chunk_error: Reply | None = None
        self._answered = 0  # per-recipient replies sent to the end of the content (LMTP)

    # -- bytes in and out -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` when it closed its end."""
        if not data:
            self._eof = True
        elif self.state is not State.CLOSED:
            self._buf += data

    def data_to_send(self) -> bytes:
        """Everything sent since the last call, as one write."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def unsent(self) -> int:
        """Replies sent and not yet taken by :meth:`data_to_send`."""
        return len(self._out)

    @property
    def awaiting_reply(self) -> bool:
        """True when the last event needs a reply before the next one."""
        return self._pending is not None

    @property
    def replies_owed(self) -> int:
        """Replies the pending event still needs: one, or (LMTP, at the end of the
        content) one per accepted recipient not answered yet; 0 when none is pending."""
        if self._pending is None:
            return 0
        if self._per_recipient(self._pending):
            return self.recipients - self._answered
        return 1

    def _per_recipient(self, kind: str) -> bool:
        return self.limits.lmtp and kind in (END_OF_DATA, BDAT_LAST) and self.recipients > 0

    @property
    def buffered_input(self) -> int:
        """Octets received and not parsed yet: after an event, what the client sent beyond
        it (before it could see the reply to it)."""
        return len(self._buf)

    @property
    def reading_content(self) -> bool:
        """True while message content is being read: after ``354``, or inside a BDAT
        chunk (a refused one too)."""
        return self._reader is not None or self._chunk_left is not None

    # -- events -----------------------------------------------------------------------

    def next_event(self) -> ServerEvent:
        """The next event, ``NEED_DATA``, or ``PAUSED`` (send the pending reply first).

        Raises :class:`RemoteProtocolError` for input the core refuses itself; its
        ``reply`` is owed to the client just like a reply to a command.
        """
        if self._queued is not None:
            event, self._queued = self._queued, None
            return event
        if self._pending is not None:
            return PAUSED
        if self.state is State.CLOSED:
            return _CLOSED
        if self._reader is not None:
            return self._data_event(self._reader)
        if self._chunk_left is not None:
            return self._chunk_event()
        return self._command_event()

    def _closed(self) -> ConnectionClosed:
        self.state = State.CLOSED
        self._buf.clear()
        return _CLOSED

    def _refuse(
        self, message: str, reply: Reply, kind: str = _ERROR, *, unknown: str | None = None
    ) -> RemoteProtocolError:
        self._pending = kind
        self._pending_command = None
        return RemoteProtocolError(message, reply, unknown=unknown)

    def _command_event(self) -> ServerEvent:
        buf = self._buf
        auth = self.state is State.AUTH
        limit = self.limits.max_auth_line if auth else self.limits.max_command_line
        while True:
            lf = buf.find(b"\n")
            if lf < 0:
                if not self._skipping and self._over(buf, len(buf) + 1, limit):
                    # RFC 5321 4.5.3.1.4; keep reading the line to stay in step (4.5.3.1).
                    self._skipping = True
                    buf.clear()
                    raise self._refuse(
                        "command line too long",
                        replies.line_too_long(),
                        AUTH_RESPONSE if auth else _ERROR,
                    )
                if self._skipping:
                    buf.clear()
                if self._eof:
                    return self._closed()
                return NEED_DATA
            if self._skipping:
                del buf[: lf + 1]
                self._skipping = False
                continue
            if self._over(buf, lf + 1, limit):
                del buf[: lf + 1]
                raise self._refuse(
                    "command line too long",
                    replies.line_too_long(),
                    AUTH_RESPONSE if auth else _ERROR,
                )
            if lf and buf[lf - 1] == 13:
                line = bytes(buf[: lf - 1])
            else:
                line = bytes(buf[:lf])
                if self.limits.bare_newlines is BareNewlines.REJECT:
                    del buf[: lf + 1]
                    raise self._refuse(
                        "bare LF in command line",
                        replies.bare_line_ending(),
                        AUTH_RESPONSE if auth else _ERROR,
                    )
            del buf[: lf + 1]
            if auth:
                return self._auth_line(line)
            if not line:
                # Every command line gets exactly one reply (RFC 5321 4.2), an empty one
                # too: left unanswered, it would be a free way to hold a session open.
                raise self._refuse("empty command line", replies.empty_line())
            return self._command(line)

    def _over(self, buf: bytearray, length: int, limit: int) -> bool:
        """Whether a line of ``length`` octets (its LF included; so far, when it has not
        ended) passes ``limit``. An AUTH command may run to ``max_auth_line``: clients
        send long initial responses (OAuth tokens of 1-2 KB) with the command, though
        RFC 4954 section 4 says not to, and a server that refuses them leaves their users
        unable to log in (as Dovecot's and Gmail's users report)."""
        if length <= limit:
            return False
        return length > self.limits.max_auth_line or bytes(buf[:5]).upper() != b"AUTH "

    def _auth_line(self, line: bytes) -> AuthResponse:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise self._refuse(
                "AUTH response is not base64",
                replies.syntax_error("Invalid base64 data in AUTH response"),
                AUTH_RESPONSE,
            ) from None
        self._pending = AUTH_RESPONSE
        self._pending_command = None
        return AuthResponse(text)

    def _command(self, line: bytes) -> ServerEvent:
        try:
            command = parse_command(line, self.limits.addresses)
        except ParseError as exc:
            unknown = exc.line if isinstance(exc, UnknownCommand) else None
            reply = exc.reply or replies.syntax_error()
            raise self._refuse(str(exc), reply, unknown=unknown) from None
        if isinstance(command, Bdat):
            return self._bdat(command)
        verb = command.verb
        if (verb == "LHLO") != self.limits.lmtp and verb in _GREETINGS:
            # RFC 2033 4.1: LMTP has LHLO only, and SMTP has no LHLO.
            raise self._refuse(
                f"{verb} in {'LMTP' if self.limits.lmtp else 'SMTP'}",
                replies.command_unrecognized(verb),
            )
        state = self.state
        if (missing := self._missing(verb)) is not None:
            raise self._refuse(f"{verb} before TLS or AUTH", missing)
        if verb not in ALLOWED[state]:
            raise self._refuse(f"{verb} not allowed in state {state.value}", refusal(state, verb))
        problem = self._check(command)
        if problem is not None:
            raise self._refuse(f"{verb} refused", problem)
        self._pending = verb
        self._pending_command = command
        return command

    def _missing(self, verb: str) -> Reply | None:
        """The 530 owed to ``verb`` while the TLS or AUTH the limits require is not in
        force; None when it may go on (RFC 3207 section 4, RFC 4954 section 6)."""
        limits = self.limits
        if limits.require_tls and not self.tls and verb not in _BEFORE_TLS:
            return replies.starttls_required()
        if limits.require_auth and not self.authenticated and verb not in _BEFORE_AUTH:
            return replies.auth_required()
        return None

    def _check(self, command: Command) -> Reply | None:
        """Rules beyond the state table: extensions in effect, limits, AUTH and TLS state."""
        if isinstance(command, Mail):
            if self.limits.require_helo and self.helo is None:
                return replies.bad_sequence("Send HELO or EHLO first")
            return self._check_mail(command)
        if isinstance(command, Rcpt):
            limit = self.limits.max_recipients
            if limit is not None and self.recipients >= limit:
                return replies.too_many_recipients()
            return self._check_rcpt(command)
        if isinstance(command, Data):
            if self.mail is not None and self.mail.params.body == "BINARYMIME":
                return replies.bad_sequence("BODY=BINARYMIME needs BDAT, not DATA (RFC 3030)")
            return None
        if isinstance(command, StartTls):
            if self.tls:
                return replies.bad_sequence("TLS is already active")
            if isinstance(self.helo, Ehlo) and not self.extensions.starttls:
                return replies.not_implemented("STARTTLS")
            return None
        if isinstance(command, Auth):
            if self.authenticated:
                return replies.bad_sequence("Already authenticated (RFC 4954 section 4)")
            if isinstance(self.helo, Ehlo):
                if not self.extensions.auth:
                    return replies.bad_sequence("Authentication is not enabled")
                if command.mechanism not in self.extensions.auth:
                    return replies.unrecognized_auth_mechanism(command.mechanism)
            return None
        return None

    def _in_effect(self) -> Extensions:
        """The extensions MAIL and RCPT parameters are checked against (none after HELO)."""
        if self._assume is not None:
            return self._assume
        return self.extensions if isinstance(self.helo, Ehlo) else _NO_EXTENSIONS

    def _unadvertised(self, keyword: str) -> Reply | None:
        if self._in_effect().supports(keyword):
            return None
        return replies.parameters_not_recognized(
            f"{keyword} parameter not recognized (not an advertised extension)"
        )

    def _check_mail(self, command: Mail) -> Reply | None:
        params = command.params
        ext = self._in_effect()
        for keyword in params.keywords():
            needs = _PARAM_EXTENSION.get(keyword, keyword)
            if (problem := self._unadvertised(needs)) is not None:
                return problem
        if params.size is not None and ext.size and params.size > ext.size:
            return replies.message_too_big()
        max_size = self.limits.max_message_size
        if params.size is not None and max_size is not None and params.size > max_size:
            return replies.message_too_big()
        if params.body == "BINARYMIME" and not ext.chunking:
            return replies.parameters_not_recognized("BODY=BINARYMIME needs CHUNKING")
        address = command.sender.address
        if address is not None and address.is_utf8 and not params.smtputf8:
            return replies.non_ascii_not_permitted()
        return None

    def _check_rcpt(self, command: Rcpt) -> Reply | None:
        for keyword in command.params.keywords():
            needs = _PARAM_EXTENSION.get(keyword, keyword)
            if (problem := self._unadvertised(needs)) is not None:
                return problem
        smtputf8 = self.mail is not None and self.mail.params.smtputf8
        if command.recipient.is_utf8 and not smtputf8:
            return replies.non_ascii_not_permitted()
        return None

    def _bdat(self, command: Bdat) -> ServerEvent:
        # The chunk's octets follow the command line whatever the reply will be, so they are
        # always read (RFC 3030 section 2); a refused chunk is read and dropped.
        kind = kind_of("BDAT", last=command.last)
        self.content_verbatim = False
        self._chunk_left = command.size
        self._chunk_error = None
        self._chunk_command = command
        problem = self._missing("BDAT")
        if problem is None and not self._in_effect().chunking:
            problem = replies.not_implemented("BDAT")
        if problem is None and kind not in ALLOWED[self.state]:
            problem = refusal(self.state, kind)
        if problem is not None:
            self._chunk_error = problem
            self._chunk_command = None
            return self._chunk_event()
        return command

    def _chunk_event(self) -> ServerEvent:
        buf = self._buf
        while True:
            left = self._chunk_left
            assert left is not None
            if left == 0:
                command = self._chunk_command
                last = command.last if command is not None else False
                self._chunk_left = None
                self._chunk_command = None
                if self._chunk_error is not None:
                    error, self._chunk_error = self._chunk_error, None
                    kind = kind_of("BDAT", last=last) if command is not None else _ERROR
                    raise self._refuse("BDAT chunk refused", error, kind)
                self._pending = kind_of("BDAT", last=last)
                self._pending_command = command
                return EndOfChunk(last)
            if not buf:
                if self._eof:
                    return self._closed()
                return NEED_DATA
            take = min(left, len(buf))
            self._chunk_left = left - take
            if self._chunk_error is not None:
                del buf[:take]
                continue
            data = bytes(buf[:take])
            del buf[:take]
            self.message_size += take
            max_size = self.limits.max_message_size
            if max_size is not None and self.message_size > max_size:
                self._chunk_error = replies.message_too_big()
                continue
            return DataChunk(data)

    def _data_event(self, reader: DataReader) -> ServerEvent:
        content, finished = reader.read(self._buf)
        if finished:
            self._reader = None
            self.message_size = reader.size
            self.content_verbatim = reader.verbatim
            if reader.error is not None:
                raise self._refuse("message content refused", reader.error, END_OF_DATA)
            self._pending = END_OF_DATA
            self._pending_command = None
            if content:
                self._queued = _END_OF_DATA
                return DataChunk(content)
            return _END_OF_DATA
        if content:
            self.message_size = reader.size
            return DataChunk(content)
        if self._eof:
            return self._closed()
        return NEED_DATA

    # -- replies ----------------------------------------------------------------------

    def send(self, reply: Reply) -> None:
        """Queue the reply to the pending event (or an unsolicited 421 at any time)."""
        kind = self._pending
        if kind is None:
            if reply.code != 421:
                raise LocalProtocolError("no command is waiting for a reply; only 421 may be sent")
            if self.state is State.CLOSED:
                raise LocalProtocolError("the session is closed")
            self._out.append(reply.to_bytes())
            self._closed()
            return
        code = reply.code
        if code < 400 and code not in _POSITIVE.get(kind, _ANY_COMPLETION):
            raise LocalProtocolError(f"a {code} reply does not answer {kind}")
        command = self._pending_command
        self._out.append(reply.to_bytes())
        if self._per_recipient(kind) and code != 421:
            self._answered += 1
            if self._answered < self.recipients:
                return  # LMTP: more recipients to answer for
            self._answered = 0
            code = 250  # the content was taken: the transaction ends, whatever each said
        self._pending = None
        self._pending_command = None
        if kind == _ERROR:
            if code == 421:
                self._closed()
            return
        old = self.state
        new = next_state(old, kind, code)
        if code < 400:
            self._accepted(kind, command, reply)
        self.state = new
        if new is State.READY and old is not State.READY:
            self._end_transaction()
        elif new is State.CLOSED:
            self._closed()

    def _accepted(self, kind: str, command: Command | None, reply: Reply) -> None:
        if kind in ("EHLO", "LHLO"):
            assert isinstance(command, Ehlo)
            self.helo = command
            self.extensions = _parse_extensions(tuple(reply.lines[1:]))
            self._end_transaction()
        elif kind == "HELO":
            assert isinstance(command, Helo)
            self.helo = command
            self.extensions = _NO_EXTENSIONS
            self._end_transaction()
        elif kind == "MAIL":
            assert isinstance(command, Mail)
            self.mail = command
        elif kind == "RCPT":
            self.recipients += 1
        elif kind == "DATA":
            self._reader = DataReader(
                max_line=self.limits.max_text_line,
                max_size=self.limits.max_message_size,
                bare_newlines=self.limits.bare_newlines,
            )
        elif kind == "STARTTLS":
            # CVE-2011-0411: plaintext pipelined behind STARTTLS must not be run as if it
            # had come over TLS. The session starts afresh (RFC 3207 section 4.2).
            self._buf.clear()
            self.tls = True
            self.helo = None
            self.extensions = _NO_EXTENSIONS
            self.authenticated = False
        elif kind in ("AUTH", AUTH_RESPONSE) and reply.code == 235:
            self.authenticated = True
        elif kind == "RSET":
            self._end_transaction()

    def _end_transaction(self) -> None:
        self.mail = None
        self.recipients = 0
        self.message_size = 0


# The commands a session may use before the TLS (RFC 3207 section 4) or the AUTH (RFC 4954
# section 6) that its limits require; every other command gets 530 5.7.0.
_BEFORE_TLS = frozenset({"NOOP", "EHLO", "HELO", "LHLO", "STARTTLS", "QUIT"})
_GREETINGS = frozenset({"HELO", "EHLO", "LHLO"})
_BEFORE_AUTH = _BEFORE_TLS | {"AUTH", "RSET"}

# MAIL/RCPT parameter keyword -> the EHLO keyword that must have been advertised.
_PARAM_EXTENSION = {
    "BODY": "8BITMIME",
    "RET": "DSN",
    "ENVID": "DSN",
    "NOTIFY": "DSN",
    "ORCPT": "DSN",
}

# The positive replies each kind may get (RFC 5321 4.3.2; RFC 3207; RFC 4954); any kind
# may get a 4xx or 5xx. Everything else takes any 2xx.
_ANY_COMPLETION = frozenset(range(200, 300))
_POSITIVE = {
    CONNECT: frozenset({220}),
    "STARTTLS": frozenset({220}),
    "DATA": frozenset({354}),
    "QUIT": frozenset({221}),
    "AUTH": frozenset({235, 334}),
    AUTH_RESPONSE: frozenset({235, 334}),
}

# Commands after which a client must wait for the reply before sending more: the framing
# of what follows depends on it (RFC 2920 section 3.1; RFC 3207 for STARTTLS).
_WAIT_AFTER = frozenset({"DATA", "STARTTLS", "AUTH", AUTH_RESPONSE})


def _violation(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        message,
        Reply.of(451, f"SMTP protocol violation by the server: {message}", "4.5.0"),
        fatal=True,
    )


ClientEvent = Response | ConnectionClosed | Sentinel
ClientItem = Command | DataChunk | EndOfData | AuthResponse


class ClientConnection:
    """The client end of one SMTP session.

    ``send()`` commands (pipelining them is allowed), message content as
    :class:`DataChunk` after a 354 or after a BDAT command, :class:`EndOfData`, and
    :class:`AuthResponse` lines after a 334. ``next_event()`` pairs each reply with what it
    answers, as a :class:`Response`.

    A reply the client did not ask for, a malformed reply, or bytes behind the 220 to
    STARTTLS (response injection, the client-side CVE-2011-0411) raise a fatal
    :class:`RemoteProtocolError` whose ``reply`` is a 451 4.5.0 describing it.
    """

    def __init__(self, *, lmtp: bool = False) -> None:
        """``lmtp``: the server speaks LMTP (RFC 2033): the end of the content gets one
        reply per accepted recipient, each a :class:`Response` of its own."""
        self.lmtp = lmtp
        self.state = State.GREETING
        self.greeting: Reply | None = None
        self.ehlo_reply: Reply | None = None
        self.extensions = _NO_EXTENSIONS
        self.tls = False
        self.authenticated = False
        self._parser = ReplyParser()
        self._out: list[bytes] = []
        self._eof = False
        self._waiting: deque[tuple[str, Command | EndOfData | AuthResponse | None]] = deque(
            [(CONNECT, None)]
        )
        self._stuffer: DotStuffer | None = None  # set between a 354 and EndOfData
        self._chunk_left = 0  # octets of the BDAT chunk being sent still to come
        self._hold = False  # a command that must be answered before anything else is out
        self._accepted = 0  # recipients accepted in this transaction (for LMTP's replies)
        self._finals = 0  # LMTP: replies still to come to the end of the content

    # -- bytes in and out -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        else:
            self._parser.feed(data)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def pending(self) -> int:
        """Commands sent whose replies have not come yet."""
        return len(self._waiting)

    @property
    def can_pipeline(self) -> bool:
        return self.extensions.pipelining

    # -- sending ----------------------------------------------------------------------

    def send(self, item: ClientItem) -> None:
        if self.state is State.CLOSED:
            raise LocalProtocolError("the session is closed")
        if isinstance(item, DataChunk):
            self._send_content(item.data)
        elif isinstance(item, EndOfData):
            if self._stuffer is None:
                raise LocalProtocolError("EndOfData is only sent after a 354 reply to DATA")
            self._out.append(self._stuffer.end())
            self._stuffer = None
            self._waiting.append((END_OF_DATA, item))
        elif isinstance(item, AuthResponse):
            if self.state is not State.AUTH or self._hold:
                raise LocalProtocolError("an AUTH response is only sent after a 334 reply")
            self._out.append(item.to_bytes())
            self._waiting.append((AUTH_RESPONSE, item))
            self._hold = True
        else:
            self._send_command(item)

    def _send_command(self, command: Command) -> None:
        if self._hold:
            raise LocalProtocolError(
                f"wait for the reply to {self._waiting[-1][0]} before sending {command.verb}"
            )
        if self._stuffer is not None:
            raise LocalProtocolError("finish the message content with EndOfData first")
        if self._chunk_left:
            raise LocalProtocolError(f"{self._chunk_left} octets of the BDAT chunk are still owed")
        if self.state is State.AUTH:
            raise LocalProtocolError("inside an AUTH exchange only AuthResponse may be sent")
        self._out.append(command.to_bytes())
        last = isinstance(command, Bdat) and command.last
        kind = kind_of(command.verb, last=last)
        self._waiting.append((kind, command))
        if isinstance(command, Bdat):
            self._chunk_left = command.size
        if kind in _WAIT_AFTER:
            self._hold = True

    def _send_content(self, data: bytes) -> None:
        if self._chunk_left:
            if len(data) > self._chunk_left:
                raise LocalProtocolError(
                    f"{len(data)} octets sent but only {self._chunk_left} left in the BDAT chunk"
                )
            self._chunk_left -= len(data)
            self._out.append(data)
        elif self._stuffer is not None:
            encoded = self._stuffer.encode(data)
            if encoded:
                self._out.append(encoded)
        elif data:
            raise LocalProtocolError("message content is only sent after 354, or after BDAT")

    def send_encoded_content(self, size: int, *, ends_with_crlf: bool = True) -> None:
        """Record that ``size`` octets of already dot-stuffed content were written by other
        means (``sendfile`` of a wire-ready file); the next :class:`EndOfData` adds only
        what the terminator still needs."""
        if self._stuffer is None:
            raise LocalProtocolError("content is only sent after a 354 reply to DATA")
        if size:
            self._stuffer.note_external(ends_with_crlf=ends_with_crlf)

    def send_chunk_content(self, size: int) -> None:
        """Record that ``size`` octets of the current BDAT chunk were written by other
        means (``sendfile``); they count against what its command announced."""
        if size > self._chunk_left:
            raise LocalProtocolError(
                f"{size} octets sent but only {self._chunk_left} left in the BDAT chunk"
            )
        self._chunk_left -= size

    # -- receiving --------------------------------------------------------------------

    def next_event(self) -> ClientEvent:
        if self.state is State.CLOSED:
            return _CLOSED
        try:
            reply = self._parser.next_reply()
        except ParseError as exc:
            raise _violation(str(exc)) from None
        if reply is None:
            if self._eof:
                self.state = State.CLOSED
                return _CLOSED
            return NEED_DATA
        if not self._waiting:
            if reply.code == 421:
                self.state = State.CLOSED
                return Response(None, reply)
            raise _violation(f"unsolicited reply {str(reply)[:80]!r}")
        kind, command = self._waiting.popleft()
        if kind in _WAIT_AFTER:
            self._hold = False
        code = reply.code
        if self.lmtp and kind in (END_OF_DATA, BDAT_LAST) and code != 421:
            return self._final_reply(kind, command, reply)
        self._count(kind, code)
        if kind == CONNECT:
            self.greeting = reply
        elif kind in ("EHLO", "LHLO") and code == 250:
            self.ehlo_reply = reply
            self.extensions = Extensions.parse(reply.lines[1:])
        elif kind == "HELO" and code == 250:
            self.ehlo_reply = None
            self.extensions = _NO_EXTENSIONS
        elif kind == "DATA" and code == 354:
            self._stuffer = DotStuffer()
        elif kind == "STARTTLS" and code == 220:
            if self._parser.in_progress or self._waiting:
                raise _violation("data after the 220 reply to STARTTLS (response injection)")
            self.tls = True
            self.ehlo_reply = None
            self.extensions = _NO_EXTENSIONS
            self.authenticated = False
        elif kind in ("AUTH", AUTH_RESPONSE) and code == 235:
            self.authenticated = True
        self.state = next_state(self.state, kind, code)
        if self.state is State.CLOSED:
            self._waiting.clear()
        return Response(command, reply)

    def _count(self, kind: str, code: int) -> None:
        """Keep count of the recipients accepted in the transaction (LMTP owes each a
        reply at the end of the content)."""
        if kind in ("MAIL", "RSET", "EHLO", "LHLO", "HELO"):
            self._accepted = 0
        elif kind == "RCPT" and code < 300:
            self._accepted += 1

    def _final_reply(
        self, kind: str, command: Command | EndOfData | AuthResponse | None, reply: Reply
    ) -> Response:
        """LMTP: one of the replies to the end of the content, one per accepted recipient
        (RFC 2033 4.2; one when none was accepted). The transaction ends with the last."""
        if not self._finals:
            self._finals = max(1, self._accepted)
        self._finals -= 1
        if self._finals:
            self._waiting.appendleft((kind, command))
            return Response(command, reply)
        self._accepted = 0
        # The content was taken whatever each recipient's reply: the transaction is over.
        code = 250 if self.state is not State.MAIL else reply.code
        self.state = next_state(self.state, kind, code)
        return Response(command, reply)
