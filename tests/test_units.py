"""smtpx.units: the one parser of durations and sizes, and its printers; what is printed
reads back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from smtpx import units
from smtpx.cli import main


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5h", 5400),
        ("90", 90),
        ("0.25", 0.25),
        ("1e3s", 1000),
        ("1h30m", 5400),
        ("1m31s", 91),
        ("2h05m", 7500),
        ("3d04h", 273600),
        (" 1d 2h 3m 4s ", 93784),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "s", "5x", "-5s", "5 5m", "5mm", "30m1h", "1h1h", "inf", "nan", "1e400s", "5M"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        units.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (90, "1m30s"), (5400, "1h30m"), (172800, "2d"), (0.25, "0.25s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert units.format_duration(seconds) == text


@given(st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_format_duration_reads_back(seconds: float) -> None:
    assert units.parse_duration(units.format_duration(seconds)) == seconds


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_what_people_are_shown_reads_back(seconds: float) -> None:
    for text in (units.short_duration(seconds), units.exim_age(seconds)):
        read = units.parse_duration(text)
        assert read <= seconds  # whole units, rounded down
        assert seconds - read < max(60.0, seconds * 0.05) or text.endswith(("d", "h"))


def test_short_and_exim_durations() -> None:
    shown = [units.short_duration(s) for s in (42, 312, 7500, 273600, -5)]
    assert shown == ["42s", "5m12s", "2h05m", "3d04h", "0s"]
    ages = [units.exim_age(s) for s in (30, 99 * 60, 5 * 3600, 3 * 86400)]
    assert ages == ["0m", "99m", "5h", "3d"]


@pytest.mark.parametrize(
    ("text", "octets"),
    [
        ("4096", 4096),
        ("512K", 512 * 1024),
        ("35M", 35 * 1024**2),
        ("35m", 35 * 1024**2),
        ("35MB", 35 * 1024**2),
        ("35 MiB", 35 * 1024**2),
        ("1.5G", 3 * 1024**3 // 2),
        ("100B", 100),
    ],
)
def test_parse_size(text: str, octets: int) -> None:
    assert units.parse_size(text) == octets


@pytest.mark.parametrize("text", ["", "M", "-1K", "5T", "5KK", "1e400K"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        units.parse_size(text)


def test_exim_sizes_read_back() -> None:
    sizes = [512, 2970, 15 * 1024, 3 * 1024 * 1024]
    shown = [units.exim_size(n) for n in sizes]
    assert shown == ["512", "2.9K", "15K", "3.0M"]
    assert all(
        abs(units.parse_size(text) - n) <= n * 0.05 for text, n in zip(shown, sizes, strict=True)
    )


def test_the_cli_takes_what_it_prints(tmp_path: Path) -> None:
    """The CLI prints 1m31s and 2h05m; --older takes them (and 1h30m) as they are."""
    (tmp_path / "journal").mkdir()  # an empty spool directory
    for text in ("1m31s", "2h05m", "1h30m"):
        args = ["spool", "status", "--spool-dir", str(tmp_path), "--older", text]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(main, ["spool", "status", "--older", "1h1h"])
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_sizes_print_exactly_and_read_back() -> None:
    cases = {35 * 1024**2: "35M", 512 * 1024: "512K", 1024**3: "1G", 1000: "1000", 0: "0"}
    for size, text in cases.items():
        assert units.format_size(size) == text and units.parse_size(text) == size


def test_moments_are_iso_8601_in_utc() -> None:
    assert units.iso_time(1_800_000_000.4) == "2027-01-15T08:00:00Z"


@given(st.lists(st.floats(min_value=-1e9, max_value=4e9, allow_nan=False), max_size=40))
def test_the_moments_remembered_are_the_moments_asked(moments: list[float]) -> None:
    # iso_time keeps the texts of recent seconds: asked again, in any order and across
    # second boundaries (negative ones round down too), it says what strftime says.
    for moment in moments + moments[::-1]:
        expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
        assert units.iso_time(moment) == expected
    assert len(units._RECENT) <= 16
