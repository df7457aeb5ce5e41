"""One server session: the loop that drives a ServerConnection over a stream and calls the
plugin's hooks.

The protocol core decides everything about syntax, sequence and limits (it raises
``RemoteProtocolError`` with the reply to send); this loop adds the I/O (timeouts,
STARTTLS, flushing replies once per batch of pipelined commands), the plugin hooks, AUTH,
message assembly and the error budget.
"""

from __future__ import annotations

import asyncio
import email.policy
import functools
import logging
import re
import time
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from smtpx.auth import run_server_mechanism
from smtpx.envelope import Envelope, EnvelopeId, EnvelopeInfo, message_id_in
from smtpx.errors import RemoteProtocolError
from smtpx.fingerprint import fingerprint
from smtpx.io.stream import Stream
from smtpx.maillog import Flows, MailLog
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
from smtpx.protocol.connection import Limits, ServerConnection, ServerEvent
from smtpx.protocol.data import WireForm
from smtpx.protocol.events import (
    NEED_DATA,
    AuthResponse,
    ConnectionClosed,
    DataChunk,
    EndOfChunk,
    EndOfData,
)
from smtpx.protocol.extensions import Extensions
from smtpx.protocol.replies import Reply
from smtpx.protocol.states import State
from smtpx.server.buffer import ContentBuffer
from smtpx.server.config import MalformedMessages, ServerConfig
from smtpx.server.deadlines import ReadDeadlines, TimedOut
from smtpx.server.events import EnvelopeReceived
from smtpx.server.plugin import Offer, Plugin, Reject, Session, Transaction

if TYPE_CHECKING:
    from smtpx.auth import ServerMechanism
    from smtpx.server.server import Server

__all__ = ["SessionRunner"]

log = logging.getLogger("smtpx.server")

# A header field, or the continuation of one (RFC 5322 2.2 and 2.2.3).
_FIELD_START = rb"[\x21-\x39\x3b-\x7e]+[ \t]*:|[ \t]"
_FIELD = re.compile(_FIELD_START)
# A whole header section whose every line (split at CRLF) starts as _FIELD allows: one
# match, where a match per line took a split and a call each (the usual case).
_LINE = rb"(?:" + _FIELD_START + rb")[^\r]*(?:\r(?!\n)[^\r]*)*"
_WELL_FORMED = re.compile(_LINE + rb"(?:\r\n" + _LINE + rb")*")


class _Closing(Exception):
    """The server is shutting down: a session waiting for a command ends now."""


class _Hangup(Exception):
    """End the session (its last reply, if any, has been queued)."""


class SessionRunner:
    """Runs one session; :meth:`run` returns when it is over."""

    def __init__(self, server: Server, stream: Stream, listener: str, limits: Limits) -> None:
        self.server = server
        self.plugin: Plugin = server.plugin
        self.config: ServerConfig = server.config
        self.stream = stream
        self.conn = ServerConnection(limits, tls=stream.tls)
        self.session = Session(
            id=server.new_session_id(),
            local=stream.sockname(),
            remote=stream.peername(),
            listener=listener,
            lmtp=limits.lmtp,
            tls=stream.tls,
            tls_version=stream.tls_version(),
            flows=Flows.create("srv"),
            proxy_peer=stream.proxy_peer,
        )
        if stream.tls:
            server.stats["tls_sessions"] += 1  # implicit TLS: the handshake is done
        self.mail = MailLog("smtp-server/session", self.session.flows)
        self.transaction: Transaction | None = None
        self.content: ContentBuffer | None = None  # the transaction's content so far
        self.chunk_error: Reply | None = None
        self.errors = 0
        self.auth_failures = 0
        self.junk = 0  # NOOP, RSET, VRFY, EXPN, HELP since the last message accepted
        self.waiting_for_command = False
        self.deadline: float | None = None  # loop time by which the pending read must end
        self.deadlines = ReadDeadlines(
            command_timeout=self.config.command_timeout,
            data_timeout=self.config.data_timeout,
            min_data_rate=self.config.min_data_rate,
            data_rate_grace=self.config.data_rate_grace,
        )
        self._mechanisms: dict[str, ServerMechanism[Session]] = {}
        self.enforce_sync = False  # the plugin's answer, asked once connected

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        session = self.session
        try:
            try:
                await self.plugin.connect(session)
            except Reject as reject:
                self._write(reject.reply)
                return
            except Exception:
                log.exception("plugin connect failed (session %s)", session.id)
                self._write(replies.service_unavailable())
                return
            self.server.stats["sessions"] += 1
            if self.mail.enabled(logging.DEBUG):  # the line's tags are not made for nothing
                self.mail.debug(
                    "connected",
                    session_marker="connected",
                    remote_ip=session.remote_ip,
                    local_ip=session.local[0] if session.local else None,
                    listener=session.listener,
                    **({"proxy_peer": session.proxy_peer[0]} if session.proxy_peer else {}),
                )
            ended: BaseException | None = None
            try:
                self.enforce_sync = self.plugin.enforce_sync(session)
                delay = self.plugin.greeting_delay(session)
                if delay <= 0 or await self._waited_to_greet(delay):
                    self.conn.send(
                        replies.service_ready(self._hostname(), self.plugin.greeting(session))
                    )
                    await self._loop()
            except BaseException as error:  # re-raised once the plugin has been told
                ended = error
            # Not awaited in a finally block: a compiled coroutine (mypyc) that awaits
            # there leaves the exception it handles behind for the next code that runs
            # (docs/performance.md); tests/test_compiled.py checks compiled modules.
            await self._disconnect()
            if ended is not None:
                raise ended
        except (ConnectionError, OSError) as exc:
            log.debug("session %s: connection lost: %s", session.id, exc)
        finally:
            self._drop_content()  # a transaction cut off: its memory and file go
            self.stream.close()

    async def _waited_to_greet(self, delay: float) -> bool:
        """Wait ``delay`` seconds before the greeting; False, the client sent away, when
        it talked (or left) meanwhile. The server's close ends the wait with ``421``."""
        self.waiting_for_command = True  # for interrupt()
        try:
            early = await self.stream.read(delay)
        except TimeoutError:
            return True
        except _Closing:
            self._write(replies.shutting_down())
            return False
        finally:
            self.waiting_for_command = False
        if early:
            self.server.stats[EARLY_TALKERS_GREETING] += 1
            self.mail.info("talked before the greeting", remote_ip=self.session.remote_ip)
            # RFC 5321 3.1's 554 in the greeting's place (no enhanced code there)
            self._write(replies.service_refused(self._hostname(), _TALKED_EARLY))
        return False

    async def _disconnect(self) -> None:
        try:
            await self.plugin.disconnect(self.session)
        except Exception:
            log.exception("plugin disconnect failed (session %s)", self.session.id)
        self.mail.debug("disconnected", errors=self.errors)

    async def _loop(self) -> None:
        while True:
            refused: RemoteProtocolError | None = None
            try:
                event = self._next_event()
            except RemoteProtocolError as error:
                refused = error
            if refused is not None:  # (awaited out of the handler: docs/performance.md)
                reply = refused.reply
                if refused.unknown is not None:
                    reply = await self._unknown(refused.unknown, reply)
                if self._answer_error(reply):
                    return
                continue
            if event is NEED_DATA:
                if not await self._read():
                    return
                continue
            if isinstance(event, ConnectionClosed):
                self._flush()
                return
            if self.enforce_sync and self._refuse_sent_ahead(event):
                return
            try:
                await self._dispatch(event)
            except _Hangup:
                self._flush()
                return
            if self.conn.unsent >= _FLUSH_AT:  # commands pipelined without end
                self._flush()
                if self.stream.write_blocked and not await self._wait_for_reader():
                    return

    async def _unknown(self, line: str, reply: Reply) -> Reply:
        """The reply to a command nobody defines: the core's ``reply`` (``500 5.5.1``),
        or the one the plugin's ``unknown_command`` refuses it with (a failing hook is
        logged)."""
        try:
            await self.plugin.unknown_command(self.session, line)
        except Reject as reject:
            return reject.reply
        except Exception:
            log.exception("plugin unknown_command failed (session %s)", self.session.id)
            self.server.stats["plugin_errors"] += 1
        return reply

    def _refuse_sent_ahead(self, event: object) -> bool:
        """RFC 2920 section 3.1: the client waits for the reply to EHLO, HELO and DATA,
        and, not offered PIPELINING (after HELO, or before any greeting command), to every
        command. When more is here already, tell it so (554) and return True: the session
        is over."""
        if not isinstance(event, Command) or not self.conn.buffered_input:
            return False
        if isinstance(event, (Ehlo, Helo, Data)):
            pass  # always the last of a group
        elif self.session.esmtp or isinstance(event, Bdat):  # (a chunk follows its BDAT)
            return False
        self.server.stats[EARLY_TALKERS_PIPELINING] += 1
        self.mail.info(
            "did not wait for a reply", command=event.verb, remote_ip=self.session.remote_ip
        )
        self.conn.send(_SENT_AHEAD)
        self._flush()
        return True

    def _next_event(self) -> ServerEvent:
        """The core's next event. One it produced, or a line it refused, ends the wait for
        a command: the next command's deadline starts afresh."""
        try:
            event = self.conn.next_event()
        except RemoteProtocolError:
            self.deadlines.event(content=False)
            raise
        if event is not NEED_DATA:
            self.deadlines.event(content=isinstance(event, DataChunk))
        return event

    def _answer_error(self, reply: Reply) -> bool:
        """Answer a refused command and count it. The command that spends the budget gets
        the ``421`` instead of ``reply`` (one command, one reply); True then: hang up."""
        self.errors += 1
        if self.errors >= self.config.max_errors:
            self.conn.send(replies.too_many_errors())
            self._flush()
            return True
        self._send_each(reply)
        return False

    def _answer_junk(self, reply: Reply) -> None:
        """A command that moves no mail (Postfix's "junk": NOOP, RSET, VRFY, EXPN, HELP):
        past ``max_junk_commands`` since the last message accepted, each also counts as
        an error, so a session that only idles this way ends at the error budget."""
        self.junk += 1
        if self.junk <= self.config.max_junk_commands:
            self.conn.send(reply)
        elif self._answer_error(reply):
            raise _Hangup

    def _send_each(self, reply: Reply) -> None:
        """``reply`` to the pending event: once, or (LMTP, at the end of the content)
        once for each recipient (RFC 2033 4.2)."""
        for _ in range(max(1, self.conn.replies_owed)):
            self.conn.send(reply)

    async def _read(self) -> bool:
        """Flush the replies, wait for more input; False when the session must end."""
        self._flush()
        if self.stream.write_blocked and not await self._wait_for_reader():
            return False
        conn = self.conn
        if conn.state is State.CLOSED:
            return False
        in_data = conn.reading_content
        idle = conn.state is State.READY
        if self.server.closing and idle:
            self._say_closing()
            return False
        now = self.server.loop_time()
        deadline = self.deadlines.next(now, content=in_data)
        self.waiting_for_command = idle
        # No timer per read: the server's sweeper interrupts reads past their deadline.
        self.deadline = deadline.at
        if self.server.closing:
            self.deadline = min(deadline.at, now + self.config.close_timeout)
        try:
            data = await self.stream.read()
        except TimeoutError:
            self.server.stats[f"timeouts_{deadline.reason.value}"] += 1
            conn.send(_TIMEOUT_REPLIES[deadline.reason]())
            self._flush()
            return False
        except _Closing:
            self._say_closing()
            return False
        finally:
            self.waiting_for_command = False
            self.deadline = None
        self.deadlines.received(len(data), content=in_data)
        conn.receive_data(data)
        return True

    async def _wait_for_reader(self) -> bool:
        """The client sends commands and does not read the replies: read nothing more
        from it until it has taken them. False, the connection dropped, when it has not
        within ``command_timeout``: its replies are never buffered without end."""
        try:
            await self.stream.drain(self.config.command_timeout)
        except TimeoutError:
            self.server.stats[f"timeouts_{TimedOut.UNREAD_REPLIES.value}"] += 1
            self.mail.info("dropped: replies not read", remote_ip=self.session.remote_ip)
            self.stream.abort()
            return False
        return True

    def interrupt(self) -> None:
        """The server is closing: end now if waiting for a command between transactions."""
        if self.waiting_for_command:
            self.stream.interrupt(_Closing())

    def _say_closing(self) -> None:
        if self.conn.state is not State.CLOSED:
            self.conn.send(replies.shutting_down())
            self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.stream.is_closing:
            self.stream.write(data)

    def _write(self, reply: Reply) -> None:
        if not self.stream.is_closing:
            self.stream.write(reply.to_bytes())

    def _hostname(self) -> str:
        return self.config.hostname or self.plugin.hostname

    # -- events ----------------------------------------------------------------------------

    async def _dispatch(self, event: object) -> None:
        # Ordered by how often each comes.
        if isinstance(event, DataChunk):
            if self.chunk_error is None:
                self._content().add(event.data)
            return
        if isinstance(event, Mail):
            await self._mail(event)
        elif isinstance(event, Rcpt):
            await self._rcpt(event)
        elif isinstance(event, Data):
            await self._data()
        elif isinstance(event, EndOfData):
            await self._message()
        elif isinstance(event, Bdat):
            await self._bdat()
        elif isinstance(event, EndOfChunk):
            await self._end_of_chunk(event.last)
        elif isinstance(event, Rset):
            self._end_transaction()
            self._answer_junk(replies.ok())
        elif isinstance(event, (Ehlo, Helo)):
            await self._helo(event)
        elif isinstance(event, Quit):
            self.conn.send(replies.closing())
            raise _Hangup
        elif isinstance(event, Noop):
            self._answer_junk(replies.ok())
        elif isinstance(event, StartTls):
            await self._starttls()
        elif isinstance(event, Auth):
            await self._auth(event)
        elif isinstance(event, Vrfy):
            self._answer_junk(replies.cannot_verify())
        elif isinstance(event, Expn):
            self._answer_junk(replies.not_implemented("EXPN"))
        elif isinstance(event, Help):
            self._answer_junk(replies.help_text())
        elif isinstance(event, Command):  # pragma: no cover - every verb is handled above
            self.conn.send(replies.command_unrecognized(event.verb))

    def _hook_failed(self, hook: str, exc: BaseException) -> Reply:
        if isinstance(exc, Reject):
            self.mail.info(
                "refused", command=hook, reply=str(exc.reply), remote_ip=self.session.remote_ip
            )
            return exc.reply
        log.error("session %s: plugin %s failed", self.session.id, hook, exc_info=exc)
        self.server.stats["plugin_errors"] += 1
        return replies.local_error()

    async def _helo(self, command: Ehlo | Helo) -> None:
        session = self.session
        session.helo = command.domain
        session.esmtp = isinstance(command, Ehlo)
        try:
            await self.plugin.helo(session, command.domain)
        except Exception as exc:
            # A refused or failed HELO ends the session (F38).
            self.conn.send(self._hook_failed("helo", exc))
            raise _Hangup from None
        self._end_transaction()
        if isinstance(command, Helo):
            self.conn.send(replies.helo_ok(self._hostname()))
            return
        self.conn.send(_ehlo_reply(self._hostname(), command.domain, self._extensions()))

    def _extensions(self) -> tuple[str, ...]:
        session, config = self.session, self.config
        try:
            offer = self.plugin.extensions(session)
        except Exception:
            log.exception("plugin extensions failed (session %s)", session.id)
            offer = Offer(starttls=False)
        starttls = offer.starttls and not session.tls and self.server.tls_context is not None
        auth_ok = session.tls or config.auth_without_tls
        self._mechanisms = (
            {m.mechanism.upper(): m for m in offer.auth}
            if auth_ok and not session.authenticated
            else {}
        )
        return _extension_lines(
            config.max_message_size, config.dsn, starttls, tuple(self._mechanisms)
        )

    def _end_transaction(self) -> None:
        self.transaction = None
        self._drop_content()
        self.chunk_error = None

    async def _mail(self, command: Mail) -> None:
        transaction = Transaction(
            id=EnvelopeId.create(),
            sender=command.sender,
            params=command.params,
            flows=self.session.flows.extend("in"),
        )
        try:
            await self.plugin.mail_from(self.session, transaction)
        except Exception as exc:
            self.conn.send(self._hook_failed("mail_from", exc))
            return
        self.transaction = transaction
        self.conn.send(replies.sender_ok())

    async def _rcpt(self, command: Rcpt) -> None:
        transaction = self.transaction
        assert transaction is not None  # the core allows RCPT only after MAIL
        try:
            await self.plugin.rcpt_to(self.session, transaction, command.recipient, command.params)
        except Exception as exc:
            self.conn.send(self._hook_failed("rcpt_to", exc))
            return
        transaction.recipients.append(command.recipient)
        transaction.recipient_params.append(command.params)
        self.conn.send(replies.recipient_ok())

    async def _accept_data(self) -> Reply | None:
        assert self.transaction is not None
        try:
            await self.plugin.accept_data(self.session, self.transaction)
        except Exception as exc:
            return self._hook_failed("accept_data", exc)
        return None

    async def _data(self) -> None:
        refusal = await self._accept_data()
        if refusal is not None:
            self.conn.send(refusal)
            return
        self._drop_content()
        self.conn.send(replies.start_mail_input())

    async def _bdat(self) -> None:
        # The first chunk of a transaction asks the plugin, as DATA does; a refusal is sent
        # once the chunk has been read (the core reads it whatever the answer).
        if self.transaction is not None and self.content is None and self.chunk_error is None:
            self.chunk_error = await self._accept_data()

    async def _end_of_chunk(self, last: bool) -> None:
        if self.chunk_error is not None:
            self._send_each(self.chunk_error)
            return
        if not last:
            buffer = self._content()
            self.conn.send(buffer.error or replies.chunk_ok(buffer.size))
            return
        await self._message()

    def _content(self) -> ContentBuffer:
        if self.content is None:
            config = self.config
            self.content = ContentBuffer(
                self.server.buffers, config.spill_threshold, config.spill_directory
            )
        return self.content

    def _drop_content(self) -> None:
        if self.content is not None:
            self.content.close()
            self.content = None

    async def _message(self) -> None:
        transaction = self.transaction
        assert transaction is not None
        self.transaction = None
        buffer = self._content()
        self.content = None
        try:
            await self._process(transaction, buffer)
        finally:
            buffer.close()  # the plugin is done with a spilled file

    async def _process(self, transaction: Transaction, buffer: ContentBuffer) -> None:
        if buffer.error is not None:
            self._send_each(buffer.error)
            return
        info = EnvelopeInfo(
            sender=transaction.sender,
            sender_args=transaction.params,
            recipients=tuple(transaction.recipients),
            id=transaction.id,
            recipient_params=tuple(
                zip(transaction.recipients, transaction.recipient_params, strict=True)
            ),
        )
        content = buffer.result()
        if self.conn.content_verbatim:  # (the spool stores it as it is: no second pass)
            content = WireForm(content) if isinstance(content, bytes) else content.as_wire_form()
        envelope = Envelope(info=info, content=content)
        start = envelope.start()
        problem = _malformed(start)
        if problem is not None:
            if self.config.malformed is MalformedMessages.REJECT:
                self._send_each(Reply.of(550, f"Not an RFC 5322 message: {problem}", "5.6.0"))
                return
            envelope = Envelope(info=info, message=_wrap(envelope.message, problem))
        size = envelope.size
        events = self.server.events
        if events.subscribers:
            events.publish(EnvelopeReceived(time.time(), self.session.id, info, size))
        try:
            if self.session.lmtp:
                reply = await self._process_lmtp(transaction, envelope)
            else:
                reply = replies.ok(await self.plugin.process(self.session, transaction, envelope))
                self.conn.send(reply)
        except Exception as exc:
            self._send_each(self._hook_failed("process", exc))
            return
        self.server.stats["messages"] += 1
        self.junk = 0  # (as Postfix: the count starts again after mail is accepted)
        if self.mail.enabled():
            extra: dict[str, Any] = {}
            if self.config.fingerprints:
                self._flush()  # the client has its 250 while the content is read
                extra["fingerprint"] = await _fingerprint(envelope)
            self.mail.with_flows(transaction.flows).info(
                "accepted",
                session_marker="data",
                remote_ip=self.session.remote_ip,
                sender=str(transaction.sender),
                recipients=[str(r) for r in transaction.recipients],
                message_size=size,
                rfc822_id=message_id_in(start),  # (as received: read once)
                local_id=str(transaction.id),
                reply=str(reply),
                **extra,
            )

    async def _process_lmtp(self, transaction: Transaction, envelope: Envelope) -> Reply:
        """Send the plugin's reply for each recipient; the first, for the mail log."""
        answers = list(await self.plugin.process_lmtp(self.session, transaction, envelope))
        if len(answers) != len(transaction.recipients):
            log.error(
                "session %s: process_lmtp gave %d replies for %d recipients",
                self.session.id,
                len(answers),
                len(transaction.recipients),
            )
            raise RuntimeError("process_lmtp: not one reply per recipient")
        for answer in answers:
            self.conn.send(answer)
        return answers[0]

    # -- STARTTLS and AUTH ------------------------------------------------------------------

    async def _starttls(self) -> None:
        context = self.server.tls_context
        session = self.session
        if context is None:
            self.conn.send(replies.tls_not_available())
            return
        self.conn.send(replies.ready_to_start_tls())
        self._flush()
        try:
            await self.stream.start_tls(
                context, server_side=True, timeout=self.config.command_timeout
            )
        except (OSError, ValueError, TimeoutError) as exc:
            log.info("session %s: TLS handshake failed: %s", session.id, exc)
            self.server.stats["tls_failures"] += 1
            raise _Hangup from None
        self.server.stats["tls_sessions"] += 1
        session.tls = True
        session.tls_version = self.stream.tls_version()
        session.helo = None
        session.esmtp = False
        session.authenticated = False
        session.user = None
        self._mechanisms = {}
        self._end_transaction()

    async def _auth(self, command: Auth) -> None:
        mechanism = self._mechanisms.get(command.mechanism)
        if mechanism is None:
            self.conn.send(replies.unrecognized_auth_mechanism(command.mechanism))
            return

        async def exchange(reply: Reply) -> AuthResponse:
            self.conn.send(reply)
            while True:
                try:
                    event = self._next_event()
                except RemoteProtocolError as error:
                    # A line the core refused (too long, not ASCII) ends the exchange with
                    # the core's reply, and the AUTH counts as failed.
                    raise _AuthAborted(error.reply) from None
                if isinstance(event, AuthResponse):
                    return event
                if isinstance(event, ConnectionClosed):
                    raise ConnectionResetError("client left during AUTH")
                if not await self._read():
                    raise _Hangup

        self.session.auth_name = None
        try:
            _, reply = await run_server_mechanism(
                mechanism,
                session=self.session,
                initial_response=command.initial_response,
                exchange=exchange,
                log=log,
            )
        except _AuthAborted as aborted:
            reply = aborted.reply
        if reply.code == 235:
            self.conn.send(reply)
            self.session.authenticated = True
            self._mechanisms = {}
            self.server.stats["auth_successes"] += 1
            return
        self.server.stats["auth_failures"] += 1
        self.auth_failures += 1
        self._auth_failed(command.mechanism, reply)
        if self.auth_failures >= self.config.max_auth_failures:
            # The last failure is answered with the 421 alone, not 535 and then 421.
            self.conn.send(replies.too_many_errors())
            raise _Hangup
        self.conn.send(reply)

    def _auth_failed(self, mechanism: str, reply: Reply) -> None:
        """One line per failed AUTH: the client, the mechanism, the reply, then the name
        it gave (never the password; the name last, so that whatever a client put in it
        cannot pass for the fields before: contrib/fail2ban relies on that order)."""
        name = self.session.auth_name
        if name is not None and len(name) > MAX_LOGGED_NAME:
            name = name[:MAX_LOGGED_NAME] + "..."
        self.mail.warning(
            "auth failed",
            remote_ip=self.session.remote_ip,
            mechanism=mechanism,
            reply=str(reply),
            user=name,
        )


MAX_LOGGED_NAME = 100  # characters of a user name a failed AUTH log line keeps


@functools.lru_cache(maxsize=256)
def _ehlo_reply(hostname: str, client: str, lines: tuple[str, ...]) -> Reply:
    """The EHLO reply, made (checked, formatted) once for a client name that comes back."""
    return replies.ehlo_ok(hostname, f"greets {client}", lines)


@functools.lru_cache(maxsize=64)
def _extension_lines(
    size: int | None, dsn: bool, starttls: bool, auth: tuple[str, ...]
) -> tuple[str, ...]:
    """The EHLO reply's extension lines (a server has only a few sets: each is made once)."""
    return tuple(
        Extensions(
            pipelining=True,
            size=size,
            eightbitmime=True,
            smtputf8=True,
            enhancedstatuscodes=True,
            chunking=True,
            dsn=dsn,
            starttls=starttls,
            auth=auth,
        ).to_lines()
    )


_TALKED_EARLY = "Protocol error: talked before the greeting"
_SENT_AHEAD = Reply.of(554, "Protocol error: improper use of SMTP command pipelining", "5.5.0")

# The server's stats counters of the clients sent away for not waiting (the metric
# smtpx_early_talkers_total's labels: "greeting", "pipelining").
EARLY_TALKERS_GREETING = "early_talkers_greeting"
EARLY_TALKERS_PIPELINING = "early_talkers_pipelining"

# Replies are written once per batch of pipelined commands, and at the latest after this
# many: a client that sends commands without end and reads no reply (an EHLO's is 20 or
# 30 times its size) is then held back by the transport's high-water mark.
_FLUSH_AT = 64

_TIMEOUT_REPLIES = {
    TimedOut.COMMAND: replies.command_timeout,
    TimedOut.DATA: replies.data_timeout,
    TimedOut.SLOW_DATA: replies.data_too_slow,
}


class _AuthAborted(Exception):
    """The core refused a line of the AUTH exchange; ``reply`` answers it."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _header_section(data: bytes) -> bytes:
    """The header section of ``data``: its lines up to the first empty one, without the
    CRLF that ends the last. The body is optional (RFC 5322 3.5): a content without an
    empty line is all header, and one that starts with CRLF has no header fields."""
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end]
    return data[:-2] if data.endswith(b"\r\n") else data


def _malformed(data: bytes) -> str | None:
    """Why ``data`` is not an RFC 5322 message, or None. Only the header section is
    checked: each of its lines must be a field or a continuation."""
    header = _header_section(data)
    if not header:
        return None
    if _WELL_FORMED.fullmatch(header) is None:  # (then some line is not: which)
        for line in header.split(b"\r\n"):
            if not _FIELD.match(line):
                shown = line[:40].decode("ascii", "replace")
                return f"bad header line {shown!r}"
    if header[:1] in (b" ", b"\t"):
        return "the message starts with a continuation line"
    return None


def _wrap(data: bytes, problem: str) -> bytes:
    """The raw content as a text/plain message that says what was wrong (F26 ``Wrap``)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["X-Smtpx-Parse-Error"] = problem
    message.set_content(data, maintype="text", subtype="plain")
    return message.as_bytes()


INLINE_FINGERPRINT = 256 * 1024  # larger content is fingerprinted in a thread


async def _fingerprint(envelope: Envelope) -> dict[str, Any] | None:
    """The message's fingerprint (F115) for the mail log: computed here when it is small
    and in memory, else in a thread that reads it a chunk at a time (never whole)."""
    try:
        content = envelope.content
        if isinstance(content, bytes) and len(content) <= INLINE_FINGERPRINT:
            return fingerprint([content]).to_json()
        return (await asyncio.to_thread(fingerprint, envelope.chunks())).to_json()
    except (OSError, ValueError) as exc:  # its file could not be read: log the rest
        log.warning("no fingerprint for envelope %s: %s", envelope.id, exc)
        return None
