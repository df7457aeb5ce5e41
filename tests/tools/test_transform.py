"""Transforms for comparing two MTAs' output (F127, F128): each header step, the body
rewrites and hashes, the stream order, the configuration's errors, and the command."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from smtpx.client import bsmtp_bytes
from smtpx.envelope import Envelope
from smtpx.errors import ConfigError
from smtpx.server.bsmtp import read_bsmtp
from smtpx.tools.transform import Transform, load, normalize_whitespace
from tests.cli.helpers import invoke


def envelope(
    headers: str, body: str = "body\r\n", recipients: tuple[str, ...] = ("b@x.org",)
) -> Envelope:
    return Envelope.create(
        sender="a@example.com", recipients=list(recipients), message=f"{headers}\r\n{body}".encode()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", ""), ("     ", ""), ("a b c d, e, f, g", "a b c d, e, f, g"),
     ("  a b   c\n d, e  \r  , \n f,g  \n ", "a b c d, e, f, g")],
)  # fmt: skip
def test_normalize_whitespace_vectors(text: str, expected: str) -> None:
    assert normalize_whitespace(text) == expected  # async_smtp's own test vectors


HEADERS = (
    "Received: from a\r\nReceived: from b\r\nX-Seen: 1\r\nX-Seen: 1\r\nX-Seen: 2\r\n"
    "To: z@x.org,  y@x.org ,y@x.org\r\nMessage-ID: <1@a>\r\nDate: today\r\n"
    "X-Tags: b a  c a\r\nX-Mailer: Outlook 16\r\nX-Mailer: mutt\r\nSubject: hi   there\r\n"
)


def test_header_steps_in_order() -> None:
    rules = Transform.from_dict(
        {
            "headers": {
                "strip_whitespace": True,
                "normalize_whitespace": [{"name": "to"}],
                "filter": [{"name": "Received"}, {"name": "X-Mailer", "contains": "Outlook"}],
                "dedup": [{"name": "X-Seen"}],
                "hash": [{"name": "Message-ID"}],
                "mask": [{"name": "Date"}],
                "sort_emails": [{"name": "To", "dedup": True}],
                "sort_words": [{"name": "X-Tags"}],
            }
        }
    )
    out = rules.envelope(envelope(HEADERS))
    digest = hashlib.sha256(b"<1@a>").hexdigest()
    assert out.header_list() == [
        ("X-Seen", "1"),  # consecutive X-Seen fields: the first one stays
        ("To", "y@x.org, z@x.org"),
        ("Message-ID", f"[hidden : sha256 = {digest}]"),
        ("Date", "XXX"),
        ("X-Tags", "a a b c"),
        ("X-Mailer", "mutt"),
        ("Subject", "hi there"),
    ]
    assert out.body == b"body\r\n"


def test_sort_sorts_fields_and_recipients() -> None:
    rules = Transform.from_dict({"headers": {"sort": True}})
    out = rules.envelope(envelope("B: 2\r\nA: 9\r\nB: 1\r\n", recipients=("z@x.org", "a@x.org")))
    assert out.header_list() == [("A", "9"), ("B", "1"), ("B", "2")]
    assert [str(r) for r in out.recipients] == ["a@x.org", "z@x.org"]


def test_body_rewrites_and_whole_hash() -> None:
    rules = load(
        """
        [bodies]
        rewrites = [{regex = "id=([0-9]+)", matches = "id=N"},
                    {regex = "(?i)UNSUBSCRIBE", entire_body = "A NEWSLETTER\\r\\n"}]
        """
    )
    assert rules.envelope(envelope("S: 1\r\n", "id=12 and id=7\r\n")).body == b"id=N and id=N\r\n"
    assert rules.envelope(envelope("S: 1\r\n", "to unsubscribe\r\n")).body == b"A NEWSLETTER\r\n"
    whole = load('[bodies]\nhash = "whole"\n').envelope(envelope("S: 1\r\n", "secret\r\n"))
    digest = hashlib.sha256(b"secret\r\n").hexdigest()
    assert whole.body == f"BODY HIDDEN. HASH={digest}\r\n".encode()


def test_hash_parts_keeps_the_structure() -> None:
    message = (
        "Content-Type: multipart/mixed; boundary=B\r\n",
        "--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        "--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"
        "--B--\r\n",
    )
    out = load('[bodies]\nhash = "parts"\n').envelope(envelope(*message))
    text = out.message.decode()
    assert "--B\r\nContent-Type: text/plain" in text and "--B--" in text
    assert (
        f"PART HIDDEN. ORIGINAL_ENCODING:7bit HASH:{hashlib.sha256(b'hello').hexdigest()}" in text
    )
    assert f"ORIGINAL_ENCODING:base64 HASH:{hashlib.sha256(b'AAAA').hexdigest()}" in text
    assert "hello" not in text.split("HASH:")[0]


def test_the_stream_is_sorted_by_the_keys() -> None:
    rules = load('[messages]\nsort = ["subject", "recipients"]\n')
    stream = [
        envelope("Subject: b\r\n", recipients=("1@x.org",)),
        envelope("Subject: a\r\n", recipients=("2@x.org",)),
        envelope("Subject: a\r\n", recipients=("1@x.org",)),
    ]
    out = rules.stream(stream)
    assert [(e.last_header("Subject"), str(e.recipients[0])) for e in out] == [
        ("a", "1@x.org"), ("a", "2@x.org"), ("b", "1@x.org")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[headers]\nfilterr = []\n", "headers.filterr"),
        ('[headers]\nfilter = [{name = ""}]\n', "headers.filter[0]"),
        ('[headers]\nmask = [{name = "A", dedup = true}]\n', "headers.mask[0].dedup"),
        ('[headers]\nsort = "yes"\n', "headers.sort"),
        ('[bodies]\nhash = "half"\n', "bodies.hash"),
        ('[bodies]\nrewrites = [{regex = "("}]\n', "bodies.rewrites[0]"),
        ('[bodies]\nrewrites = [{regex = "(", matches = "x"}]\n', "bodies.rewrites[0].regex"),
        ('[messages]\nsort = ["date"]\n', "messages.sort"),
        ("[other]\n", "other"),
    ],
)
def test_bad_configurations_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert str(caught.value).startswith(f"{key}: ")


def test_the_command_makes_two_mtas_outputs_comparable(tmp_path: Path) -> None:
    config = tmp_path / "compare.toml"
    config.write_text(
        '[headers]\nfilter = [{name = "Received"}]\nmask = [{name = "Message-ID"}]\n'
        '[messages]\nsort = ["subject"]\n'
    )
    first = [envelope("Received: by mta-a\r\nMessage-ID: <1@a>\r\nSubject: x\r\n"),
             envelope("Subject: w\r\nMessage-ID: <2@a>\r\n")]  # fmt: skip
    trace = "Received: by mta-b\r\nReceived: by relay\r\n"
    second = [envelope("Subject: w\r\nMessage-ID: <9@b>\r\n"),
              envelope(f"{trace}Message-ID: <8@b>\r\nSubject: x\r\n")]  # fmt: skip
    outputs = []
    for n, stream in enumerate((first, second)):
        path = tmp_path / f"{n}.bsmtp"
        path.write_bytes(bsmtp_bytes(stream))
        result = invoke("tools", "transform", "--config", str(config), str(path))
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout_bytes)
    assert outputs[0] == outputs[1]
    back = [e for e in read_bsmtp(outputs[0]) if isinstance(e, Envelope)]
    assert [e.last_header("Subject") for e in back] == ["w", "x"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[headers]\nnope = 1\n")
    refused = invoke("tools", "transform", "--config", str(bad), str(path))
    assert refused.exit_code == 2 and "headers.nope: unknown key" in refused.stderr
