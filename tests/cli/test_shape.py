"""``smtpx spool shape``: the queue by domain and age (qshape's histogram)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from smtpx.cli.shape import shape_table
from smtpx.spool.shape import bounds, shape

NOW = 1_800_000_000.0


def queued(n: int, minutes: float, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"m{n}",
        "sender": "<alice@Example.COM>",
        "recipients": [f"r{n}@example.net"],
        "failed": [],
        "route": "example.net",
        "spool_date": NOW - minutes * 60,
        **fields,
    }


MESSAGES = [
    queued(1, 1),
    queued(2, 4.9),
    queued(3, 5),  # 5 minutes is not under 5m: the 10m bucket
    queued(4, 30, route="gmail.com"),
    queued(5, 2000, route=None, recipients=["x@Other.example"]),
    queued(6, 90, sender="<>", route="example.net"),
    queued(7, 100_000, route=None, recipients=[], failed=[{"recipient": "y@gone.example"}]),
]


def test_buckets_double_from_the_first_or_grow_linearly() -> None:
    assert bounds(300, 5, linear=False) == [300, 600, 1200, 2400]
    assert bounds(300, 5, linear=True) == [300, 600, 900, 1200]


def test_the_histogram_by_destination_and_age() -> None:
    result = shape(MESSAGES, NOW)
    assert result.labels == [
        "5m", "10m", "20m", "40m", "1h20m", "2h40m", "5h20m", "10h40m", "21h20m", "21h20m+",
    ]  # fmt: skip
    rows = dict(result.rows)
    assert [domain for domain, _ in result.rows] == [
        "TOTAL",
        "example.net",
        "gmail.com",
        "gone.example",
        "other.example",
    ]
    # T, then one count per bucket
    assert rows["TOTAL"] == [7, 2, 1, 0, 1, 0, 1, 0, 0, 0, 2]
    assert rows["example.net"] == [4, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    assert rows["other.example"][-1] == 1  # 2000 minutes: over 21h20m (1280)
    assert rows["gone.example"][-1] == 1


def test_by_sender_domain_and_json() -> None:
    result = shape(MESSAGES, NOW, by="sender", first=3600, count=3, linear=True)
    assert result.labels == ["1h", "2h", "2h+"]
    assert dict(result.rows) == {
        "TOTAL": [7, 4, 1, 2],
        "example.com": [6, 4, 0, 2],
        "<>": [1, 0, 1, 0],
    }
    assert result.as_json()["rows"][1] == {"domain": "example.com", "total": 6, "by_age": [4, 0, 2]}


def test_the_table_fits_80_columns() -> None:
    out = Console(width=80, record=True, color_system=None)

    out.print(shape_table(shape(MESSAGES, NOW)))
    text = out.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "TOTAL" in text and "21h20m+" in text and "…" not in text
    assert "other.example" in text.replace("\n  ", "")
