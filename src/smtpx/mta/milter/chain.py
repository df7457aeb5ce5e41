"""The configured milters (``[[milters]]``) in an SMTP session, in order, like Postfix's
``smtpd_milters``.

Each SMTP session opens one connection to each milter. Every stage goes to each milter
in turn (CONNECT, HELO, MAIL, RCPT, DATA, then at the end of the data the header
fields, the end of the header, the body in chunks of at most 65535 octets, the end of
the message), with the macros it asked for; the first refusal answers the client.
The content goes to one milter after the other, each seeing the message as the milters
before it changed it (as Postfix does: a signing milter such as OpenDKIM, placed last,
signs the header fields as they will be sent, a rewritten Subject included); the
changes are applied in milter order (:class:`Outcome`).

Verdicts: ``reject`` is ``550 5.7.1`` (``554 5.7.1`` at connect), ``tempfail``
``451 4.7.1``, a REPLYCODE its own text; at RCPT they refuse that recipient only.
``accept`` stops sending this milter anything more of the message (at connect or HELO:
of the session); ``discard`` accepts the message and drops it (logged).

A milter that cannot be reached, times out or breaks the protocol is dropped for the
rest of the session (logged) and its ``default_action`` applies at each message stage
from then on: ``tempfail`` (451 4.7.1), ``reject`` (550 5.7.1) or ``accept`` (mail
goes on without it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily

from smtpx._version import __version__
from smtpx.errors import ParseError
from smtpx.mta.config import MilterSettings
from smtpx.mta.inbound.clientname import UNKNOWN, ClientName
from smtpx.mta.milter import edit
from smtpx.mta.milter import protocol as wire
from smtpx.mta.milter.client import (
    Answer,
    MilterConnection,
    MilterUnavailable,
    Opener,
    open_address,
)
from smtpx.mta.milter.outcome import Message, Outcome, apply_changes, split
from smtpx.mta.milter.protocol import Verdict
from smtpx.protocol.addresses import Address
from smtpx.protocol.replies import Reply
from smtpx.server import Reject, Session, Transaction

__all__ = ["ClientNames", "MilterStats", "Milters", "reply_of"]

log = logging.getLogger("smtpx.mta")

# Stages outside a message: a milter out of use does not turn them into refusals (its
# default action applies from MAIL on).
_SESSION_STAGES = ("connect", "helo", "unknown")

_KEY = "milters"
# A client's verified name from its address (smtpx.mta.inbound.clientname).
ClientNames = Callable[[str], Awaitable[ClientName]]

REPLIES: Mapping[str, Reply] = {
    "reject": Reply.of(550, "Command rejected", "5.7.1"),
    "tempfail": Reply.of(451, "Service unavailable - try again later", "4.7.1"),
}
_VERDICT_NAMES = {Verdict.CONN_FAIL: "shutdown", Verdict.SHUTDOWN: "shutdown"}
CONNECT_REJECT = Reply.of(554, "Connection rejected", "5.7.1")
SHUTDOWN = Reply.of(421, "Service not available, closing channel", "4.7.0")


@dataclass
class MilterStats:
    """What the milters did, for ``/metrics``; the MTA keeps one across reloads."""

    verdicts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # milter, stage
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # milter, stage
    default_actions: Counter[tuple[str, str]] = field(default_factory=Counter)  # milter, action

    def metrics(self) -> Iterable[object]:
        yield _family(
            "smtpx_milter_verdicts",
            "Final answers of the milters (accept, reject, tempfail, reply, discard, "
            "shutdown) by milter and stage",
            ["milter", "stage", "verdict"],
            self.verdicts,
        )
        yield _family(
            "smtpx_milter_failures",
            "Milters that could not be reached, timed out or broke the protocol, by stage",
            ["milter", "stage"],
            self.failures,
        )
        yield _family(
            "smtpx_milter_default_actions",
            "Messages answered with a failed milter's default action (tempfail, reject)",
            ["milter", "action"],
            self.default_actions,
        )


_Labels = TypeVar("_Labels", bound=tuple[str, ...])


def _family(
    name: str, text: str, labels: list[str], counts: Mapping[_Labels, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=labels)
    for values, count in sorted(counts.items()):
        family.add_metric(list(values), count)
    return family


@dataclass(eq=False)
class _Link:
    """One milter in one SMTP session."""

    settings: MilterSettings
    connection: MilterConnection | None = None
    done_session: bool = False  # accepted at CONNECT or HELO
    done_message: bool = False  # accepted (or discarded) this message
    in_message: bool = False  # MAIL was sent and the message not ended: ABORT before MAIL
    discarded: bool = False  # this milter discards the message
    held: bool = False  # out of use with default_action quarantine: this message is held

    def live(self) -> bool:
        return self.connection is not None and not self.done_session and not self.done_message


async def _unnamed() -> ClientName:
    return ClientName(UNKNOWN, UNKNOWN, "")  # not looked up: no {client_resolve}


def reply_of(text: str) -> Reply:
    """A REPLYCODE's text (``"550 5.7.1 Go away"``) as a reply."""
    try:
        return Reply.parse(text.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n")
    except (ParseError, ValueError):
        return Reply.of(int(text[:3]), text[4:])


class Milters:
    """The milters of the configuration, driven by the relay's hooks."""

    def __init__(
        self,
        settings: Sequence[MilterSettings],
        hostname: str,
        *,
        opener: Callable[[MilterSettings], Opener] | None = None,
        stats: MilterStats | None = None,
        names: ClientNames | None = None,
    ) -> None:
        self.settings = tuple(settings)
        self.hostname = hostname
        self.opener = opener or (lambda milter: open_address(milter.address))
        self.stats = stats or MilterStats()
        self.names = names  # the client's verified name (None: always "unknown")

    def _links(self, session: Session) -> list[_Link]:
        links = session.data.get(_KEY)
        return links if isinstance(links, list) else []

    # -- session -------------------------------------------------------------------------

    async def connect(self, session: Session) -> None:
        links = [_Link(milter) for milter in self.settings]
        session.data[_KEY] = links
        ip = session.remote_ip
        # The client's name is looked up while the milters are connected to.
        named = self.names(ip) if self.names is not None and ip else _unnamed()
        _, found = await asyncio.gather(
            asyncio.gather(*(self._open(link) for link in links)), named
        )
        host = found.name
        values = {
            "j": self.hostname,
            "{daemon_name}": "smtpx",
            "{if_addr}": None if session.local is None else session.local[0],
            "{client_addr}": ip,
            "{client_name}": host,
            "{client_ptr}": found.ptr,
            "{client_resolve}": found.status or None,
            "_": f"{host} [{ip}]" if ip else None,
            "v": f"smtpx {__version__}",
        }
        packet = wire.connect(host, session.remote)
        try:
            await self._stage(session, "connect", values, lambda link: [packet])
        except Reject:
            await self.disconnect(session)  # the server calls disconnect only when let in
            raise

    async def _open(self, link: _Link) -> None:
        milter = link.settings
        timeouts = (milter.command_timeout, milter.content_timeout)
        try:
            opener = self.opener(milter)
            link.connection = await MilterConnection.open(opener, milter.connect_timeout, timeouts)
        except MilterUnavailable as exc:
            self.stats.failures[milter.name, "open"] += 1
            log.warning("milter %s (%s): %s", milter.name, milter.address, exc)

    async def helo(self, session: Session, name: str) -> None:
        values = {"{tls_version}": session.tls_version}
        packet = wire.strings(b"H", name)
        await self._stage(session, "helo", values, lambda link: [packet])

    async def unknown(self, session: Session, line: str) -> None:
        """SMFIC_UNKNOWN: a command no extension defines, as the client sent it; a milter
        may refuse it with its own reply (Postfix sends it too; no macros)."""
        packet = wire.strings(b"U", line)
        await self._stage(session, "unknown", {}, lambda link: [packet])

    async def disconnect(self, session: Session) -> None:
        for link in self._links(session):
            if link.connection is not None:
                await link.connection.close()
                link.connection = None

    # -- message -------------------------------------------------------------------------

    async def mail_from(self, session: Session, transaction: Transaction) -> None:
        for link in self._links(session):
            link.done_message = link.discarded = link.held = False
            if link.in_message and link.connection is not None:
                try:
                    await link.connection.abort()
                except MilterUnavailable as exc:
                    await self._fail(link, "abort", exc)
            link.in_message = link.connection is not None
        sender = transaction.sender
        values = {
            "i": str(transaction.id),
            "{auth_authen}": session.user if session.authenticated else None,
            "{mail_addr}": "" if sender.address is None else str(sender.address),
        }
        packet = wire.strings(b"M", sender.path(), *str(transaction.params).split())
        await self._stage(session, "mail", values, lambda link: [packet])

    async def rcpt_to(self, session: Session, transaction: Transaction, recipient: Address) -> None:
        values = {"i": str(transaction.id), "{rcpt_addr}": str(recipient)}
        packet = wire.strings(b"R", recipient.path())
        await self._stage(session, "rcpt", values, lambda link: [packet])

    async def accept_data(self, session: Session, transaction: Transaction) -> None:
        values = {"i": str(transaction.id)}
        await self._stage(session, "data", values, lambda link: [wire.command(b"T")])

    async def end_of_message(
        self, session: Session, transaction: Transaction, message: Message
    ) -> Outcome:
        """Send the content to each milter in turn, each seeing the message as the ones
        before it changed it, and apply its changes before the next (refusals raise; a
        discard ends it: the milters after it are not asked)."""
        values = {"i": str(transaction.id)}
        outcome = Outcome(message)
        for link in self._links(session):
            if link.discarded:  # at an earlier stage
                outcome.discarded_by = link.settings.name
                return outcome
        for link in self._links(session):
            self._check_failed(link)
            if not link.live():
                continue
            head, body = split(outcome.message)
            answer = await self._content(link, values, edit.parse_head(head), body)
            if answer is None:
                continue
            link.in_message = False
            self._verdict(link, "eom", answer)
            if link.discarded:
                outcome.discarded_by = link.settings.name
                return outcome
            assert link.connection is not None
            spaced = bool(link.connection.negotiated.protocol & wire.Proto.HDR_LEADSPC)
            apply_changes(outcome, link.settings.name, spaced, answer.changes)
        held = [link.settings.name for link in self._links(session) if link.held]
        if held and outcome.quarantine is None:
            outcome.quarantine = f"milter {held[0]} unavailable (default_action = quarantine)"
        return outcome

    async def _content(
        self, link: _Link, values: Mapping[str, str | None], fields: list[edit.Field], body: Message
    ) -> Answer | None:
        """The header, body and end of the message for one milter; its final answer
        (None when it finished earlier: accepted, or unavailable with ``accept``)."""
        assert link.connection is not None
        spaced = bool(link.connection.negotiated.protocol & wire.Proto.HDR_LEADSPC)
        for name, rest in fields:
            packet = wire.strings(b"L", name, edit.to_milter(rest, spaced))
            if not await self._step(link, "header", values, [packet]):
                return None
        if not await self._step(link, "eoh", values, [wire.command(b"N")]):
            return None
        chunks = [body] if isinstance(body, bytes) else body.chunks()
        sends_body = link.connection.negotiated.sends("body")
        for packet in wire.body_chunks(chunks) if sends_body else ():
            answer = await self._ask(link, "body", values, [packet])
            if answer is not None and answer.verdict is Verdict.SKIP:
                break
            if not self._continues(link, "body", answer):
                return None
        return await self._ask(link, "eom", values, [wire.command(b"E")])

    async def _step(
        self, link: _Link, stage: str, values: Mapping[str, str | None], packets: list[bytes]
    ) -> bool:
        return self._continues(link, stage, await self._ask(link, stage, values, packets))

    def _continues(self, link: _Link, stage: str, answer: Answer | None) -> bool:
        if answer is None:
            return False
        if answer.verdict is not None and answer.verdict is not Verdict.CONTINUE:
            self._verdict(link, stage, answer)
        return link.live()

    # -- the stages ----------------------------------------------------------------------

    async def _stage(
        self,
        session: Session,
        stage: str,
        values: Mapping[str, str | None],
        packets: Callable[[_Link], list[bytes]],
    ) -> None:
        message = stage not in _SESSION_STAGES
        for link in self._links(session):
            if message:
                self._check_failed(link)
            if link.live():
                answer = await self._ask(link, stage, values, packets(link))
                if answer is not None:
                    self._verdict(link, stage, answer)

    async def _ask(
        self, link: _Link, stage: str, values: Mapping[str, str | None], packets: list[bytes]
    ) -> Answer | None:
        """The milter's answer (None: it failed, and its default action let mail on)."""
        connection = link.connection
        assert connection is not None
        negotiated = connection.negotiated
        if not negotiated.sends(stage):
            return Answer(Verdict.CONTINUE)
        wanted = {n: v for n in negotiated.macros_at(stage) if (v := values.get(n)) is not None}
        code = wire.STAGES[stage].code
        macros = [wire.macros(code, wanted)] if wanted else []
        try:
            return await connection.stage(stage, macros + packets)
        except MilterUnavailable as exc:
            await self._fail(link, stage, exc)
        if stage not in _SESSION_STAGES:
            self._check_failed(link)
        return None

    async def _fail(self, link: _Link, stage: str, exc: Exception) -> None:
        milter = link.settings
        self.stats.failures[milter.name, stage] += 1
        log.warning(
            "milter %s (%s) at %s: %s; default action %s",
            milter.name, milter.address, stage, exc, milter.default_action,
        )  # fmt: skip
        connection, link.connection = link.connection, None
        if connection is not None:
            await connection.close()

    def _check_failed(self, link: _Link) -> None:
        """A milter out of use answers with its default action: a refusal, or (once a
        message) the hold that puts the message in quarantine at its end."""
        action = link.settings.default_action
        if link.connection is None and action != "accept":
            if action == "quarantine":
                if not link.held:
                    link.held = True
                    self.stats.default_actions[link.settings.name, action] += 1
                return
            self.stats.default_actions[link.settings.name, action] += 1
            raise Reject(REPLIES[action])

    def _verdict(self, link: _Link, stage: str, answer: Answer) -> None:
        """Act on a final answer (None: no reply expected)."""
        self._count(link, stage, answer)
        if answer.reply is not None:
            self._refused(link, stage, reply_of(answer.reply))
        verdict = answer.verdict
        if verdict is Verdict.ACCEPT:
            if stage in ("connect", "helo"):
                link.done_session = True
            link.done_message = True
        elif verdict in (Verdict.REJECT, Verdict.TEMPFAIL):
            key = "reject" if verdict is Verdict.REJECT else "tempfail"
            refusal = CONNECT_REJECT if stage == "connect" and key == "reject" else REPLIES[key]
            self._refused(link, stage, refusal)
        elif verdict in (Verdict.CONN_FAIL, Verdict.SHUTDOWN):
            self._refused(link, stage, SHUTDOWN)
        elif verdict is Verdict.DISCARD and stage not in ("connect", "helo"):
            link.done_message = link.discarded = True
            log.info("milter %s discards the message (at %s)", link.settings.name, stage)

    def _count(self, link: _Link, stage: str, answer: Answer) -> None:
        if answer.reply is not None:
            name = "reply"
        elif answer.verdict is None or answer.verdict is Verdict.CONTINUE:
            return
        else:
            name = _VERDICT_NAMES.get(answer.verdict, answer.verdict.name.lower())
        self.stats.verdicts[link.settings.name, stage, name] += 1

    def _refused(self, link: _Link, stage: str, reply: Reply) -> None:
        log.info("milter %s refused at %s: %s", link.settings.name, stage, reply)
        raise Reject(reply)
