"""The Message-ID a spooled message keeps in its metadata (so that an operator can find
it by that id without the spool reading any body), through a restart and a compaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpx.envelope import MAX_MESSAGE_ID, Envelope, message_id_in
from smtpx.spool.message import SpooledMessage, Status
from smtpx.spool.records import Location
from smtpx.spool.spool import Delivery, Spool
from smtpx.testing import MemoryNetwork
from tests.spool.helpers import MX, delivery, make_spool, settle, virtual


def _with_header(value: bytes | None) -> Delivery:
    field = b"" if value is None else b"Message-ID: " + value + b"\r\n"
    envelope = Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org"],
        message=b"Subject: x\r\n" + field + b"\r\nbody\r\n",
    )
    return Delivery(envelope, next_hops=(MX,))


def test_the_message_id_is_kept_and_survives_a_restart_and_compaction(tmp_path: Path) -> None:
    network = MemoryNetwork()
    long = b"<" + b"x" * 1000 + b"@t>"
    kept = ["<m1@example.com>", None, "<spaced@t>", None]  # too long for a line: not kept

    async def first() -> list[str]:
        async with make_spool(tmp_path, network, segment_size=2048) as spool:
            ids = await spool.add(
                [
                    delivery(1),
                    _with_header(None),
                    _with_header(b" <spaced@t> "),
                    _with_header(long),
                ],
                frozen=True,
            )
            assert [spool.get(i).message_id for i in ids] == kept
            for i in range(2, 60):  # delivered at once: the segments fill, then compact
                await spool.add([delivery(i)])
                await settle()
            assert spool.stats["compacted"] >= 1
            assert spool.get(ids[0]).location.segment != 1  # copied by the compaction
            return ids

    ids = virtual(first)
    on_disk = {m.id: m.message_id for m in Spool.status_from_disk(tmp_path)}
    assert [on_disk[i] for i in ids] == kept


def test_metadata_written_before_message_ids_were_kept_still_loads() -> None:
    entry = SpooledMessage(
        id="a", parent_id="p", spool_date=1.0, status=Status.FROZEN, sender="<>",
        recipients=["b@example.org"], location=Location(1, 0, 10), message_id="<m@t>",
    )  # fmt: skip
    meta = entry.to_meta()
    assert meta["msgid"] == "<m@t>"
    del meta["msgid"]
    assert SpooledMessage.from_meta(meta, entry.location).message_id is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"Message-ID: <one@t>\r\nmessage-id:<two@t>\r\n\r\n", "<two@t>"),  # the last
        (b"Subject: x\r\nMessage-ID:\r\n  <folded@t>\r\n\r\nbody\r\n", "<folded@t>"),
        (b"Subject: x\r\n\r\nMessage-ID: <in-the-body@t>\r\n", None),
        (b"\r\nMessage-ID: <in-the-body@t>\r\n", None),  # no header at all
        (b"Subject: x\r\nMessage-ID: <no-body@t>\r\n", "<no-body@t>"),
        (b"Message-ID:   \r\n\r\n", None),
    ],
)
def test_message_id(message: bytes, expected: str | None) -> None:
    envelope = Envelope.create(
        sender="a@example.com", recipients=["b@example.org"], message=message
    )
    assert envelope.message_id() == expected


# What message_id_in is meant to find, written as the one pattern it once was: the last
# "Message-ID:" at a line start (any case) in the header section, its continuation lines
# unfolded. The function finds it with a literal search instead; they must agree.
_REFERENCE = re.compile(rb"^message-id:((?:[^\r\n]|\r\n[ \t])*)", re.IGNORECASE | re.MULTILINE)


def _reference(start: bytes) -> str | None:
    if start.startswith(b"\r\n"):
        return None
    end = start.find(b"\r\n\r\n")
    found = _REFERENCE.findall(start, 0, len(start) if end < 0 else end)
    value = found[-1].replace(b"\r\n", b"").strip().decode("utf-8", "replace") if found else ""
    return value if 0 < len(value) <= MAX_MESSAGE_ID else None


_PIECES = [b"Message-ID:", b"message-id:", b"MESSAGE-ID: ", b"\r\n", b"\n", b"\r", b" ", b"\t"]
_PIECES += [b"<a@b>", b"x", b"\r\n\r\n", b"\xff", b"m", b"Message-IDs:", b"X-Message-ID: "]


@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_message_id_in_agrees_with_the_pattern(pieces: list[bytes]) -> None:
    start = b"".join(pieces)
    assert message_id_in(start) == _reference(start)
