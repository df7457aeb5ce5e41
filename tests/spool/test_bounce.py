"""Tests for smtpx.spool.bounce: delivery status notifications (RFC 3464, RFC 3461).

Every notification is parsed back with the stdlib parser and checked by structure.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import re
from typing import Any

import pytest

from smtpx.envelope import Envelope, EnvelopeId, EnvelopeIdGenerator
from smtpx.protocol.addresses import Address, Sender
from smtpx.protocol.params import MailParams, RcptParams
from smtpx.protocol.replies import Reply
from smtpx.spool.bounce import RecipientFailure, build_bounce, build_delay_warning

MTA = "mta.example.org"
NOW = 1_700_000_000.0
ARRIVAL = NOW - 3 * 3600 - 120  # three hours and two minutes earlier

ORIGINAL_TEXT = (
    "From: Alice <alice@example.com>\n"
    "To: bob@example.net\n"
    "Subject: quarterly numbers\n"
    "Message-ID: <orig-1@example.com>\n"
    "References: <root@example.com> <parent@example.com>\n"
    "\n"
    "Hello Bob,\n"
    "the numbers are attached.\n"
)
NO_SUCH_USER = Reply.parse("550 5.1.1 <bob@example.net>: No such user")


def original(
    params: str = "",
    *,
    sender: str = "alice@example.com",
    message: str | bytes = ORIGINAL_TEXT,
    recipients: tuple[str, ...] = ("bob@example.net",),
) -> Envelope:
    return Envelope.create(
        sender=sender, recipients=list(recipients), message=message, sender_args=params
    )


def failure(
    recipient: str = "bob@example.net", reply: Reply | None = NO_SUCH_USER, **kwargs: Any
) -> RecipientFailure:
    return RecipientFailure(Address.parse(recipient), reply, **kwargs)


def bounce(env: Envelope, failures: list[RecipientFailure], **kwargs: Any) -> Envelope:
    result = build_bounce(
        env,
        failures,
        reporting_mta=MTA,
        now=NOW,
        arrival_date=ARRIVAL,
        **kwargs,
    )
    assert result is not None
    return result


def parse(env: Envelope) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(env.message, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    assert not parsed.defects
    return parsed


def parts(msg: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    payload = msg.get_payload()
    assert isinstance(payload, list)
    out = []
    for part in payload:
        assert isinstance(part, email.message.EmailMessage)
        out.append(part)
    return out


def status_blocks(msg: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    """The header blocks of the message/delivery-status part: per-message, then recipients."""
    (status_part,) = [p for p in parts(msg) if p.get_content_type() == "message/delivery-status"]
    blocks = status_part.get_payload()
    assert isinstance(blocks, list)
    out = []
    for block in blocks:
        assert isinstance(block, email.message.EmailMessage)
        out.append(block)
    return out


def text_of(msg: email.message.EmailMessage) -> str:
    content = parts(msg)[0].get_content()
    assert isinstance(content, str)
    return content


def unescape_utf8_xtext(text: str) -> str:
    """RFC 6533 utf-8-addr-xtext back to the address."""
    return re.sub(r"\\x\{([0-9A-Fa-f]+)\}", lambda m: chr(int(m[1], 16)), text)


# ---------------------------------------------------------------------------------------
# Structure


def test_multipart_report_with_three_parts() -> None:
    msg = parse(bounce(original("RET=FULL"), [failure()]))
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["MIME-Version"] == "1.0"
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("mx.straße.example", "mx.xn--strae-oqa.example"),  # IDNA 2003: mx.strasse.example
        ("ｍｘ.example", "mx.example"),
        ("mx.☃.example", "mx.\\x{2603}.example"),  # IDNA 2008 refuses it: escaped, not lost
    ],
)
def test_mta_names_are_idna_2008_a_labels(host: str, expected: str) -> None:
    notice = build_bounce(
        original(), [failure(remote_mta=host)], reporting_mta=host, now=NOW, arrival_date=ARRIVAL
    )
    assert notice is not None
    per_message, per_recipient = status_blocks(parse(notice))
    assert per_message["Reporting-MTA"] == f"dns; {expected}"
    assert per_recipient["Remote-MTA"] == f"dns; {expected}"


def test_per_message_fields() -> None:
    msg = parse(bounce(original(), [failure()]))
    per_message = status_blocks(msg)[0]
    assert per_message["Reporting-MTA"] == f"dns; {MTA}"
    arrival = email.utils.parsedate_to_datetime(str(per_message["Arrival-Date"]))
    assert arrival.timestamp() == ARRIVAL
    assert per_message["Original-Envelope-Id"] is None
    assert per_message["Final-Recipient"] is None


def test_original_envelope_id_is_reported_decoded() -> None:
    msg = parse(bounce(original("ENVID=QQ314159+2Bx"), [failure()]))
    assert status_blocks(msg)[0]["Original-Envelope-Id"] == "QQ314159+x"


def test_arrival_date_defaults_to_the_envelope_id_time() -> None:
    gen = EnvelopeIdGenerator(now_ns=lambda: 1_600_000_000 * 10**9)
    env = Envelope.create(
        sender="alice@example.com",
        recipients=["bob@example.net"],
        message=ORIGINAL_TEXT,
        id=EnvelopeId.create(gen),
    )
    result = build_bounce(env, [failure()], reporting_mta=MTA, now=NOW)
    assert result is not None
    arrival = email.utils.parsedate_to_datetime(
        str(status_blocks(parse(result))[0]["Arrival-Date"])
    )
    assert arrival.timestamp() == 1_600_000_000


def test_per_recipient_fields() -> None:
    msg = parse(bounce(original(), [failure(remote_mta="mx1.example.net")]))
    blocks = status_blocks(msg)
    assert len(blocks) == 2
    rcpt = blocks[1]
    assert rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx1.example.net"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: No such user"
    assert rcpt["Original-Recipient"] is None
    assert rcpt["Reporting-MTA"] is None


def test_one_block_per_reported_recipient_in_order() -> None:
    env = original(recipients=("bob@example.net", "carol@example.org"))
    quota = Reply.parse("552 5.2.2 Mailbox full")
    msg = parse(bounce(env, [failure(), failure("carol@example.org", quota)]))
    blocks = status_blocks(msg)[1:]
    assert [b["Final-Recipient"] for b in blocks] == [
        "rfc822; bob@example.net",
        "rfc822; carol@example.org",
    ]
    assert [b["Status"] for b in blocks] == ["5.1.1", "5.2.2"]


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply.of(554, "Transaction failed"), "5.0.0"),
        (Reply.of(550, "Rejected"), "5.0.0"),
        (Reply.of(451, "Try again later"), "4.0.0"),
        (Reply.of(550, "Rejected", "5.7.1"), "5.7.1"),
    ],
)
def test_status_from_the_reply(reply: Reply, status: str) -> None:
    msg = parse(bounce(original(), [failure(reply=reply)]))
    assert status_blocks(msg)[1]["Status"] == status


def test_explicit_status_overrides_the_reply() -> None:
    msg = parse(bounce(original(), [failure(reply=Reply.of(451, "later"), status="4.4.7")]))
    assert status_blocks(msg)[1]["Status"] == "4.4.7"


def test_local_failure_uses_status_and_diagnostic() -> None:
    local = failure(reply=None, status="5.4.4", diagnostic="no route to host example.net")
    msg = parse(bounce(original(), [local]))
    rcpt = status_blocks(msg)[1]
    assert rcpt["Status"] == "5.4.4"
    assert rcpt["Remote-MTA"] is None
    assert rcpt["Diagnostic-Code"] == "X-Smtpx; no route to host example.net"
    assert "no route to host example.net" in text_of(msg)


def test_local_failure_without_status_is_5_0_0() -> None:
    msg = parse(bounce(original(), [failure(reply=None)]))
    assert status_blocks(msg)[1]["Status"] == "5.0.0"
    assert status_blocks(msg)[1]["Diagnostic-Code"] is None


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply.parse("552 5.3.4 Message of 900 octets is over mx.test's limit of 20"), "5.3.4"),
        (Reply.parse("554-Delivery time expired\r\n554 last error: refused"), "5.0.0"),
        (Reply.parse("452 mailbox full"), "4.0.0"),
    ],
)
def test_a_reply_made_up_here_is_reported_as_a_local_diagnostic(reply: Reply, status: str) -> None:
    """RecipientFailure.of without a remote MTA: no Remote-MTA, no ``smtp;`` diagnostic,
    no "said" (RFC 3464 2.3.5, 2.3.6)."""
    local = RecipientFailure.of(Address.parse("bob@example.net"), reply, remote_mta=None)
    assert local.reply is None
    msg = parse(bounce(original(), [local]))
    rcpt = status_blocks(msg)[1]
    assert rcpt["Status"] == status
    assert rcpt["Remote-MTA"] is None
    assert rcpt["Diagnostic-Code"] == "X-Smtpx; " + " ".join(reply.lines)
    assert " said" not in text_of(msg) and " ".join(reply.lines) in text_of(msg)


def test_a_reply_a_remote_mta_sent_is_reported_as_one() -> None:
    remote = RecipientFailure.of(
        Address.parse("bob@example.net"), NO_SUCH_USER, remote_mta="mx.test"
    )
    rcpt = status_blocks(parse(bounce(original(), [remote])))[1]
    assert rcpt["Remote-MTA"] == "dns; mx.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: No such user"
    assert rcpt["Status"] == "5.1.1"


def test_multiline_reply_is_joined_on_one_field() -> None:
    reply = Reply.parse(
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
        "550 5.1.1 Please check the address."
    )
    msg = parse(bounce(original(), [failure(reply=reply)]))
    diagnostic = str(status_blocks(msg)[1]["Diagnostic-Code"])
    assert diagnostic == (
        "smtp; 550-5.1.1 The email account that you tried to reach does not exist."
        " 550 5.1.1 Please check the address."
    )


def test_long_values_are_not_turned_into_encoded_words() -> None:
    local = "a" * 64
    domain = "sub." + "b" * 60 + ".example.net"
    reply = Reply.of(550, f"<{local}@{domain}>: Recipient address rejected: " + "x" * 300)
    msg = parse(bounce(original(), [failure(f"{local}@{domain}", reply)]))
    rcpt = status_blocks(msg)[1]
    assert rcpt["Final-Recipient"] == f"rfc822; {local}@{domain}"
    assert f"<{local}@{domain}>" in str(rcpt["Diagnostic-Code"])
    assert "x" * 300 in str(rcpt["Diagnostic-Code"])
    result = bounce(original(), [failure(f"{local}@{domain}", reply)])
    assert b"=?" not in result.message


def test_raw_octets_in_a_reply_stay_ascii_in_the_report() -> None:
    reply = Reply.parse(b"550 5.1.1 Unbekannter Empf\xe4nger")  # latin-1, not UTF-8
    result = bounce(original(), [failure(reply=reply)])
    rcpt = status_blocks(parse(result))[1]
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 Unbekannter Empf\\x{FFFD}nger"


def test_original_recipient_from_orcpt() -> None:
    orcpt = RcptParams.parse("ORCPT=rfc822;Bob+2Bsales@example.net").orcpt
    msg = parse(bounce(original(), [failure(orcpt=orcpt)]))
    assert status_blocks(msg)[1]["Original-Recipient"] == "rfc822; Bob+sales@example.net"


def test_human_readable_part_names_recipients_and_replies() -> None:
    env = original(recipients=("bob@example.net", "carol@example.org"))
    quota = Reply.parse("552 5.2.2 Mailbox full")
    msg = parse(
        bounce(env, [failure(remote_mta="mx1.example.net"), failure("carol@example.org", quota)])
    )
    text = text_of(msg)
    assert f"This is the mail system at host {MTA}." in text
    assert "<bob@example.net>: host mx1.example.net said:" in text
    assert "550 5.1.1 <bob@example.net>: No such user" in text
    assert "<carol@example.org>: the remote server said:" in text
    assert "552 5.2.2 Mailbox full" in text
    assert parts(msg)[0].get_content_charset() == "utf-8"


# ---------------------------------------------------------------------------------------
# Headers and envelope


def test_notification_headers() -> None:
    msg = parse(bounce(original(), [failure()]))
    assert msg["From"] == f"Mail Delivery System <MAILER-DAEMON@{MTA}>"
    assert msg["To"] == "alice@example.com"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert email.utils.parsedate_to_datetime(str(msg["Date"])).timestamp() == NOW
    assert str(msg["Message-ID"]).endswith(f"@{MTA}>")
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<orig-1@example.com>"
    assert str(msg["References"]).split() == [
        "<root@example.com>",
        "<parent@example.com>",
        "<orig-1@example.com>",
    ]


def test_postmaster_address_replaces_mailer_daemon() -> None:
    msg = parse(bounce(original(), [failure()], postmaster="postmaster@example.org"))
    assert msg["From"] == "Mail Delivery System <postmaster@example.org>"


def test_no_in_reply_to_without_an_original_message_id() -> None:
    env = original(message="From: alice@example.com\nSubject: no id\n\nbody\n")
    msg = parse(bounce(env, [failure()]))
    assert msg["In-Reply-To"] is None
    assert msg["References"] is None
    assert msg["Auto-Submitted"] == "auto-replied"


def test_envelope_goes_from_null_sender_to_the_original_sender() -> None:
    env = original()
    result = bounce(env, [failure()])
    assert result.info.sender == Sender.NULL
    assert result.info.sender.is_null
    assert result.info.recipients == (Address.parse("alice@example.com"),)
    assert result.info.id != env.info.id
    assert result.info.sender_args == MailParams()  # all ASCII: no SMTPUTF8, no 8BITMIME
    assert b"\n" not in result.message.replace(b"\r\n", b"")


def test_null_sender_gets_no_bounce() -> None:
    env = original(sender="<>")
    assert env.info.sender.is_null
    assert build_bounce(env, [failure()], reporting_mta=MTA, now=NOW) is None
    assert build_delay_warning(env, [failure()], reporting_mta=MTA, now=NOW) is None


def test_nothing_to_report_gives_none() -> None:
    assert build_bounce(original(), [], reporting_mta=MTA, now=NOW) is None


# ---------------------------------------------------------------------------------------
# Returned content (RET, RFC 3461 4.3)


def returned_part(result: Envelope) -> email.message.EmailMessage:
    return parts(parse(result))[2]


def test_ret_full_returns_the_whole_message() -> None:
    env = original("RET=FULL")
    part = returned_part(bounce(env, [failure()]))
    assert part.get_content_type() == "message/rfc822"
    inner = part.get_content()
    assert isinstance(inner, email.message.EmailMessage)
    assert inner["Subject"] == "quarterly numbers"
    assert inner["Message-ID"] == "<orig-1@example.com>"
    # The stdlib parser keeps the CRLF line ends of the wire form in payloads.
    assert inner.get_content().splitlines() == ["Hello Bob,", "the numbers are attached."]
    assert env.message in bounce(env, [failure()]).message  # returned byte for byte


def test_ret_hdrs_returns_the_header_section_only() -> None:
    part = returned_part(bounce(original("RET=HDRS"), [failure()]))
    assert part.get_content_type() == "text/rfc822-headers"
    headers = part.get_content()
    assert isinstance(headers, str)
    assert "Subject: quarterly numbers" in headers
    assert "Message-ID: <orig-1@example.com>" in headers
    assert "Hello Bob" not in headers


def test_without_ret_the_headers_come_back() -> None:
    part = returned_part(bounce(original(), [failure()]))
    assert part.get_content_type() == "text/rfc822-headers"
    assert "the numbers are attached" not in str(part.get_content())


def test_return_content_overrides_ret() -> None:
    full = returned_part(bounce(original(), [failure()], return_content=True))
    assert full.get_content_type() == "message/rfc822"
    hdrs = returned_part(bounce(original("RET=FULL"), [failure()], return_content=False))
    assert hdrs.get_content_type() == "text/rfc822-headers"


def test_message_over_max_returned_comes_back_as_headers() -> None:
    env = original("RET=FULL", message=ORIGINAL_TEXT + "x" * 2000 + "\n")
    small = returned_part(bounce(env, [failure()], max_returned=1000))
    assert small.get_content_type() == "text/rfc822-headers"
    assert "x" * 100 not in str(small.get_content())
    fits = returned_part(bounce(env, [failure()], max_returned=len(env.message)))
    assert fits.get_content_type() == "message/rfc822"


def test_binarymime_original_comes_back_as_headers() -> None:
    part = returned_part(bounce(original("RET=FULL BODY=BINARYMIME"), [failure()]))
    assert part.get_content_type() == "text/rfc822-headers"


def test_eight_bit_original_is_returned_intact_with_8bitmime() -> None:
    body = "Grüße aus Köln\n".encode()
    message = ORIGINAL_TEXT.encode().split(b"\n\n")[0] + (
        b"\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body
    )
    env = original("RET=FULL BODY=8BITMIME", message=message)
    result = bounce(env, [failure()])
    assert result.info.sender_args.body == "8BITMIME"
    assert not result.info.sender_args.smtputf8
    inner = returned_part(result).get_content()
    assert isinstance(inner, email.message.EmailMessage)
    assert inner.get_content().splitlines() == ["Grüße aus Köln"]


# ---------------------------------------------------------------------------------------
# NOTIFY (RFC 3461 4.1)


@pytest.mark.parametrize("notify", ["NEVER", "SUCCESS", "DELAY", "SUCCESS,DELAY"])
def test_no_bounce_when_failure_was_not_asked_for(notify: str) -> None:
    params = RcptParams.parse(f"NOTIFY={notify}")
    failures = [failure(notify=params.notify)]
    assert build_bounce(original(), failures, reporting_mta=MTA, now=NOW) is None


@pytest.mark.parametrize("notify", ["FAILURE", "SUCCESS,FAILURE", "FAILURE,DELAY"])
def test_bounce_when_failure_was_asked_for(notify: str) -> None:
    params = RcptParams.parse(f"NOTIFY={notify}")
    result = build_bounce(original(), [failure(notify=params.notify)], reporting_mta=MTA, now=NOW)
    assert result is not None
    assert status_blocks(parse(result))[1]["Action"] == "failed"


def test_only_recipients_that_asked_are_reported() -> None:
    env = original(recipients=("bob@example.net", "carol@example.org", "dan@example.org"))
    failures = [
        failure(notify=("NEVER",)),
        failure("carol@example.org", Reply.of(550, "unknown", "5.1.1")),  # no NOTIFY: reported
        failure("dan@example.org", notify=("SUCCESS",)),
    ]
    msg = parse(bounce(env, failures))
    assert [b["Final-Recipient"] for b in status_blocks(msg)[1:]] == ["rfc822; carol@example.org"]
    assert "bob@example.net" not in text_of(msg)
    assert "dan@example.org" not in text_of(msg)


def test_success_notice_only_when_asked() -> None:
    delivered = failure(reply=Reply.parse("250 2.0.0 Ok: queued as 4AB"), action="delivered")
    assert build_bounce(original(), [delivered], reporting_mta=MTA, now=NOW) is None
    asked = failure(
        reply=Reply.parse("250 2.0.0 Ok: queued as 4AB"), action="delivered", notify=("SUCCESS",)
    )
    msg = parse(bounce(original("RET=FULL"), [asked]))
    assert msg["Subject"] == "Successful Mail Delivery Report"
    assert status_blocks(msg)[1]["Action"] == "delivered"
    assert status_blocks(msg)[1]["Status"] == "2.0.0"
    # RET=FULL is about failures: a success notice returns the headers only.
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"


# ---------------------------------------------------------------------------------------
# Delay warnings


def delay_warning(env: Envelope, failures: list[RecipientFailure], **kwargs: Any) -> Envelope:
    result = build_delay_warning(
        env,
        failures,
        reporting_mta=MTA,
        now=NOW,
        arrival_date=ARRIVAL,
        **kwargs,
    )
    assert result is not None
    return result


def test_delay_warning_structure_and_fields() -> None:
    later = Reply.parse("451 4.7.1 Greylisted, try again later")
    until = NOW + 5 * 86400
    result = delay_warning(
        original("RET=FULL"),
        [failure(reply=later, remote_mta="mx1.example.net")],
        will_retry_until=until,
    )
    msg = parse(result)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert msg.get_content_type() == "multipart/report"
    rcpt = status_blocks(msg)[1]
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.7.1"
    assert "451 4.7.1 Greylisted, try again later" in str(rcpt["Diagnostic-Code"])
    retry = email.utils.parsedate_to_datetime(str(rcpt["Will-Retry-Until"]))
    assert retry.timestamp() == until
    text = text_of(msg)
    assert "3 hours" in text
    assert "YOU DO NOT NEED TO RESEND YOUR MESSAGE" in text
    # A delay notice returns the headers only, whatever RET says (RET is about failures).
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"
    assert result.info.sender.is_null


def test_delay_warning_without_reply_is_4_0_0() -> None:
    msg = parse(delay_warning(original(), [failure(reply=None, diagnostic="connection timed out")]))
    rcpt = status_blocks(msg)[1]
    assert rcpt["Status"] == "4.0.0"
    assert rcpt["Diagnostic-Code"] == "X-Smtpx; connection timed out"


@pytest.mark.parametrize("notify", ["DELAY", "FAILURE,DELAY", "SUCCESS,DELAY"])
def test_delay_warning_when_delay_was_asked_for(notify: str) -> None:
    notify_values = RcptParams.parse(f"NOTIFY={notify}").notify
    msg = parse(delay_warning(original(), [failure(notify=notify_values)]))
    assert status_blocks(msg)[1]["Action"] == "delayed"


@pytest.mark.parametrize("notify", ["NEVER", "FAILURE", "SUCCESS", "SUCCESS,FAILURE"])
def test_no_delay_warning_when_delay_was_not_asked_for(notify: str) -> None:
    notify_values = RcptParams.parse(f"NOTIFY={notify}").notify
    warning = build_delay_warning(
        original(), [failure(notify=notify_values)], reporting_mta=MTA, now=NOW
    )
    assert warning is None


def test_delay_warning_by_default() -> None:
    msg = parse(delay_warning(original(), [failure(reply=Reply.of(421, "busy"))]))
    assert status_blocks(msg)[1]["Status"] == "4.0.0"


# ---------------------------------------------------------------------------------------
# UTF-8 (RFC 6533, RFC 6531)


def test_utf8_recipient_uses_the_utf8_address_type() -> None:
    env = original(recipients=("chloé@exämple.net",))
    result = bounce(env, [failure("chloé@exämple.net")])
    rcpt = status_blocks(parse(result))[1]
    final = str(rcpt["Final-Recipient"])
    assert final.startswith("utf-8; ")
    assert final.isascii()  # the 7-bit utf-8-addr-xtext form in message/delivery-status
    assert unescape_utf8_xtext(final.removeprefix("utf-8; ")) == "chloé@exämple.net"
    text = text_of(parse(result))
    assert "<chloé@exämple.net>" in text
    # An ASCII sender still gets an ASCII notification.
    assert not result.info.sender_args.smtputf8
    assert result.message.isascii()


def test_utf8_orcpt() -> None:
    orcpt = RcptParams.parse("ORCPT=utf-8;j\\x{F6}rg@example.net").orcpt
    assert orcpt == ("utf-8", "jörg@example.net")
    msg = parse(bounce(original(), [failure(orcpt=orcpt)]))
    value = str(status_blocks(msg)[1]["Original-Recipient"])
    assert value == "utf-8; j\\x{F6}rg@example.net"


def test_utf8_sender_gets_an_smtputf8_notification() -> None:
    env = original("SMTPUTF8", sender="<jörg@exämple.de>")
    result = bounce(env, [failure()])
    assert result.info.recipients == (Address.parse("jörg@exämple.de"),)
    assert result.info.sender_args.smtputf8
    msg = parse(result)
    assert msg["To"] == "jörg@exämple.de"
    assert msg.get_content_type() == "multipart/report"
    assert status_blocks(msg)[1]["Final-Recipient"] == "rfc822; bob@example.net"


# ---------------------------------------------------------------------------------------
# RecipientFailure


def test_recipient_failure_validates() -> None:
    bob = Address.parse("bob@example.net")
    with pytest.raises(ValueError, match="action"):
        RecipientFailure(bob, None, action="bounced")
    with pytest.raises(ValueError, match="enhanced status"):
        RecipientFailure(bob, None, status="5.1")
    with pytest.raises(ValueError, match="notify"):
        RecipientFailure(bob, None, notify=("SOMETIMES",))
    with pytest.raises(ValueError, match="CR or LF"):
        RecipientFailure(bob, None, diagnostic="two\r\nlines")
    with pytest.raises(TypeError):
        RecipientFailure("bob@example.net", None)  # type: ignore[arg-type]


def test_recipient_failure_wants_notice() -> None:
    bob = Address.parse("bob@example.net")
    assert RecipientFailure(bob, None).wants_notice
    assert RecipientFailure(bob, None, action="delayed").wants_notice
    assert not RecipientFailure(bob, None, action="delivered").wants_notice
    assert not RecipientFailure(bob, None, notify=("NEVER",)).wants_notice
    assert RecipientFailure(bob, None, notify=("failure",)).wants_notice  # case-insensitive
