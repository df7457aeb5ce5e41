"""smtpx.compactjson: the standard library's compact JSON, through orjson, and what orjson
refuses through the standard library."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpx import compactjson

SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text()
VALUES = st.recursive(
    SCALARS | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
EXACT = st.recursive(  # without floats: their digits are the same, their notation may not be
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def stdlib(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@given(EXACT)
def test_the_octets_are_the_standard_librarys(value: Any) -> None:
    assert compactjson.dumps(value) == stdlib(value)


@given(VALUES)
def test_what_is_written_reads_back_with_either_reader(value: Any) -> None:
    data = compactjson.dumps(value)
    assert compactjson.loads(data) == value
    assert json.loads(data) == value
    assert compactjson.loads(stdlib(value)) == value


def test_a_float_keeps_every_digit() -> None:
    for number in (1796468244.5319064, 1e16, 5e-324, -0.0, 0.1 + 0.2):
        back = compactjson.loads(compactjson.dumps({"at": number}))["at"]
        assert back == number and math.copysign(1, back) == math.copysign(1, number)


def test_a_lone_surrogate_is_written_as_an_ascii_escape_and_reads_back() -> None:
    value = {"failed": ["550 bad \udcff reply", "caf\u00e9"]}
    data = compactjson.dumps(value)
    assert data == json.dumps(value, separators=(",", ":")).encode("ascii")
    assert b"\\udcff" in data and b"\\u00e9" in data
    assert compactjson.loads(data) == value


def test_what_orjson_refuses_to_write_is_written_as_the_standard_library_does() -> None:
    for value in ({"n": 2**70}, {1: "one"}, [-(2**64)]):
        assert compactjson.dumps(value) == stdlib(value)


def test_what_orjson_refuses_to_read_the_standard_library_reads() -> None:
    assert math.isnan(compactjson.loads(b"[NaN]")[0])
    assert compactjson.loads('{"a":Infinity}') == {"a": math.inf}
    assert compactjson.loads(b'"\\ud800"') == "\ud800"


@pytest.mark.parametrize("data", [b"", b"[1]x", b"{", b'"\xff"', "{'a': 1}"])
def test_what_is_not_json_is_a_value_error(data: bytes | str) -> None:
    # (The standard library's, which reads what orjson refused: its message.)
    with pytest.raises(ValueError, match=r"Expecting|Extra data|can't decode"):
        compactjson.loads(data)


def test_what_json_cannot_hold_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        compactjson.dumps({"a": object()})
