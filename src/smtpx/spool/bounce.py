"""Delivery status notifications: bounces and delay warnings (RFC 3464, RFC 3461).

When the spool gives up on recipients (or, for a delay warning, is still retrying them),
:func:`build_bounce` writes the notification the original sender gets back: a
``multipart/report; report-type=delivery-status`` message (RFC 6522) made of

1. a ``text/plain`` part for people: which recipients failed and what the remote server
   said;
2. a ``message/delivery-status`` part for programs (RFC 3464 section 2): one block of
   per-message fields, then one block per recipient;
3. the original: the whole message as ``message/rfc822``, or its header section as
   ``text/rfc822-headers``.

The message is built with the stdlib :mod:`email` package only; MIME is never written by
hand. It comes back as an :class:`~smtpx.envelope.Envelope` from the null sender ``<>``
(so that it can never cause a bounce itself, RFC 5321 section 4.5.5) to the original
sender, ready for the spool.

What the envelope asked for is honoured (RFC 3461):

* a recipient is reported only if its ``NOTIFY`` asked for this kind of notice: FAILURE
  for ``failed``, DELAY for ``delayed``, SUCCESS for ``delivered``/``relayed``/
  ``expanded``. Without NOTIFY, failures and delays are reported and successes are not
  (RFC 3461 section 4.1). NOTIFY=NEVER silences every notice;
* ``RET=FULL`` returns the whole message in a failure notice, ``RET=HDRS`` the headers
  only (section 4.3). RET only speaks of "failed" DSNs, so delay and success notices
  return the headers unless the caller asks for more;
* ``ENVID`` comes back as ``Original-Envelope-Id`` (section 4.4) and ``ORCPT`` as
  ``Original-Recipient`` (section 4.2).

This module does no I/O and reads no clock unless ``now`` is left out.
"""

from __future__ import annotations

import dataclasses
import email.headerregistry
import email.message
import email.parser
import email.policy
import email.utils
import re
import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime

from smtpx.envelope import Envelope
from smtpx.errors import ParseError
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.domains import domain_to_ascii
from smtpx.protocol.params import MailParams, xtext_encode
from smtpx.protocol.replies import EnhancedStatus, Reply

__all__ = [
    "ACTIONS",
    "DEFAULT_MAX_RETURNED",
    "RecipientFailure",
    "build_bounce",
    "build_delay_warning",
]

# RFC 3464 section 2.3.3: the values of the Action field.
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
# RFC 3461 section 4.1: which NOTIFY keyword asks for a notice with a given action.
_NOTIFY_KEYWORD = {
    "failed": "FAILURE",
    "delayed": "DELAY",
    "delivered": "SUCCESS",
    "relayed": "SUCCESS",
    "expanded": "SUCCESS",
}
_NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")
# RFC 3461 section 4.1: "If the NOTIFY parameter is not specified, then [the MTA]
# SHOULD issue [...] as if NOTIFY=FAILURE,DELAY had been specified".
_DEFAULT_NOTIFY = ("FAILURE", "DELAY")

DEFAULT_MAX_RETURNED = 64 * 1024

# RFC 5322 2.1.1: a line is at most 998 characters. The notification is generated with
# that limit rather than the policy's 78: the stdlib folds a header token that does not
# fit in 78 columns by turning it into RFC 2047 encoded-words, which would garble the
# addresses and reply text of the delivery-status fields (they are not RFC 2047 text).
_MAX_LINE = 998
# A single word of a reply longer than this is cut, so that it fits on one header line.
_MAX_WORD = 900
_DIAGNOSTIC_LOCAL = "X-Smtpx"  # RFC 3464 2.3.6: diagnostic-type for a failure found here

_MSG_ID_RE = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")  # printable ASCII but < and >

_SUBJECTS = {
    "failure": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
}


@dataclass(frozen=True, slots=True)
class RecipientFailure:
    """What happened to one recipient, as a notification reports it.

    ``reply`` is the remote server's reply, or None when the failure was found here (no
    route to the domain, a timeout, a local policy): then ``diagnostic`` explains it in
    words and ``status`` gives the RFC 3463 code (for example ``"5.4.4"``).

    * ``action`` is the RFC 3464 Action: ``failed`` (the default), ``delayed``,
      ``delivered``, ``relayed`` or ``expanded``.
    * ``status`` overrides the status read from the reply. Without it, the status is the
      reply's enhanced code, else ``X.0.0`` of the reply's class, else ``5.0.0`` for a
      failure, ``4.0.0`` for a delay and ``2.0.0`` for a success.
    * ``remote_mta`` is the host that gave the reply (``Remote-MTA: dns; host``).
    * ``orcpt`` and ``notify`` are the recipient's RCPT parameters
      (:attr:`~smtpx.protocol.params.RcptParams.orcpt` and ``.notify``, as parsed).
    * ``diagnostic`` is more text for the human-readable part; for a local failure it is
      also the ``Diagnostic-Code``.
    * ``last_attempt`` and ``will_retry_until`` are Unix times for the optional
      ``Last-Attempt-Date`` and ``Will-Retry-Until`` fields.
    """

    recipient: Address
    reply: Reply | None
    _: KW_ONLY
    remote_mta: str | None = None
    action: str = "failed"
    status: str | None = None
    orcpt: tuple[str, str] | None = None
    notify: tuple[str, ...] | None = None
    diagnostic: str | None = None
    last_attempt: float | None = None
    will_retry_until: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.recipient, Address):
            raise TypeError("recipient must be an Address")
        if self.reply is not None and not isinstance(self.reply, Reply):
            raise TypeError("reply must be a Reply or None")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if self.status is not None:
            EnhancedStatus.parse(self.status)  # raises ParseError (a ValueError)
        if self.notify is not None:
            notify = tuple(value.upper() for value in self.notify)
            if notify != ("NEVER",) and (
                not notify or any(value not in _NOTIFY_VALUES for value in notify)
            ):
                raise ValueError("notify is ('NEVER',) or a tuple of SUCCESS, FAILURE, DELAY")
            object.__setattr__(self, "notify", notify)
        if self.orcpt is not None:
            addr_type, addr = self.orcpt
            if not addr_type or not addr:
                raise ValueError("orcpt is (address type, address), both non-empty")
        for name in ("remote_mta", "diagnostic"):
            value = getattr(self, name)
            if value is not None and ("\r" in value or "\n" in value):
                raise ValueError(f"{name} must not contain CR or LF")

    @classmethod
    def of(cls, recipient: Address, reply: Reply, *, remote_mta: str | None) -> RecipientFailure:
        """The failure of ``recipient`` with ``reply``, which ``remote_mta`` sent, or which
        this host made up itself when ``remote_mta`` is None (no route to the domain, a
        message the next hop could not take, a local mailbox).

        Only a reply a remote MTA sent is reported as one: with ``Remote-MTA`` and
        ``Diagnostic-Code: smtp`` (RFC 3464 2.3.5 and 2.3.6), and "host X said" in the
        text. A reply made up here becomes the status and the local diagnostic instead.
        """
        if remote_mta is not None:
            return cls(recipient, reply, remote_mta=remote_mta)
        status = reply.enhanced or (f"{reply.code // 100}.0.0" if reply.code >= 400 else None)
        return cls(
            recipient,
            None,
            status=None if status is None else str(status),
            diagnostic=" ".join(reply.lines),
        )

    @property
    def status_code(self) -> str:
        """The RFC 3463 status reported for this recipient, e.g. ``"5.1.1"``."""
        if self.status is not None:
            return str(EnhancedStatus.parse(self.status))
        if self.reply is not None:
            if self.reply.enhanced is not None:
                return str(self.reply.enhanced)
            return f"{self.reply.code // 100}.0.0"
        return {"failed": "5.0.0", "delayed": "4.0.0"}.get(self.action, "2.0.0")

    @property
    def wants_notice(self) -> bool:
        """Whether the recipient's NOTIFY asks for a notice about this action (RFC 3461 4.1)."""
        notify = _DEFAULT_NOTIFY if self.notify is None else self.notify
        return _NOTIFY_KEYWORD[self.action] in notify


def build_bounce(
    original: Envelope,
    failures: Sequence[RecipientFailure],
    *,
    reporting_mta: str,
    postmaster: str | None = None,
    arrival_date: float | None = None,
    now: float | None = None,
    return_content: bool | None = None,
    max_returned: int = DEFAULT_MAX_RETURNED,
) -> Envelope | None:
    """The delivery status notification for ``failures`` of ``original``, or None.

    None means that no notice is due: the original sender is the null sender ``<>``
    (never bounce a bounce, RFC 5321 section 4.5.5), or no recipient in ``failures``
    asked for a notice of its action (:attr:`RecipientFailure.wants_notice`), which
    includes an empty ``failures``. Recipients that did not ask are left out of the notice.

    ``reporting_mta`` is this host's name (``Reporting-MTA: dns; ...``, and the domain of
    the ``MAILER-DAEMON`` From address unless ``postmaster``, an addr-spec, is given).
    ``arrival_date`` is when the original arrived (Unix time; by default the time in its
    envelope id) and ``now`` the time of the notice (by default the clock's).

    The original comes back whole, as ``message/rfc822``, in a notice that reports a
    failure when the sender asked ``RET=FULL`` or ``return_content`` is true, and the
    message is at most ``max_returned`` octets and not ``BODY=BINARYMIME`` (binary cannot
    travel inside a MIME part, RFC 3030 section 3). Otherwise only its header section is
    returned, as ``text/rfc822-headers``. ``return_content=False`` always returns headers
    only; ``return_content=True`` also returns the whole message in delay and success
    notices.

    The result is an envelope from ``<>`` to the original sender whose message has CRLF
    line endings. Its MAIL parameters say ``SMTPUTF8`` when the sender's address is UTF-8
    or UTF-8 headers of an SMTPUTF8 original come back, and ``BODY=8BITMIME`` when the
    message holds 8-bit octets.
    """
    sender = original.info.sender.address
    if sender is None:
        return None
    reported = [failure for failure in failures if failure.wants_notice]
    if not reported:
        return None
    now = time.time() if now is None else now
    arrival = original.info.id.timestamp if arrival_date is None else arrival_date
    actions = {failure.action for failure in reported}
    kind = "failure" if "failed" in actions else "delay" if "delayed" in actions else "success"

    params = original.info.sender_args
    header_bytes = original.split_bodiless()[0].headers
    utf8 = sender.is_utf8 or (params.smtputf8 and not header_bytes.isascii())
    base = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    policy = base.clone(max_line_length=_MAX_LINE)
    mta = _ascii_host(reporting_mta)

    report = email.message.MIMEPart(policy=policy)
    report["Date"] = _date(now)
    if postmaster is None:
        from_address = email.headerregistry.Address("Mail Delivery System", "MAILER-DAEMON", mta)
    else:
        from_address = email.headerregistry.Address("Mail Delivery System", addr_spec=postmaster)
    report["From"] = from_address
    report["To"] = email.headerregistry.Address(username=sender.local_part, domain=sender.domain)
    report["Subject"] = _SUBJECTS[kind]
    report["Message-ID"] = email.utils.make_msgid(domain=mta)
    msg_id, references = _thread(original)
    if msg_id is not None:
        report["In-Reply-To"] = msg_id
        report["References"] = " ".join(references)
    # RFC 3834 section 5: a notice generated by software, not a person, in reply.
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report"
    report.set_param("report-type", "delivery-status")  # RFC 6522 section 3

    notice = email.message.MIMEPart(policy=policy)
    _set_text(notice, _human_text(kind, reported, mta, arrival, now), "plain", utf8)
    notice["Content-Description"] = "Notification"
    report.attach(notice)

    report.attach(_delivery_status(policy, reported, mta, params, arrival))

    # RFC 3461 4.3: RET speaks only of "failed" DSNs.
    ret_full = kind == "failure" and params.ret == "FULL"
    full = ret_full if return_content is None else return_content
    returned = email.message.MIMEPart(policy=policy)
    if full and len(original.message) <= max_returned and params.body != "BINARYMIME":
        parsed = email.parser.BytesParser(policy=policy).parsebytes(original.message)
        cte = "7bit" if original.message.isascii() else "8bit"
        returned.set_content(parsed, subtype="rfc822", cte=cte)
        returned["Content-Description"] = "Undelivered Message" if kind == "failure" else "Message"
    else:
        headers = header_bytes.decode("utf-8", "replace").rstrip("\r\n")
        headers = "\n".join(headers.splitlines())
        _set_text(returned, headers + "\n", "rfc822-headers", utf8)
        returned["Content-Description"] = "Message Headers"
    report.attach(returned)

    data = report.as_bytes(policy=policy.clone(linesep="\r\n"))
    sender_args = MailParams(smtputf8=utf8, body=None if data.isascii() else "8BITMIME")
    return Envelope.create(
        sender=Sender.NULL, recipients=[sender], message=data, sender_args=sender_args
    )


def build_delay_warning(
    original: Envelope,
    delays: Sequence[RecipientFailure],
    *,
    reporting_mta: str,
    postmaster: str | None = None,
    arrival_date: float | None = None,
    now: float | None = None,
    will_retry_until: float | None = None,
    return_content: bool | None = None,
    max_returned: int = DEFAULT_MAX_RETURNED,
) -> Envelope | None:
    """A delay warning: :func:`build_bounce` with every recipient's action ``delayed``.

    Only recipients whose NOTIFY includes DELAY (or who gave no NOTIFY) are reported.
    ``will_retry_until`` (Unix time) fills ``Will-Retry-Until`` for recipients that do
    not set their own. Returns None as :func:`build_bounce` does.
    """
    delayed = [
        dataclasses.replace(
            failure,
            action="delayed",
            will_retry_until=(
                will_retry_until if failure.will_retry_until is None else failure.will_retry_until
            ),
        )
        for failure in delays
    ]
    return build_bounce(
        original,
        delayed,
        reporting_mta=reporting_mta,
        postmaster=postmaster,
        arrival_date=arrival_date,
        now=now,
        return_content=return_content,
        max_returned=max_returned,
    )


# ---------------------------------------------------------------------------------------
# The parts


def _delivery_status(
    policy: email.policy.EmailPolicy[email.message.EmailMessage],
    reported: Sequence[RecipientFailure],
    mta: str,
    params: MailParams,
    arrival: float,
) -> email.message.MIMEPart:
    """The ``message/delivery-status`` part (RFC 3464 section 2.1).

    Its payload is a list of header-only blocks; the stdlib writes them separated by
    empty lines, and its parser reads them back the same way.
    """
    blocks: list[email.message.MIMEPart] = []
    # RFC 3464 2.2: per-message-fields, in the order of the grammar.
    block = email.message.MIMEPart(policy=policy)
    if params.envid is not None:
        # The ENVID arrives xtext-encoded and is reported decoded (RFC 3461 4.4); a
        # value that is not printable ASCII is given back in its xtext form.
        envid = params.envid
        block["Original-Envelope-Id"] = envid if _printable(envid) else xtext_encode(envid)
    block["Reporting-MTA"] = f"dns; {mta}"
    block["Arrival-Date"] = _date(arrival)
    blocks.append(block)
    # RFC 3464 2.3: per-recipient-fields.
    for failure in reported:
        block = email.message.MIMEPart(policy=policy)
        if failure.orcpt is not None:
            addr_type, addr = failure.orcpt
            block["Original-Recipient"] = _typed_address(addr_type, addr)
        recipient = failure.recipient
        block["Final-Recipient"] = _typed_address("rfc822", str(recipient))
        block["Action"] = failure.action
        block["Status"] = failure.status_code
        if failure.remote_mta is not None:
            block["Remote-MTA"] = f"dns; {_ascii_host(failure.remote_mta)}"
        if failure.reply is not None:
            text = " ".join(_clean(line) for line in str(failure.reply).split("\n"))
            block["Diagnostic-Code"] = f"smtp; {_ascii_field(text)}"
        elif failure.diagnostic is not None:
            block["Diagnostic-Code"] = f"{_DIAGNOSTIC_LOCAL}; {_ascii_field(failure.diagnostic)}"
        if failure.last_attempt is not None:
            block["Last-Attempt-Date"] = _date(failure.last_attempt)
        if failure.will_retry_until is not None and failure.action == "delayed":
            block["Will-Retry-Until"] = _date(failure.will_retry_until)
        blocks.append(block)

    part = email.message.MIMEPart(policy=policy)
    # set_content gives the part its Content-Type and 7bit CTE (RFC 3464 2.1: the fields
    # are 7-bit); it takes one block, so the list of blocks is put in after.
    part.set_content(blocks[0], subtype="delivery-status")
    part.set_payload(list(blocks))
    part["Content-Description"] = "Delivery report"
    return part


def _human_text(
    kind: str, reported: Sequence[RecipientFailure], mta: str, arrival: float, now: float
) -> str:
    lines = [f"This is the mail system at host {mta}.", ""]
    if kind == "failure":
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. The details are below.",
            "",
            "If you need help, forward this message to your postmaster,",
            "with the problem report below.",
        ]
    elif kind == "delay":
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            f"Your message could not be delivered for {_duration(now - arrival)}.",
            "The mail system will keep trying to deliver it to the recipients",
            "below, and will tell you if it gives up.",
        ]
    else:
        lines += [
            "Your message was delivered to, or passed on towards, the recipients",
            "below, as you asked.",
        ]
    for action in ACTIONS:
        group = [failure for failure in reported if failure.action == action]
        if not group:
            continue
        lines += ["", _HEADINGS[action], ""]
        for failure in group:
            lines += _describe(failure)
    return "\n".join(lines).rstrip("\n") + "\n"


_HEADINGS = {
    "failed": "Delivery to these recipients failed:",
    "delayed": "Delivery to these recipients is delayed:",
    "delivered": "Delivered to:",
    "relayed": "Relayed to a system that does not send notices, for:",
    "expanded": "Delivered to the members of the list:",
}


def _describe(failure: RecipientFailure) -> list[str]:
    head = f"<{failure.recipient}>"
    if failure.reply is not None:
        who = f"host {failure.remote_mta}" if failure.remote_mta else "the remote server"
        lines = [f"{head}: {who} said:"]
        lines += [f"    {_clean(line)}" for line in str(failure.reply).split("\n")]
        if failure.diagnostic:
            lines.append(f"    ({_clean(failure.diagnostic)})")
    else:
        reason = failure.diagnostic or "no further details"
        lines = [f"{head}: {_clean(reason)} (status {failure.status_code})"]
    lines.append("")
    return lines


def _set_text(part: email.message.MIMEPart, text: str, subtype: str, eight_bit: bool) -> None:
    # The transfer encoding is chosen here rather than by the stdlib's heuristics: 8bit
    # only when the notification travels with SMTPUTF8, quoted-printable otherwise, so
    # that it needs no 8BITMIME on its way back (RFC 6152).
    fits = all(len(line.encode("utf-8")) <= _MAX_LINE for line in text.splitlines())
    if text.isascii() and fits:
        cte = "7bit"
    elif eight_bit and fits:
        cte = "8bit"
    else:
        cte = "quoted-printable"
    part.set_content(text, subtype=subtype, charset="utf-8", cte=cte)


# ---------------------------------------------------------------------------------------
# Field values


def _date(when: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(when, tz=UTC))


def _ascii_host(host: str) -> str:
    """A host name for an ``mta-name-type`` of ``dns``: U-labels become A-labels."""
    if "\r" in host or "\n" in host:
        raise ValueError(f"host name must not contain CR or LF: {host!r}")
    try:
        return domain_to_ascii(host)
    except ParseError:
        return _ascii_field(host)


def _clean(text: str) -> str:
    # Reply text may hold raw octets (kept as surrogate escapes): show them as U+FFFD.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _printable(text: str) -> bool:
    return all(0x20 <= ord(char) <= 0x7E for char in text)


def _ascii_field(text: str) -> str:
    """``text`` made printable ASCII for a delivery-status field, long words cut.

    Other characters become RFC 6533 ``\\x{HEX}`` escapes (EmbeddedUnicodeChar), the
    7-bit form a ``message/delivery-status`` part allows.
    """
    text = "".join(
        char if 0x20 <= ord(char) <= 0x7E else f"\\x{{{ord(char):X}}}" for char in _clean(text)
    )
    words = text.split(" ")
    return " ".join(word if len(word) <= _MAX_WORD else word[:_MAX_WORD] + "..." for word in words)


def _utf8_addr_xtext(addr: str) -> str:
    """RFC 6533 section 3 utf-8-addr-xtext: QCHAR as is, anything else as ``\\x{HEX}``."""
    return "".join(
        char if 0x21 <= ord(char) <= 0x7E and char not in "+=\\" else f"\\x{{{ord(char):X}}}"
        for char in addr
    )


def _typed_address(addr_type: str, addr: str) -> str:
    """``type; address`` for Final-Recipient and Original-Recipient (RFC 3464 2.3.1-2).

    A UTF-8 address is written with the ``utf-8`` type of RFC 6533 in its 7-bit
    utf-8-addr-xtext form, as a ``message/delivery-status`` part requires.
    """
    if addr_type.lower() == "utf-8" or not _printable(addr):
        return f"utf-8; {_utf8_addr_xtext(addr)}"
    return f"{addr_type}; {addr}"


def _thread(original: Envelope) -> tuple[str | None, list[str]]:
    """The original's Message-ID, and the References of a reply to it (RFC 5322 3.6.4)."""
    raw = original.last_header("Message-ID")
    match = _MSG_ID_RE.search(raw) if raw is not None else None
    if match is None:
        return None, []
    msg_id = match.group(0)
    parents = original.last_header("References")
    if parents is None:
        in_reply_to = original.last_header("In-Reply-To")
        ids = _MSG_ID_RE.findall(in_reply_to) if in_reply_to is not None else []
        parents_ids = ids if len(ids) == 1 else []
    else:
        parents_ids = _MSG_ID_RE.findall(parents)
    references = [ref for ref in parents_ids if ref != msg_id]
    references.append(msg_id)
    return msg_id, list(dict.fromkeys(references))


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
