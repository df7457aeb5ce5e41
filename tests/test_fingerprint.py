"""Mail fingerprints (F115): the MD5 of each leaf is that of the stdlib's raw payload, for
any split of the content into chunks, in bounded memory."""

from __future__ import annotations

import base64
import email.message
import email.parser
import email.policy
import hashlib
import os
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.fingerprint import MAX_LINE, FingerprintBuilder, fingerprint


def stdlib_leaves(message: bytes) -> list[str]:
    """The MD5 of each leaf's raw payload, as the stdlib's parser splits the message."""
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message)
    leaves = []
    for part in parsed.walk():
        if part.is_multipart() or part.get_content_type() == "message/rfc822":
            continue
        payload = part.get_payload(decode=False)
        assert isinstance(payload, str)
        raw = payload.encode("ascii", "surrogateescape")
        leaves.append(hashlib.md5(raw, usedforsecurity=False).hexdigest())
    return leaves


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


NESTED = (
    b"From: a@example.com\r\nSubject: a\r\n  folded\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"preamble\r\n--outer\r\nContent-Type: text/plain\r\n\r\nhello\r\nworld\r\n"
    b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    b"--inner\r\n\r\nplain\r\n--inner\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
    b"--inner--\r\n\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: c@example.org\r\nSubject: inner\r\n\r\nattached body\r\n"
    b"--outer-- \r\nepilogue\r\n"
)


def test_a_nested_message() -> None:
    found = fingerprint([NESTED])
    assert found.headers[:2] == [("From", "a@example.com"), ("Subject", "a  folded")]
    assert found.md5 is None and len(found.parts) == 3
    text, alternative, attached = found.parts
    assert text.md5 == hashlib.md5(b"hello\r\nworld").hexdigest()
    assert [p.md5 for p in alternative.parts] == [
        hashlib.md5(b"plain").hexdigest(),
        hashlib.md5(b"<p>html</p>").hexdigest(),
    ]
    (inner,) = attached.parts
    assert ("Subject", "inner") in inner.headers
    assert inner.md5 == hashlib.md5(b"attached body").hexdigest()  # the break is the boundary's
    assert found.leaves() == stdlib_leaves(NESTED)
    assert found.to_json()["parts"][2]["parts"][0]["md5"] == inner.md5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=30))
def test_any_chunking_gives_the_same_fingerprint(cuts: list[int]) -> None:
    assert fingerprint(split(NESTED, cuts)) == fingerprint([NESTED])


def _leaf(body: bytes, binary: bool) -> email.message.EmailMessage:
    part = email.message.EmailMessage()
    if binary:
        part.set_content(body, maintype="application", subtype="octet-stream")
    else:
        part.set_content(body.decode("latin-1"), subtype="plain", cte="quoted-printable")
    return part


bodies = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b""))
leaves = st.builds(_leaf, bodies, st.booleans())


def _multipart(parts: list[email.message.EmailMessage]) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message.make_mixed()
    for part in parts:
        message.attach(part)
    return message


def _attached(inner: email.message.EmailMessage) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message.set_content(inner)
    return message


trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(_multipart), children.map(_attached)
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(trees, st.lists(st.integers(0, 100_000), max_size=10))
def test_leaves_are_the_stdlib_payloads(tree: email.message.EmailMessage, cuts: list[int]) -> None:
    tree["From"] = "a@example.com"
    data = tree.as_bytes(policy=email.policy.SMTP)
    assert fingerprint(split(data, cuts)).leaves() == stdlib_leaves(data)


def test_broken_structure_still_gets_a_fingerprint() -> None:
    unclosed = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\npart\r\n"
    assert fingerprint([unclosed]).leaves() == [hashlib.md5(b"part\r\n").hexdigest()]
    no_boundary = b"Content-Type: multipart/mixed\r\n\r\n--b\r\nbody\r\n"
    assert fingerprint([no_boundary]).leaves() == [hashlib.md5(b"--b\r\nbody\r\n").hexdigest()]
    headers_only = b"Subject: x\r\n"
    only = fingerprint([headers_only])
    assert only.headers == [("Subject", "x")] and only.md5 == hashlib.md5(b"").hexdigest()
    eight_bit = fingerprint([b"Subject: caf\xc3\xa9 \xff\r\n\r\n"])
    assert eight_bit.headers == [("Subject", "café \ufffd")]


def test_lines_too_long_to_be_boundaries() -> None:
    blob = base64.b64encode(os.urandom(3 * MAX_LINE))  # one line, no break in it
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
        + blob
        + b"\r\nend\r\n--b\r\n\r\nsecond\r\n--b--\r\n"
    )
    found = fingerprint(split(data, list(range(0, len(data), 5000))))
    assert found.leaves() == stdlib_leaves(data)


def test_memory_stays_small_for_a_big_leaf() -> None:
    line = b"A" * 76 + b"\r\n"
    head = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
    builder = FingerprintBuilder()
    builder.feed(head)
    tracemalloc.start()
    try:
        chunk = line * 1000  # 78 KB
        for _ in range(200):  # 15 MB in all
            builder.feed(chunk)
        builder.feed(b"--b--\r\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    expected = hashlib.md5((line * 200_000)[:-2]).hexdigest()
    assert builder.result().leaves() == [expected]
