"""The status table and the other views people read: widths, times, words."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from rich.console import Console

from smtpx.cli import render
from smtpx.errors import ConnectError, NoHopAvailable, describe

NOW = 1_800_000_000.0
REASON = "Connection refused (Connect call failed ('127.0.0.1', 25))"


def message(n: int, **fields: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": f"06ORU8K08~hSau{n:02d}",
        "parent_id": f"06ORU8K08~hSbu{n:02d}",
        "message_id": f"<{n}@example.com>",
        "status": "send_at",
        "queue": "active",
        "sender": f"<sender{n}@a-rather-long-domain-name.example.com>",
        "recipients": [f"someone{n}@example.net", f"another.recipient{n}@example.org"],
        "failed": [],
        "next_hops": [],
        "route": "example.net",
        "spool_date": NOW - 3600 * n - 42,
        "next_attempt": NOW + 300 * n,
        "attempts": [{"time": NOW - 60, "error": REASON}],
        "attempt_count": 1,
        "size": 1234,
        "related": [],
        "quarantine_reason": None,
    }
    shown.update(fields)
    return shown


MESSAGES = [
    message(1),
    message(2, status="frozen", queue="frozen", next_attempt=None),
    message(3, attempts=[], attempt_count=0, route=None, next_hops=["mx.example.net:25"]),
]


def shown(width: int, messages: list[dict[str, Any]] = MESSAGES) -> str:
    out = Console(width=width, record=True, color_system=None)
    table = render.render_status(messages, "table", NOW, width)
    out.print(table)
    return out.export_text()


def columns(text: str) -> list[str]:
    """Each column's text with the spaces taken out, read from where the header line
    puts the columns (rich lays them out at fixed positions)."""
    lines = text.splitlines()
    header = next(line for line in lines if "id" in line)
    starts = [m.start() for m in re.finditer(r"(?<=  )\S", "  " + header[2:])]
    bounds = [*starts, len(header)]
    rows = [line for line in lines[lines.index(header) + 2 :] if line.strip()][:-1]
    return [
        "".join(re.sub(r"\s+", "", row[a:b]) for row in rows) for a, b in itertools.pairwise(bounds)
    ]


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_the_table_fits_the_terminal(width: int) -> None:
    text = shown(width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text  # nothing cut short
    for each in MESSAGES:
        assert each["id"] in text  # ids whole, on one line
    # The last deferral reason, the sender and every recipient are there, maybe folded
    # over several lines of their column.
    last = columns(text)[-1]
    assert last.count(re.sub(r"\s+", "", REASON)) == 2
    assert "<sender1@a-rather-long-domain-name.example.com>" in "".join(columns(text))
    assert "another.recipient3@example.org" in "".join(columns(text))
    assert "1h00m" in text and "in 5m00s" in text and "frozen" in text
    # Times as people read them: no epoch seconds, no None, no Python names.
    assert str(int(NOW))[:6] not in text
    assert "None" not in text and "Error" not in text


def test_wide_tables_name_their_columns_and_the_next_hop() -> None:
    wide = shown(200)
    for header in ("time on spool", "next attempt", "next hop", "last deferral reason"):
        assert header in wide
    assert "mx.example.net:25" in wide and "example.net" in wide
    medium = shown(120)
    assert "last deferral reason" in medium and "next hop" not in medium
    narrow = shown(60)
    assert "age" in narrow and "next" in narrow


def test_show_gives_moments_in_iso_8601_and_relative() -> None:
    out = Console(width=100, record=True, color_system=None)
    render.render_message(message(1), out, NOW)
    text = out.export_text()
    assert re.search(r"spooled +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d \(1h00m ago\)", text)
    assert re.search(r"next attempt +in 5m00s \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", text)
    assert str(int(NOW))[:6] not in text


def test_errors_are_described_in_words() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 25)")
    assert describe(refused) == REASON
    assert describe(TimeoutError()) == "timed out"
    assert describe(ConnectionResetError(104, "Connection reset by peer")) == (
        "Connection reset by peer"
    )
    assert describe(ValueError("bad")) == "bad"
    assert describe(KeyError()) == "an unexpected error"
    failed = ConnectError("mx.test", 25, [("127.0.0.1", TimeoutError()), ("::1", refused)])
    text = str(NoHopAvailable([("mx.test:25", failed)]))
    assert "timed out" in text and "Connection refused" in text
    assert "Error" not in text and "None" not in text
