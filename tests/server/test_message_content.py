"""What the server takes as message content: RFC 5322 messages, whose body is optional
(RFC 5322 3.5), and nothing whose header section has a line that is not a field."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.protocol import Reply
from smtpx.protocol.data import WireForm, dot_stuff, stored_form
from tests.server.helpers import Keep, raw_session, server

EHLO = b"EHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"

# RFC 5322 2.2: a field name is printable ASCII but the colon; a body is printable
# ASCII, spaces and tabs; a folded field continues on lines that start with white space.
NAME = st.text(st.sampled_from([chr(c) for c in range(0x21, 0x7F) if c != 0x3A]), min_size=1)
VALUE = st.text(st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["\t"]), max_size=30)
FIELD = st.tuples(
    NAME.filter(lambda n: len(n) <= 20),
    VALUE,
    st.lists(st.tuples(st.sampled_from([" ", "\t"]), VALUE), max_size=2),
).map(lambda f: f"{f[0]}:{f[1]}" + "".join(f"\r\n{ws}{more}" for ws, more in f[2]))
HEADER = st.lists(FIELD, min_size=1, max_size=6)


def _stuffed(content: bytes) -> bytes:
    """``content`` as DATA sends it: dot-stuffed, then the end-of-data line."""
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    return (b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n"


async def _send(content: bytes) -> tuple[Reply, Keep]:
    plugin = Keep()
    raw = await raw_session(server(plugin))
    await raw.send(EHLO)
    await raw.send(ENVELOPE, 3)
    (reply,) = await raw.send(_stuffed(content))
    await raw.finish()
    return reply, plugin


@pytest.mark.parametrize(
    "content",
    [
        b"From: a@example.org\r\nSubject: hi\r\n",  # the header ends the content
        b"\r\n",  # no fields, an empty body
        b"",  # nothing at all
        b"\r\nonly a body\r\n",  # no fields, then a body
        b"Subject: hi\r\n\r\n",  # a header and an empty body
        b"Subject: folded\r\n and continued\r\n",
    ],
    ids=repr,
)
async def test_a_message_without_a_body_is_accepted(content: bytes) -> None:
    reply, plugin = await _send(content)
    assert reply.code == 250, reply
    (kept,) = plugin.kept
    assert kept.message == content


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        (b"this is not a header\r\n", "this is not a header"),
        (b"Subject: hi\r\nno colon here\r\n", "no colon here"),
        (b"Subject: hi\r\nbad name: x\r\n\r\nbody\r\n", "bad name: x"),
        (b"Subject: hi\r\n: no name\r\n", ": no name"),
    ],
    ids=repr,
)
async def test_a_bad_header_line_is_still_refused(content: bytes, shown: str) -> None:
    reply, plugin = await _send(content)
    assert str(reply) == f"550 5.6.0 Not an RFC 5322 message: bad header line {shown!r}"
    assert plugin.kept == []


async def test_a_message_that_starts_with_a_continuation_is_refused() -> None:
    reply, _ = await _send(b" folded\r\nSubject: hi\r\n")
    assert (
        str(reply)
        == "550 5.6.0 Not an RFC 5322 message: the message starts with a continuation line"
    )


@given(HEADER, st.booleans())
@settings(max_examples=40, deadline=None)
def test_any_header_of_valid_fields_is_accepted_with_or_without_a_body(
    fields: list[str], body: bool
) -> None:
    content = ("\r\n".join(fields) + "\r\n" + ("\r\nthe body\r\n" if body else "")).encode()
    reply, plugin = asyncio.run(_send(content))
    assert reply.code == 250, (reply, content)
    assert [e.message for e in plugin.kept] == [content]


@given(HEADER, st.data())
@settings(max_examples=40, deadline=None)
def test_a_line_that_is_no_field_is_refused_wherever_it_is(
    fields: list[str], data: st.DataObject
) -> None:
    bad = data.draw(NAME.filter(lambda n: len(n) <= 20), label="no colon")
    at = data.draw(st.integers(1, len(fields)), label="after field")
    lines = [*fields[:at], bad, *fields[at:]]
    content = ("\r\n".join(lines) + "\r\n").encode()
    reply, plugin = asyncio.run(_send(content))
    assert reply.code == 550 and str(reply.enhanced) == "5.6.0", (reply, content)
    assert f"bad header line {bad!r}" in str(reply)
    assert plugin.kept == []


@pytest.mark.parametrize(
    ("content", "verbatim"),
    [
        (b"Subject: hi\r\n\r\nbody. with dots.\r\n", True),
        (b"", True),
        (b"Subject: hi\r\n\r\n.a line with a dot\r\n", False),  # its dot was doubled
        (b"Subject: hi\r\n\r\n.\r\n", False),
    ],
    ids=repr,
)
async def test_content_taken_as_it_came_reaches_the_plugin_as_its_own_data_form(
    content: bytes, verbatim: bool
) -> None:
    """The spool stores a WireForm as it is (no second pass to stuff it): only content
    that arrived with nothing to unstuff is one, and it is the message all the same."""
    reply, plugin = await _send(content)
    assert reply.code == 250, reply
    (envelope,) = plugin.kept
    assert envelope.message == content
    kept = envelope.content
    assert isinstance(kept, bytes) and (type(kept) is WireForm) is verbatim
    assert stored_form(kept) == dot_stuff(content)[:-3]


@given(
    st.lists(
        st.one_of(
            st.sampled_from([b"\r\n", b"\r", b"\n", b":", b" ", b"\t", b" :", b"\r\r\n"]),
            st.binary(min_size=1, max_size=4),
            NAME.map(str.encode),
        ),
        max_size=14,
    ).map(b"".join)
)
@settings(max_examples=400, deadline=None)
def test_the_one_pattern_agrees_with_a_check_per_line(header: bytes) -> None:
    # _malformed's shortcut: one match of the whole section stands for a match per line.
    from smtpx.server import session

    per_line = all(session._FIELD.match(line) for line in header.split(b"\r\n"))
    assert (session._WELL_FORMED.fullmatch(header) is not None) == per_line
