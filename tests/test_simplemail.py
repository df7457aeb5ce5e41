"""Simplemail (F118-F121): composing with the stdlib, and sending to a scripted server."""

from __future__ import annotations

import datetime
import email
import email.policy
import re
from email.message import EmailMessage, Message, MIMEPart
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

import pytest

from smtpx import simplemail as sm
from smtpx.client import Accepted, ClientConfig, DeliveryError, RejectedAllRecipients
from smtpx.errors import ParseError
from smtpx.protocol import Address, Rcpt, Reply, replies
from smtpx.testing import Handler, ScriptedServer

FROM = "Alice Sender <alice@example.org>"
DATE = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)


def parse(data: bytes) -> EmailMessage:
    """Parse wire bytes (CRLF) with the stdlib, with text bodies read back with LF."""
    message = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def roundtrip(message: EmailMessage) -> EmailMessage:
    data = message.as_bytes()
    assert b"\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n"), "every line ends with CRLF"
    return parse(data)


def simple(**overrides: object) -> EmailMessage:
    args: dict[str, object] = {
        "from_": FROM,
        "to": ["bob@example.org"],
        "subject": "Hello",
        "content": sm.text("Hi Bob\n"),
        "date": DATE,
    }
    args.update(overrides)
    return roundtrip(sm.build(**args))  # type: ignore[arg-type]


def addresses(message: Message, name: str) -> list[str]:
    return [address for _, address in getaddresses(message.get_all(name, []))]


def utf8_policy(message: EmailMessage) -> bool:
    assert isinstance(message.policy, email.policy.EmailPolicy)
    return message.policy.utf8


def text_of(part: MIMEPart) -> str:
    """A text part's content. Encoded text is in MIME canonical form (RFC 2049 section 4:
    CRLF line ends, base64 included), which the stdlib gives back as it is."""
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def without_boundary(part: Message) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in part.items() if k.lower() != "content-type"] + [
        ("params", str([p for p in part.get_params([]) if p[0] != "boundary"]))
    ]


def leaf_types(message: EmailMessage) -> list[str]:
    return [part.get_content_type() for part in message.walk() if not part.is_multipart()]


# --- headers ---------------------------------------------------------------------------


def test_generated_headers_in_order() -> None:
    message = simple(
        cc=["Carol <carol@example.org>"],
        bcc=["dave@example.org"],
        reply_to="replies@example.org",
        in_reply_to="<parent@example.org>",
        extra_headers=[("X-Mailer", "smtpx"), ("X-Other", "1")],
    )
    names = [name for name, _ in message.items()]
    assert names == [
        "X-Mailer",
        "X-Other",
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Message-ID",
        "In-Reply-To",
        "Date",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]
    assert message["From"] == FROM
    assert addresses(message, "To") == ["bob@example.org"]
    assert addresses(message, "Cc") == ["carol@example.org"]
    assert addresses(message, "Reply-To") == ["replies@example.org"]
    assert message["In-Reply-To"] == "<parent@example.org>"
    assert message["Subject"] == "Hello"
    assert parsedate_to_datetime(message["Date"]) == DATE
    assert text_of(message) == "Hi Bob\n"


def test_bcc_never_appears_in_the_headers() -> None:
    built = sm.build(
        from_=FROM,
        to=["bob@example.org"],
        bcc=["Hidden <hidden@example.org>", "secret@example.org"],
        subject="s",
        content="body",
    )
    data = built.as_bytes()
    assert b"hidden" not in data.lower()
    assert b"secret" not in data.lower()
    assert "Bcc" not in roundtrip(built)


def test_bcc_only_is_enough_and_there_is_then_no_to() -> None:
    message = simple(to=[], bcc=["hidden@example.org"])
    assert "To" not in message
    assert "Bcc" not in message


def test_bcc_in_extra_headers_is_refused() -> None:
    with pytest.raises(ValueError, match="Bcc"):
        simple(extra_headers={"Bcc": "leak@example.org"})


def test_headers_written_by_build_cannot_be_given_twice() -> None:
    with pytest.raises(ValueError, match="Subject"):
        simple(extra_headers=[("Subject", "again")])


def test_no_recipient_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="recipient"):
        simple(to=[])


def test_from_must_be_one_address() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        simple(from_="a@example.org, b@example.org")


@pytest.mark.parametrize("bad", ["not an address", "a@", "@example.org", "<>", ""])
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ParseError):
        simple(to=[bad])


@pytest.mark.parametrize(
    "overrides",
    [
        {"to": ["Evil\r\nBcc: x@example.org <a@example.org>"]},
        {"to": ["a@example.org\r\nBcc: x@example.org"]},
        {"subject": "hi\r\nBcc: x@example.org"},
        {"extra_headers": {"X-A": "a\r\nBcc: x@example.org"}},
    ],
)
def test_header_injection_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ParseError or the stdlib's ValueError
        simple(**overrides)


def test_auto_generated_marks_the_message() -> None:
    message = simple(auto_generated=True)
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Precedence"] == "bulk"
    plain = simple()
    assert "Auto-Submitted" not in plain
    assert "Precedence" not in plain


def test_address_forms() -> None:
    message = simple(
        to=[
            Address.parse("plain@example.org"),
            "Named <named@example.org>",
            '"Last, First" <first@example.org>, other@example.org',
            Address("with space", "example.org"),
        ]
    )
    assert addresses(message, "To") == [
        "plain@example.org",
        "named@example.org",
        "first@example.org",
        "other@example.org",
        '"with space"@example.org',
    ]
    assert [a.display_name for a in message["To"].addresses][:3] == ["", "Named", "Last, First"]


def test_date_is_generated_now_unless_given() -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    message = sm.build(from_=FROM, to="b@example.org", subject="s", content="x")
    when = parsedate_to_datetime(message["Date"])
    assert before - datetime.timedelta(seconds=1) <= when
    assert when <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    assert simple(date="Mon, 01 Jan 2024 00:00:00 +0000")["Date"] == (
        "Mon, 01 Jan 2024 00:00:00 +0000"
    )
    given = simple(date=None, extra_headers={"Date": "Tue, 02 Jan 2024 00:00:00 +0000"})
    assert given.get_all("Date") == ["Tue, 02 Jan 2024 00:00:00 +0000"]


# --- Message-ID ------------------------------------------------------------------------


def test_message_ids_are_generated_unique_on_the_from_domain() -> None:
    ids = [simple()["Message-ID"] for _ in range(200)]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("<") and i.endswith("@example.org>") for i in ids)
    assert simple(domain="mail.example.net")["Message-ID"].endswith("@mail.example.net>")


def test_a_given_message_id_is_used_exactly_once() -> None:
    assert simple(message_id="<given@example.org>").get_all("Message-ID") == ["<given@example.org>"]
    assert simple(message_id="bare@example.org").get_all("Message-ID") == ["<bare@example.org>"]


@pytest.mark.parametrize("name", ["Message-ID", "Message-Id", "message-id"])
def test_a_message_id_in_the_extra_headers_is_honoured_once(name: str) -> None:
    message = simple(extra_headers=[(name, "<extra@example.org>"), ("X-A", "b")])
    assert message.get_all("Message-ID") == ["<extra@example.org>"]
    both = simple(message_id="<same@x>", extra_headers=[(name, "<same@x>")])
    assert both.get_all("Message-ID") == ["<same@x>"]


def test_two_different_message_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        simple(message_id="<a@x>", extra_headers={"Message-ID": "<b@x>"})


# --- non-ASCII -------------------------------------------------------------------------


def test_non_ascii_subject_and_display_names_use_encoded_words() -> None:
    built = sm.build(
        from_="Jörg Müller <joerg@example.org>",
        to=["Zoë 山田 <zoe@example.org>"],
        subject="Grüße — 你好",
        content=sm.text("Grüße\n"),
        date=DATE,
    )
    data = built.as_bytes()
    assert data.isascii(), "no SMTPUTF8 needed: everything is encoded"
    message = parse(data)
    assert message["Subject"] == "Grüße — 你好"
    assert message["From"].addresses[0].display_name == "Jörg Müller"
    assert message["To"].addresses[0].display_name == "Zoë 山田"
    assert text_of(message) == "Grüße\n"
    assert message["Content-Transfer-Encoding"] in ("quoted-printable", "base64")


def test_a_non_ascii_domain_goes_as_an_a_label_without_smtputf8() -> None:
    built = sm.build(from_="a@bücher.example", to=["b@example.org"], subject="s", content="x")
    assert not utf8_policy(built)
    message = roundtrip(built)
    assert addresses(message, "From") == ["a@xn--bcher-kva.example"]


@pytest.mark.parametrize(
    ("domain", "a_label"),
    [
        ("straße.de", "xn--strae-oqa.de"),
        ("ς.gr", "xn--3xa.gr"),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com"),
    ],
)
def test_a_labels_are_idna_2008(domain: str, a_label: str) -> None:
    # IDNA 2003 (Python's "idna" codec) would write strasse.de, another domain.
    built = sm.build(from_=f"a@{domain}", to=[f"b@{domain}"], subject="s", content="x")
    assert not utf8_policy(built)
    message = roundtrip(built)
    assert addresses(message, "From") == [f"a@{a_label}"]
    assert addresses(message, "To") == [f"b@{a_label}"]
    assert str(message["Message-ID"]).endswith(f"@{a_label}>")


def test_a_domain_idna_2008_refuses_is_a_clear_error() -> None:
    with pytest.raises(ParseError, match=r"to: .*IDNA 2008.*U\+2603"):
        sm.build(from_="a@example.com", to=["b@☃.example"], subject="s", content="x")


def test_a_utf8_local_part_switches_to_smtputf8() -> None:
    built = sm.build(
        from_="Jörg <jörg@bücher.example>",
        to=["用户@例子.广告"],
        subject="Grüße",
        content="x",
        date=DATE,
    )
    assert utf8_policy(built)
    data = built.as_bytes()
    assert "jörg@bücher.example".encode() in data
    assert "Subject: Grüße".encode() in data  # RFC 6532: raw UTF-8 headers
    message = email.message_from_bytes(data, policy=email.policy.SMTPUTF8)
    assert addresses(message, "To") == ["用户@例子.广告"]


# --- content ---------------------------------------------------------------------------


def test_text_and_html() -> None:
    message = simple(content=sm.html("<p>Hi</p>"))
    assert message.get_content_type() == "text/html"
    assert message.get_content_charset() == "utf-8"
    assert text_of(message) == "<p>Hi</p>\n"
    plain = simple(content="just text")
    assert plain.get_content_type() == "text/plain"
    assert text_of(plain) == "just text\n"


def test_long_lines_and_leading_dots_survive() -> None:
    body = "x" * 2000 + "\n.\n.leading dot\nFrom the start\n"
    message = simple(content=sm.text(body))
    assert text_of(message) == body


def test_text_monospace_has_plain_and_pre_alternatives() -> None:
    message = simple(content=sm.text_monospace("a <b> & c\n  col1  col2\n"))
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert text_of(plain) == "a <b> & c\n  col1  col2\n"
    assert rich.get_content_type() == "text/html"
    html = rich.get_content()
    assert "<pre" in html
    assert "a &lt;b&gt; &amp; c\n  col1  col2\n</pre>" in html


def test_alternatives_and_mixed_nest() -> None:
    content = sm.mixed(
        sm.alternatives(sm.text("plain"), sm.html("<b>rich</b>")),
        sm.custom(b"\x00\x01", "application/octet-stream", filename="blob.bin"),
    )
    message = simple(content=content)
    assert message.get_content_type() == "multipart/mixed"
    first, second = message.iter_parts()
    assert first.get_content_type() == "multipart/alternative"
    assert second.get_content() == b"\x00\x01"
    assert second.get_filename() == "blob.bin"
    assert leaf_types(message) == ["text/plain", "text/html", "application/octet-stream"]


def test_one_content_value_serves_many_messages() -> None:
    content = sm.alternatives(sm.text("a"), sm.html("<i>a</i>"))
    one = simple(content=content)
    two = simple(content=content)
    assert leaf_types(one) == leaf_types(two) == ["text/plain", "text/html"]


def test_custom_content() -> None:
    csv = sm.custom(
        "a,b\n1,2\n",
        "text/csv; header=present",
        filename="data.csv",
        extra_headers={"X-Part": "yes"},
    )
    message = simple(content=csv)
    assert message.get_content_type() == "text/csv"
    assert message.get_param("header") == "present"
    assert message.get_content_charset() == "utf-8"
    assert message.get_filename() == "data.csv"
    assert message.get_content_disposition() == "attachment"
    assert message["X-Part"] == "yes"
    assert text_of(message) == "a,b\n1,2\n"
    inline = simple(content=sm.custom(b"GIF89a", "image/gif", disposition="inline"))
    assert inline.get_content_disposition() == "inline"
    assert inline.get_content() == b"GIF89a"


@pytest.mark.parametrize("bad", ["text", "", "multipart/mixed", "a/b/c; x"])
def test_custom_content_refuses_bad_types(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the cause
        sm.custom(b"x", bad)


def test_related_resources_resolve_by_content_id() -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    content = sm.with_related(
        '<p>Logo: <img src="cid:logo"> <img src="cid:chart.1@x"></p>',
        {"logo": sm.custom(png, "image/png"), "chart.1@x": sm.custom(b"GIF", "image/gif")},
    )
    message = simple(content=content)
    assert message.get_content_type() == "multipart/related"
    assert message.get_param("type") == "text/html"
    root, *resources = message.iter_parts()
    assert root.get_content_type() == "text/html"
    by_id = {part["Content-ID"]: part for part in resources}
    html = root.get_content()
    for cid in ("logo", "chart.1@x"):
        assert f"cid:{cid}" in html
        assert f"<{cid}>" in by_id
    assert by_id["<logo>"].get_content() == png
    assert by_id["<chart.1@x>"].get_content_type() == "image/gif"


@pytest.mark.parametrize("bad", ["", "a b", "<a>", "ä"])
def test_related_refuses_bad_content_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="content id"):
        sm.with_related("<p/>", {bad: sm.text("x")})


def test_related_inside_alternatives() -> None:
    content = sm.alternatives(
        sm.text("see the logo"),
        sm.with_related('<img src="cid:logo">', [("logo", sm.custom(b"PNG", "image/png"))]),
    )
    message = simple(content=content)
    assert leaf_types(message) == ["text/plain", "text/html", "image/png"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "application/pdf"),
        ("photo.png", "image/png"),
        ("photo.JPG", "image/jpeg"),
        ("page.html", "text/html"),
        ("notes.txt", "text/plain"),
        ("archive.tar.gz", "application/gzip"),
        ("mystery.unknownext", "application/octet-stream"),
        ("no_extension", "application/octet-stream"),
    ],
)
def test_of_file_guesses_the_type(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"content\n")
    content = sm.of_file(path)
    assert content.content_type == expected
    message = simple(content=content)
    assert message.get_content_type() == expected
    assert message.get_filename() == name
    assert message.get_content_disposition() == "inline"
    body = message.get_content()
    assert body == (b"content\n" if isinstance(body, bytes) else "content\n")


def test_of_file_with_a_given_type_and_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_text("héllo\n", encoding="utf-8")
    message = simple(content=sm.of_file(path, "text/plain"))
    assert message.get_content_type() == "text/plain"
    assert text_of(message) == "héllo\n"
    latin = tmp_path / "latin.txt"
    latin.write_bytes("héllo\n".encode("latin-1"))
    raw = simple(content=sm.of_file(latin))
    assert raw.get_content_type() == "text/plain"
    assert raw.get_payload(decode=True) == "héllo\n".encode("latin-1")


# --- attachments -----------------------------------------------------------------------


def test_attachments_make_multipart_mixed_with_the_main_part_first() -> None:
    message = simple(
        content=sm.text("see attached\n"),
        attachments=[
            sm.Attachment("report.pdf", b"%PDF-1.4 ..."),
            sm.Attachment("data.csv", "a,b\n", "text/csv"),
            sm.Attachment("blob", b"\xff\x00"),
        ],
    )
    assert message.get_content_type() == "multipart/mixed"
    main, pdf, csv, blob = message.iter_parts()
    assert main.get_content_type() == "text/plain"
    assert main.get_content_disposition() == "inline"
    assert text_of(main) == "see attached\n"
    assert [p.get_content_disposition() for p in (pdf, csv, blob)] == ["attachment"] * 3
    assert [p.get_filename() for p in (pdf, csv, blob)] == ["report.pdf", "data.csv", "blob"]
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_param("name") == "report.pdf"
    assert pdf.get_content() == b"%PDF-1.4 ..."
    assert csv.get_content_type() == "text/csv"
    assert text_of(csv) == "a,b\n"
    assert blob.get_content_type() == "application/octet-stream"
    assert blob.get_content() == b"\xff\x00"


def test_attachments_after_multipart_content() -> None:
    message = simple(
        content=sm.text_monospace("table"),
        attachments=[sm.Attachment("a.txt", "A")],
    )
    assert leaf_types(message) == ["text/plain", "text/html", "text/plain"]
    alternative, attached = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert attached.get_filename() == "a.txt"


def test_non_ascii_attachment_names_round_trip() -> None:
    name = "Résumé — 履歴書.pdf"
    built = sm.build(
        from_=FROM,
        to=["b@example.org"],
        subject="s",
        content="x",
        attachments=[sm.Attachment(name, b"%PDF")],
    )
    data = built.as_bytes()
    assert data.isascii()
    assert re.search(rb"filename\*(0\*)?=utf-8''", data)  # RFC 2231, maybe continued
    (_, attached) = parse(data).iter_parts()
    assert attached.get_filename() == name
    assert attached.get_content() == b"%PDF"


def test_attachment_of_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG")
    attachment = sm.Attachment.of_file(path)
    assert attachment == sm.Attachment("photo.png", b"\x89PNG", "image/png")
    renamed = sm.Attachment.of_file(path, filename="other.png", content_type="image/x-png")
    assert (renamed.filename, renamed.content_type) == ("other.png", "image/x-png")


def test_attachment_values_are_checked() -> None:
    with pytest.raises(ValueError, match="name"):
        sm.Attachment("", b"x")
    with pytest.raises(ValueError, match="multipart"):
        sm.Attachment("x", b"x", "multipart/mixed")
    with pytest.raises(TypeError):
        simple(attachments=[sm.text("not an attachment")])


# --- sending ---------------------------------------------------------------------------


class RefuseOne(Handler):
    """Accepts everything but the recipient ``nobody@example.org``."""

    def rcpt(self, command: Rcpt) -> Reply:
        if command.recipient == Address.parse("nobody@example.org"):
            return replies.mailbox_unavailable()
        return super().rcpt(command)


class RefuseSender(Handler):
    def mail(self, command: object) -> Reply:
        return replies.mailbox_unavailable("Sender refused")


async def test_send_delivers_one_message_with_the_right_envelope() -> None:
    args: dict[str, object] = {
        "from_": FROM,
        "to": ["Bob <bob@example.org>", "carol@example.org"],
        "cc": ["Carol again <carol@example.org>", "dan@example.org"],
        "bcc": ["eve@example.org"],
        "subject": "Report ✓",
        "content": sm.text_monospace("numbers\n.\n"),
        "attachments": [sm.Attachment("r.csv", "a,b\n", "text/csv")],
        "message_id": "<fixed@example.org>",
        "date": DATE,
    }
    async with ScriptedServer(Handler) as server:
        status = await sm.send(
            host="127.0.0.1",
            port=server.port,
            config=ClientConfig.for_testing(),
            **args,  # type: ignore[arg-type]
        )
    assert isinstance(status, Accepted)
    assert not status.rejected
    (received,) = server.messages()
    (handler,) = server.handlers
    (got,) = handler.messages
    assert got.mail.sender.path() == "<alice@example.org>"
    assert [r.recipient for r in got.recipients] == [
        Address.parse(a)
        for a in ("bob@example.org", "carol@example.org", "dan@example.org", "eve@example.org")
    ]
    message = parse(received)
    assert "Bcc" not in message
    assert b"eve@" not in received
    expected = roundtrip(sm.build(**args))  # type: ignore[arg-type]
    # The same message as build() makes from the same arguments (boundaries aside).
    for ours, theirs in zip(message.walk(), expected.walk(), strict=True):
        assert ours.get_content_type() == theirs.get_content_type()
        assert without_boundary(ours) == without_boundary(theirs)
        if not ours.is_multipart():
            assert ours.get_content() == theirs.get_content()


async def test_send_uses_bounce_to_as_the_envelope_sender() -> None:
    async with ScriptedServer(Handler) as server:
        await sm.send(
            host="127.0.0.1",
            port=server.port,
            config=ClientConfig.for_testing(),
            from_=FROM,
            to=["bob@example.org"],
            subject="s",
            content="x",
            bounce_to="Bounces <bounces+123@example.org>",
        )
        await sm.send(
            host="127.0.0.1",
            port=server.port,
            config=ClientConfig.for_testing(),
            from_=FROM,
            to=["bob@example.org"],
            subject="s",
            content="x",
            bounce_to="<>",
        )
    senders = [m.mail.sender.path() for h in server.handlers for m in h.messages]
    assert senders == ["<bounces+123@example.org>", "<>"]
    assert all(parse(data)["From"] == FROM for data in server.messages())


async def test_send_with_a_utf8_address_uses_smtputf8() -> None:
    async with ScriptedServer(Handler) as server:
        await sm.send(
            host="127.0.0.1",
            port=server.port,
            config=ClientConfig.for_testing(),
            from_="Jörg <jörg@example.org>",
            to=["bob@example.org"],
            subject="Grüße",
            content="x",
        )
    (handler,) = server.handlers
    (got,) = handler.messages
    assert got.mail.params.smtputf8
    assert got.mail.sender.path() == "<jörg@example.org>"
    assert "Subject: Grüße".encode() in got.data


async def test_a_rejected_recipient_raises_unless_allowed() -> None:
    args: dict[str, object] = {
        "from_": FROM,
        "to": ["bob@example.org"],
        "bcc": ["nobody@example.org"],
        "subject": "s",
        "content": "x",
    }
    async with ScriptedServer(RefuseOne) as server:
        with pytest.raises(DeliveryError) as caught:
            await sm.send(
                host="127.0.0.1",
                port=server.port,
                config=ClientConfig.for_testing(),
                **args,  # type: ignore[arg-type]
            )
        status = caught.value.status
        assert isinstance(status, Accepted)
        assert [a for a, _ in status.rejected] == [Address.parse("nobody@example.org")]
        accepted = await sm.send(
            host="127.0.0.1",
            port=server.port,
            config=ClientConfig.for_testing(),
            allow_rejected_recipients=True,
            **args,  # type: ignore[arg-type]
        )
    assert [a for a, reply in accepted.rejected if reply.code == 550] == [
        Address.parse("nobody@example.org")
    ]
    # The server did take the message both times, for bob.
    assert len(server.messages()) == 2


async def test_every_recipient_rejected_raises_even_when_allowed() -> None:
    async with ScriptedServer(RefuseOne) as server:
        with pytest.raises(DeliveryError) as caught:
            await sm.send(
                host="127.0.0.1",
                port=server.port,
                config=ClientConfig.for_testing(),
                from_=FROM,
                to=["nobody@example.org"],
                subject="s",
                content="x",
                allow_rejected_recipients=True,
            )
    assert isinstance(caught.value.status, RejectedAllRecipients)
    assert server.messages() == []


async def test_a_rejected_sender_raises() -> None:
    async with ScriptedServer(RefuseSender) as server:
        with pytest.raises(DeliveryError, match="Sender refused"):
            await sm.send(
                host="127.0.0.1",
                port=server.port,
                config=ClientConfig.for_testing(),
                from_=FROM,
                to=["bob@example.org"],
                subject="s",
                content="x",
            )


async def test_send_message_takes_a_prebuilt_message_and_drops_bcc() -> None:
    prebuilt = EmailMessage()  # policy.default: LF line ends, which go out as CRLF
    prebuilt["From"] = "a@example.org"
    prebuilt["To"] = "b@example.org"
    prebuilt["Bcc"] = "hidden@example.org"
    prebuilt["Subject"] = "prebuilt"
    prebuilt.set_content("body\n")
    raw = b"From: a@example.org\nBcc: hidden@example.org\nSubject: raw\n\nraw body\n"
    async with ScriptedServer(Handler) as server:
        statuses = [
            await sm.send_message(
                message,
                sender="a@example.org",
                recipients=["b@example.org", "<hidden@example.org>"],
                host="127.0.0.1",
                port=server.port,
                config=ClientConfig.for_testing(),
            )
            for message in (prebuilt, raw)
        ]
    assert all(isinstance(s, Accepted) for s in statuses)
    first, second = server.messages()
    assert b"hidden" not in first
    assert b"hidden" not in second
    assert parse(first)["Subject"] == "prebuilt"
    assert text_of(parse(first)) == "body\n"
    assert second == b"From: a@example.org\r\nSubject: raw\r\n\r\nraw body\r\n"
    (handler,) = server.handlers[:1]
    assert [r.recipient for r in handler.messages[0].recipients] == [
        Address.parse("b@example.org"),
        Address.parse("hidden@example.org"),
    ]


def test_tracing_headers_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass
    import socket
    import sys

    monkeypatch.setattr(socket, "gethostname", lambda: "desk.example")
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    monkeypatch.setattr(sys, "argv", ["/usr/bin/report-cron", "--daily"])
    plain = sm.build(from_="a@example.com", to="b@example.org", subject="s", content="x")
    assert not [k for k in plain if k.startswith("X-Sending")]
    traced = sm.build(
        from_="a@example.com", to="b@example.org", subject="s", content="x", tracing_headers=True
    )
    assert [(k, traced[k]) for k in traced if k.startswith("X-Sending")] == [
        ("X-Sending-Host", "desk.example"),
        ("X-Sending-User", "alice"),
        ("X-Sending-Program", "report-cron"),
    ]
    assert list(traced).index("X-Sending-Host") == list(traced).index("Date") + 1
