"""Tests for smtpx.envelope: ids, retry intervals, next hops, envelopes, headers, batches."""

from __future__ import annotations

import ast
import email.message
import email.policy
import pickle
import random
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import smtpx.envelope as envelope_module
from smtpx.envelope import (
    Address,
    Batch,
    Envelope,
    EnvelopeBodiless,
    EnvelopeId,
    EnvelopeIdGenerator,
    EnvelopeInfo,
    HostPort,
    RetryInterval,
    RoutedBodiless,
    RoutedEnvelope,
    Sender,
)
from smtpx.errors import ParseError
from smtpx.protocol import addresses
from smtpx.protocol.params import MailParams

ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"


def stuck_clock(ns: int) -> Callable[[], int]:
    """A fresh clock (with its own monotonic floor) that always reads ``ns``."""

    def clock() -> int:
        return ns

    return clock


def scripted_clock(readings: list[int]) -> Callable[[], int]:
    values: Iterator[int] = iter(readings)

    def clock() -> int:
        return next(values)

    return clock


# ---------------------------------------------------------------------------------------
# Module hygiene


def test_all_names_exist_and_addresses_are_re_exported() -> None:
    for name in envelope_module.__all__:
        assert hasattr(envelope_module, name), name
    assert Sender is addresses.Sender
    assert Address is addresses.Address


def test_module_imports_only_stdlib_and_smtpx() -> None:
    # (compiled, the module's __file__ is the extension: its source lies next to it)
    source = Path(envelope_module.__file__).with_name("envelope.py").read_text(encoding="utf-8")
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= set(sys.stdlib_module_names) | {"smtpx"}
    assert not roots & {"asyncio", "socket", "ssl", "selectors"}


# ---------------------------------------------------------------------------------------
# EnvelopeId


def test_id_shape_is_sixteen_url_safe_characters() -> None:
    envelope_id = EnvelopeId.create()
    assert isinstance(envelope_id, str)
    assert len(envelope_id) == 16
    assert set(envelope_id) <= set(ID_ALPHABET)
    assert urllib.parse.quote(envelope_id, safe="") == envelope_id


def test_alphabet_is_ascii_sorted() -> None:
    assert list(ID_ALPHABET) == sorted(ID_ALPHABET)
    assert len(set(ID_ALPHABET)) == 64
    # An id never starts like a command-line option.
    assert not any(EnvelopeId.create().startswith("-") for _ in range(100))


def test_default_id_timestamp_is_now() -> None:
    before = time.time()
    envelope_id = EnvelopeId.create()
    after = time.time()
    assert before - 0.001 <= envelope_id.timestamp <= after + 0.01


def test_timestamp_decodes_the_injected_clock() -> None:
    ns = 1_700_000_000_123_456_789
    envelope_id = EnvelopeIdGenerator(stuck_clock(ns), random.Random(1))()
    assert envelope_id.timestamp == pytest.approx(1_700_000_000.123456, abs=1e-6)


def test_ids_from_a_stuck_clock_are_unique_and_sorted() -> None:
    generator = EnvelopeIdGenerator(stuck_clock(1_700_000_000_000_000_000), random.Random(0))
    ids = [generator() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)
    # The floor bumps the timestamp by one microsecond per id.
    base_micros = 1_700_000_000_000_000
    assert [round(i.timestamp * 1e6) for i in ids] == list(range(base_micros, base_micros + 1000))


def test_ids_from_a_clock_going_backwards_stay_sorted() -> None:
    base = 1_700_000_000_000_000_000
    readings = [base, base - 5_000, base - 10_000_000_000, base + 3_000, base + 3_000, base + 1]
    generator = EnvelopeIdGenerator(scripted_clock(readings), random.Random(7))
    ids = [generator() for _ in readings]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert ids[3].timestamp == pytest.approx((base + 3_000) / 1e9)


def test_a_fake_clock_does_not_drag_the_real_clock() -> None:
    future = int((time.time() + 10 * 365 * 86_400) * 1e9)
    fake = EnvelopeIdGenerator(stuck_clock(future))
    fake_ids = [EnvelopeId.create(fake) for _ in range(3)]
    real = EnvelopeId.create()
    assert fake_ids[0].timestamp > time.time() + 9 * 365 * 86_400
    assert abs(real.timestamp - time.time()) < 5


def test_same_clock_and_seed_give_the_same_id() -> None:
    ns = 1_650_000_000_000_000_000
    first = EnvelopeIdGenerator(stuck_clock(ns), random.Random(42))()
    second = EnvelopeIdGenerator(stuck_clock(ns), random.Random(42))()
    third = EnvelopeIdGenerator(stuck_clock(ns), random.Random(43))()
    assert first == second
    assert first[:10] == third[:10]
    assert first != third


@given(
    st.integers(min_value=0, max_value=2**62),
    st.integers(min_value=0, max_value=2**62),
    st.integers(min_value=0, max_value=2**32),
)
def test_id_order_is_creation_time_order(a_ns: int, b_ns: int, seed: int) -> None:
    a = EnvelopeIdGenerator(stuck_clock(a_ns), random.Random(seed))()
    b = EnvelopeIdGenerator(stuck_clock(b_ns), random.Random(seed + 1))()
    if a_ns // 1000 < b_ns // 1000:
        assert a < b
    elif a_ns // 1000 > b_ns // 1000:
        assert a > b
    else:
        assert a[:10] == b[:10]
    assert a.timestamp == (a_ns // 1000) / 1e6


def test_id_rejects_clock_before_the_epoch() -> None:
    with pytest.raises(ValueError, match="epoch"):
        EnvelopeIdGenerator(stuck_clock(-1_000_000))()


def test_id_parse_accepts_what_create_makes() -> None:
    envelope_id = EnvelopeId.create()
    parsed = EnvelopeId.parse(str(envelope_id))
    assert parsed == envelope_id
    assert isinstance(parsed, EnvelopeId)
    assert parsed.timestamp == envelope_id.timestamp


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-5NEnQ7eFzMwdqp",  # 15 characters
        "-5NEnQ7eFzMwdqpwX",  # 17 characters
        "-5NEnQ7eFzMwdq+w",  # standard base64, not URL-safe
        "-5NEnQ7eFzMwdq/w",
        "-5NEnQ7eFzMwdq=w",
        "-5NEnQ7eFzMwdq w",
        "-5NEnQ7eFzMwdq.w",
        "-5NEnQ7eFzMwdqéw",
    ],
)
def test_id_parse_rejects_bad_text(text: str) -> None:
    with pytest.raises(ParseError):
        EnvelopeId.parse(text)
    with pytest.raises(ParseError, match="envelope id"):  # the constructor validates too
        EnvelopeId(text)
    assert issubclass(ParseError, ValueError)


def test_id_survives_pickle_and_keeps_its_type() -> None:
    envelope_id = EnvelopeId.create()
    copy = pickle.loads(pickle.dumps(envelope_id))
    assert copy == envelope_id
    assert type(copy) is EnvelopeId
    assert repr(copy) == f"EnvelopeId({str(envelope_id)!r})"


# ---------------------------------------------------------------------------------------
# RetryInterval


@pytest.mark.parametrize(
    ("text", "span", "jitter"),
    [
        ("30s", 30.0, None),
        ("5m", 300.0, None),
        ("2h", 7200.0, None),
        ("1d", 86400.0, None),
        ("1.5h", 5400.0, None),
        ("45", 45.0, None),
        ("0.25", 0.25, None),
        ("5m~30s", 300.0, 30.0),
        (" 5m ~ 30s ", 300.0, 30.0),
        ("1h~0", 3600.0, 0.0),
        ("1e3s", 1000.0, None),
        ("1h30m~1m30s", 5400.0, 90.0),
    ],
)
def test_retry_interval_parse(text: str, span: float, jitter: float | None) -> None:
    interval = RetryInterval.parse(text)
    assert interval == RetryInterval(span=span, jitter=jitter)
    assert interval.span == span
    assert interval.jitter == jitter


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (RetryInterval(span=300, jitter=30), "5m~30s"),
        (RetryInterval(span=5400), "1h30m"),
        (RetryInterval(span=86400 * 2), "2d"),
        (RetryInterval(span=7200, jitter=0), "2h~0s"),
        (RetryInterval(span=0.25), "0.25s"),
        (RetryInterval(span=0), "0s"),
    ],
)
def test_retry_interval_str_is_canonical(interval: RetryInterval, text: str) -> None:
    assert str(interval) == text
    assert RetryInterval.parse(text) == interval


@pytest.mark.parametrize(
    "text",
    ["", "5x", "-5s", "5m~", "~5s", "inf", "nan", "1e400s", "5m~30s~1s", "m", "5 5m", "5mm"],
)
def test_retry_interval_parse_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        RetryInterval.parse(text)


@pytest.mark.parametrize(
    ("span", "jitter"),
    [(-1.0, None), (1.0, -0.5), (float("inf"), None), (float("nan"), None), (1.0, float("nan"))],
)
def test_retry_interval_rejects_bad_numbers(span: float, jitter: float | None) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        RetryInterval(span=span, jitter=jitter)


def test_retry_interval_rejects_non_numbers() -> None:
    with pytest.raises(TypeError):
        RetryInterval(span=True)
    with pytest.raises(TypeError):
        RetryInterval(span="5m")  # type: ignore[arg-type]


seconds = st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False)


@given(seconds, st.none() | seconds)
def test_retry_interval_str_parse_round_trip(span: float, jitter: float | None) -> None:
    interval = RetryInterval(span=span, jitter=jitter)
    text = str(interval)
    again = RetryInterval.parse(text)
    assert again == interval
    assert str(again) == text


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from("smhd"))
def test_retry_interval_units(count: int, unit: str) -> None:
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert RetryInterval.parse(f"{count}{unit}").span == count * size


def test_to_span_stays_within_jitter_bounds() -> None:
    interval = RetryInterval(span=300, jitter=30)
    rng = random.Random(1234)
    draws = [interval.to_span(rng) for _ in range(2000)]
    assert all(270 <= draw <= 330 for draw in draws)
    # Spread over the whole range, not stuck at the centre.
    assert min(draws) < 275
    assert max(draws) > 325
    assert len(set(draws)) > 1900


def test_to_span_is_reproducible_with_a_seed() -> None:
    interval = RetryInterval.parse("5m~30s")
    first = [interval.to_span(random.Random(99)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert first[0] != interval.to_span(random.Random(100))


def test_to_span_never_below_zero() -> None:
    interval = RetryInterval(span=1, jitter=10)
    rng = random.Random(5)
    draws = [interval.to_span(rng) for _ in range(1000)]
    assert all(0 <= draw <= 11 for draw in draws)
    assert max(draws) > 9


def test_to_span_without_jitter_is_the_span() -> None:
    assert RetryInterval(span=42.5).to_span(random.Random(0)) == 42.5
    assert RetryInterval(span=42.5, jitter=0).to_span() == 42.5


@given(seconds, seconds, st.integers(min_value=0, max_value=2**32))
def test_to_span_bounds_property(span: float, jitter: float, seed: int) -> None:
    draw = RetryInterval(span=span, jitter=jitter).to_span(random.Random(seed))
    assert max(0.0, span - jitter) <= draw <= span + jitter


# ---------------------------------------------------------------------------------------
# HostPort


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("mx.example.com:2525", "mx.example.com", 2525),
        ("mx.example.com", "mx.example.com", 25),
        ("[::1]:25", "::1", 25),
        ("[2001:db8::1]:587", "2001:db8::1", 587),
        ("[::1]", "::1", 25),
        ("::1", "::1", 25),
        ("192.0.2.1:26", "192.0.2.1", 26),
        ("localhost:1", "localhost", 1),
        ("localhost:65535", "localhost", 65535),
    ],
)
def test_host_port_parse(text: str, host: str, port: int) -> None:
    hop = HostPort.parse(text)
    assert hop == HostPort(host=host, port=port)
    assert HostPort.parse(str(hop)) == hop


def test_host_port_str() -> None:
    assert str(HostPort(host="mx.example.com")) == "mx.example.com:25"
    assert str(HostPort(host="::1", port=2525)) == "[::1]:2525"
    assert str(HostPort(host="192.0.2.1", port=26)) == "192.0.2.1:26"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mx:0",
        "mx:65536",
        "mx:abc",
        "mx:",
        "mx:-1",
        "mx:２５",  # non-ASCII digits
        "[::1",
        "[not-ip]:25",
        "[::1]x",
        "[::1]:",
        "1:2:3",
        "a b:25",
        ":25",
    ],
)
def test_host_port_parse_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        HostPort.parse(text)


def test_host_port_validates_fields() -> None:
    with pytest.raises(ValueError, match="port"):
        HostPort(host="mx", port=70000)
    with pytest.raises(TypeError):
        HostPort(host="mx", port=True)
    with pytest.raises(ValueError, match="IPv6"):
        HostPort(host="mx:25")
    with pytest.raises(ValueError, match="host"):
        HostPort(host="[::1]")


hostnames = st.from_regex(
    r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?(?:\.[a-z0-9]{1,8}){0,3}", fullmatch=True
)
hosts = hostnames | st.ip_addresses().map(str)


@given(hosts, st.integers(min_value=1, max_value=65535))
def test_host_port_round_trip(host: str, port: int) -> None:
    hop = HostPort(host=host, port=port)
    text = str(hop)
    assert HostPort.parse(text) == hop
    assert text.startswith("[") == (":" in host)


# ---------------------------------------------------------------------------------------
# EnvelopeInfo


def test_info_equality_and_hash_ignore_id() -> None:
    a = EnvelopeInfo.create(sender="a@example.com", recipients=["b@example.com"])
    b = EnvelopeInfo.create(sender="a@example.com", recipients=["b@example.com"])
    assert a.id != b.id
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a.with_id(b.id) == a


def test_info_equality_sees_the_other_fields() -> None:
    base = EnvelopeInfo.create(sender="a@example.com", recipients=["b@example.com"])
    assert base != base.with_recipients(["c@example.com"])
    assert base != base.with_sender("<>")
    assert base != base.with_route("slow")
    assert base != base.with_sender_args("SIZE=10")
    assert base != base.with_rejected_recipients(["x@example.com"])
    # Domains compare case-insensitively (RFC 5321 2.4), so this one is the same.
    assert base == base.with_recipients(["b@EXAMPLE.com"])


def test_info_defaults() -> None:
    info = EnvelopeInfo(sender=Sender.NULL, recipients=(Address.parse("b@example.com"),))
    assert info.sender_args == MailParams()
    assert info.rejected_recipients == ()
    assert info.route is None
    assert isinstance(info.id, EnvelopeId)
    assert abs(info.id.timestamp - time.time()) < 5


def test_info_create_parses_text() -> None:
    info = EnvelopeInfo.create(
        sender="<alice@example.com>",
        recipients=["<bob@example.org>", "carol@example.net", Address.parse("dan@example.com")],
        sender_args="SIZE=1000 BODY=8BITMIME",
        rejected_recipients=["eve@example.com"],
        route="outbound",
        id="05NEnQ7eFzMwdqpw",
    )
    assert info.sender == Sender(Address("alice", "example.com"))
    assert [str(r) for r in info.recipients] == [
        "bob@example.org",
        "carol@example.net",
        "dan@example.com",
    ]
    assert info.sender_args.size == 1000
    assert info.sender_args.body == "8BITMIME"
    assert info.rejected_recipients == (Address("eve", "example.com"),)
    assert info.route == "outbound"
    assert info.id == EnvelopeId.parse("05NEnQ7eFzMwdqpw")


def test_info_create_null_sender_and_postmaster() -> None:
    info = EnvelopeInfo.create(sender="<>", recipients=["<Postmaster>"])
    assert info.sender is Sender.NULL
    assert info.recipients[0].is_postmaster


def test_info_create_rejects_bad_text() -> None:
    with pytest.raises(ParseError):
        EnvelopeInfo.create(sender="a@example.com", recipients=["not an address"])
    with pytest.raises(ParseError):
        EnvelopeInfo.create(sender="<<bad", recipients=[])
    with pytest.raises(ParseError):
        EnvelopeInfo.create(sender="a@example.com", recipients=[], id="short")
    with pytest.raises(TypeError, match="single string"):
        EnvelopeInfo.create(sender="a@example.com", recipients="b@example.com")


def test_info_constructor_freezes_lists_and_checks_types() -> None:
    recipients = [Address.parse("b@example.com")]
    info = EnvelopeInfo(sender=Sender.NULL, recipients=recipients)
    recipients.append(Address.parse("c@example.com"))
    assert info.recipients == (Address.parse("b@example.com"),)
    hash(info)
    with pytest.raises(TypeError, match="Address"):
        EnvelopeInfo(sender=Sender.NULL, recipients=("b@example.com",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Sender"):
        EnvelopeInfo(sender="a@example.com", recipients=())  # type: ignore[arg-type]


def test_info_with_helpers_return_new_records_and_keep_the_id() -> None:
    info = EnvelopeInfo.create(sender="a@example.com", recipients=["b@example.com"])
    routed = info.with_route("slow")
    assert routed.route == "slow"
    assert info.route is None
    assert routed.id == info.id
    fresh = info.with_id()
    assert fresh.id != info.id
    assert fresh == info
    with pytest.raises(AttributeError):
        info.route = "x"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Envelope: construction


MESSAGE = (
    b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org,\r\n"
    b" Carol <carol@example.net>\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= and\r\n"
    b"\tmore\r\n"
    b"X-Dup: one\r\n"
    b"x-dup: two\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b"\r\n"
    b"X-Not-A-Header: body\r\n"
    b".leading dot\r\n"
)
HEADER_BLOCK, BODY = MESSAGE.split(b"\r\n\r\n", 1)
HEADER_BLOCK += b"\r\n\r\n"


def make(message: bytes = MESSAGE, **kwargs: str) -> Envelope:
    return Envelope.create(
        sender="alice@example.com",
        recipients=["bob@example.org"],
        message=message,
        **kwargs,  # type: ignore[arg-type]
    )


def test_create_normalises_bare_lf() -> None:
    env = Envelope.create(
        sender="a@example.com",
        recipients=["b@example.com"],
        message=b"Subject: x\n\nline 1\nline 2\r\nline 3\n",
    )
    assert env.message == b"Subject: x\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"
    assert make().message == MESSAGE  # CRLF input is kept byte for byte


def test_create_from_text_and_message_objects() -> None:
    from_text = Envelope.create(
        sender="<>", recipients=["b@example.com"], message="Subject: é\n\nhi\n"
    )
    assert from_text.message == "Subject: é\r\n\r\nhi\r\n".encode()
    assert from_text.sender.is_null

    legacy = email.message.Message()  # compat32 policy
    legacy["Subject"] = "legacy"
    legacy.set_payload("From here on\nbye\n")
    env = Envelope.create(sender="a@example.com", recipients=["b@example.com"], message=legacy)
    assert env.last_header("Subject") == "legacy"
    # No mbox ">From" mangling, and CRLF line endings.
    assert env.body == b"From here on\r\nbye\r\n"

    modern = email.message.EmailMessage()
    modern["Subject"] = "modern"
    modern.set_content("body text\n")
    env = Envelope.create(sender="a@example.com", recipients=["b@example.com"], message=modern)
    assert env.last_header("Subject") == "modern"
    assert b"\n" not in env.message.replace(b"\r\n", b"")
    assert env.email().get_content() == "body text\r\n"  # policy.SMTP keeps CRLF


def test_envelope_forwards_info_fields() -> None:
    env = make(route="r1")
    assert env.sender == env.info.sender == Sender.parse("<alice@example.com>")
    assert env.recipients == (Address.parse("bob@example.org"),)
    assert env.rejected_recipients == ()
    assert env.sender_args == MailParams()
    assert env.route == "r1"
    assert env.id == env.info.id


def test_envelope_equality_ignores_id_but_not_message() -> None:
    assert make() == make()
    assert make() != make(MESSAGE + b"x")
    assert hash(make()) == hash(make())


def test_envelope_constructor_requires_bytes() -> None:
    info = EnvelopeInfo.create(sender="<>", recipients=[])
    with pytest.raises(TypeError, match="create"):
        Envelope(info=info, message="text")  # type: ignore[arg-type]
    assert Envelope(info=info, message=bytearray(b"x")).message == b"x"
    assert "bytes" in repr(Envelope(info=info, message=b"abc"))


def test_email_parses_with_the_stdlib() -> None:
    msg = make().email()
    assert isinstance(msg, email.message.EmailMessage)
    assert msg["Subject"] == "café and\tmore"
    assert [a.addr_spec for a in msg["To"].addresses] == ["bob@example.org", "carol@example.net"]
    assert msg.get_payload() == BODY.decode()


# ---------------------------------------------------------------------------------------
# Envelope.of_email


def test_of_email_reads_sender_and_recipients() -> None:
    env = Envelope.of_email(
        b"From: Alice <alice@example.com>\r\n"
        b"To: bob@example.org, Carol <carol@example.net>\r\n"
        b"Cc: dave@example.com, BOB@example.ORG\r\n"
        b"Bcc: erin@example.com\r\n"
        b"To: frank@example.com\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"body\r\n"
    )
    assert env.sender == Sender(Address("alice", "example.com"))
    # To fields first, then Cc, then Bcc; BOB@example.ORG repeats bob only in the domain
    # case, which does not matter (the local part does).
    assert [str(r) for r in env.recipients] == [
        "bob@example.org",
        "carol@example.net",
        "frank@example.com",
        "dave@example.com",
        "BOB@example.ORG",
        "erin@example.com",
    ]
    assert env.message.endswith(b"\r\n\r\nbody\r\n")


def test_of_email_deduplicates_recipients() -> None:
    env = Envelope.of_email(
        b"From: a@example.com\r\nTo: b@example.com, b@EXAMPLE.COM\r\nCc: b@example.com\r\n\r\n"
    )
    assert env.recipients == (Address("b", "example.com"),)


def test_of_email_folded_header_and_message_object() -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = ", ".join(f"user{i}@example.com" for i in range(20))  # folded by the stdlib
    msg.set_content("hi\n")
    env = Envelope.of_email(msg)
    assert len(env.recipients) == 20
    assert env.recipients[-1] == Address("user19", "example.com")
    assert b"\r\n " in env.message  # it really was folded


def test_of_email_needs_exactly_one_from() -> None:
    with pytest.raises(ParseError, match="exactly one From"):
        Envelope.of_email(b"To: b@example.com\r\n\r\nbody\r\n")
    with pytest.raises(ParseError, match="exactly one From"):
        Envelope.of_email(
            b"From: a@example.com\r\nFrom: c@example.com\r\nTo: b@example.com\r\n\r\n"
        )
    with pytest.raises(ParseError, match="exactly one address"):
        Envelope.of_email(b"From: a@example.com, c@example.com\r\nTo: b@example.com\r\n\r\n")
    with pytest.raises(ParseError, match="From"):
        Envelope.of_email(b"From: not-an-address\r\nTo: b@example.com\r\n\r\n")


def test_of_email_from_header_in_body_does_not_count() -> None:
    with pytest.raises(ParseError, match="exactly one From"):
        Envelope.of_email(b"To: b@example.com\r\n\r\nFrom: a@example.com\r\n")


def test_of_email_unparseable_recipient() -> None:
    message = (
        b"From: a@example.com\r\n"
        b"To: good@example.com, no-at-sign\r\n"
        b"Cc: bad<<\r\n"
        b"Bcc: other@example.com\r\n"
        b"\r\n"
    )
    with pytest.raises(ParseError, match="no-at-sign"):
        Envelope.of_email(message)
    env = Envelope.of_email(message, ignore_unparseable_recipient_header=True)
    assert env.recipients == (Address("good", "example.com"), Address("other", "example.com"))


def test_of_email_empty_group_and_no_recipients() -> None:
    env = Envelope.of_email(b"From: a@example.com\r\nTo: undisclosed-recipients:;\r\n\r\n")
    assert env.recipients == ()
    env = Envelope.of_email(b"From: a@example.com\r\n\r\n")
    assert env.recipients == ()


# ---------------------------------------------------------------------------------------
# Header helpers


def test_headers_are_unfolded_raw_values_in_order() -> None:
    env = make()
    assert env.headers() == [
        ("Received", "from a by b; Mon, 1 Jan 2024 00:00:00 +0000"),
        ("From", "Alice <alice@example.com>"),
        ("To", "bob@example.org, Carol <carol@example.net>"),
        ("Subject", "=?utf-8?q?caf=C3=A9?= and\tmore"),
        ("X-Dup", "one"),
        ("x-dup", "two"),
    ]
    assert env.header_list() == env.headers()


def test_last_and_find_all_headers_ignore_case() -> None:
    env = make()
    assert env.find_all_headers("X-DUP") == ["one", "two"]
    assert env.last_header("x-Dup") == "two"
    assert env.last_header("X-Not-A-Header") is None  # it is in the body
    assert env.find_all_headers("Missing") == []


def test_subject_decoded() -> None:
    assert make().subject_decoded() == "café and\tmore"
    assert make(b"To: x@example.com\r\n\r\n").subject_decoded() is None


def test_add_header_goes_on_top_and_keeps_the_rest() -> None:
    env = make()
    added = env.add_header("X-Trace", "value 1")
    assert added.message == b"X-Trace: value 1\r\n" + MESSAGE
    assert added.headers()[0] == ("X-Trace", "value 1")
    assert env.message == MESSAGE  # the original is untouched
    assert added.info is env.info


def test_add_header_at_bottom_goes_before_the_blank_line() -> None:
    added = make().add_header_at_bottom("X-Last", "v")
    assert added.message == HEADER_BLOCK[:-2] + b"X-Last: v\r\n\r\n" + BODY
    assert added.headers()[-1] == ("X-Last", "v")


def test_add_header_at_bottom_without_a_final_line_break() -> None:
    env = make(b"Subject: no newline")
    assert env.add_header_at_bottom("X-A", "1").message == b"Subject: no newline\r\nX-A: 1\r\n"
    assert env.add_header("X-A", "1").message == b"X-A: 1\r\nSubject: no newline"


def test_set_header_replaces_every_occurrence_in_place() -> None:
    env = make().set_header("X-DUP", "only")
    assert env.find_all_headers("x-dup") == ["only"]
    names = [name for name, _ in env.headers()]
    assert names == ["Received", "From", "To", "Subject", "X-DUP"]
    assert env.body == BODY


def test_set_header_adds_when_missing() -> None:
    top = make().set_header("X-New", "1")
    assert top.headers()[0] == ("X-New", "1")
    bottom = make().set_header_at_bottom("X-New", "1")
    assert bottom.headers()[-1] == ("X-New", "1")
    assert make().set_header_at_bottom("x-dup", "2").headers()[4] == ("x-dup", "2")


def test_filter_headers() -> None:
    env = make().filter_headers(lambda name, _value: name.lower() != "x-dup")
    assert env.find_all_headers("X-Dup") == []
    assert env.message == HEADER_BLOCK.replace(b"X-Dup: one\r\nx-dup: two\r\n", b"") + BODY


def test_map_headers_keeps_unchanged_fields_byte_for_byte() -> None:
    env = make().map_headers(lambda name, value: value.upper() if name == "X-Dup" else value)
    assert env.find_all_headers("x-dup") == ["ONE", "two"]
    # The folded To and Subject fields were not rewritten.
    assert b"To: bob@example.org,\r\n Carol <carol@example.net>\r\n" in env.message
    assert b"Subject: =?utf-8?q?caf=C3=A9?= and\r\n\tmore\r\n" in env.message
    assert env.body == BODY
    assert make().map_headers(lambda _name, value: value).message == MESSAGE


def test_non_ascii_values_are_encoded_unless_smtputf8() -> None:
    plain = make().set_header("Subject", "naïve café")
    raw = plain.last_header("Subject")
    assert raw is not None
    assert raw.isascii()
    assert "=?utf-8?" in raw
    assert plain.subject_decoded() == "naïve café"

    utf8 = make(sender_args="SMTPUTF8").set_header("Subject", "naïve café")
    assert "Subject: naïve café\r\n".encode() in utf8.message
    assert utf8.subject_decoded() == "naïve café"


def test_long_values_are_folded() -> None:
    env = make().add_header("X-Long", " ".join(["word"] * 40))
    first_field = env.message.split(b"\r\nReceived:")[0]
    assert all(len(line) <= 78 for line in first_field.split(b"\r\n"))
    assert first_field.count(b"\r\n ") >= 1
    assert env.last_header("X-Long") == " ".join(["word"] * 40)


@pytest.mark.parametrize("value", ["a\r\nBcc: evil@example.com", "a\nb", "a\rb"])
def test_header_injection_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        make().add_header("X-A", value)
    with pytest.raises(ValueError, match="CR or LF"):
        make().map_headers(lambda _name, _value: value)


@pytest.mark.parametrize("name", ["", "X A", "X:A", "Ä", "X\r\n"])
def test_bad_header_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="field name"):
        make().set_header(name, "v")


def test_message_without_headers() -> None:
    env = make(b"\r\nbody only\r\n")
    assert env.headers() == []
    assert env.body == b"body only\r\n"
    assert env.add_header("X-A", "1").message == b"X-A: 1\r\n\r\nbody only\r\n"


def test_non_field_lines_are_kept_but_not_reported() -> None:
    env = make(b" stray continuation\r\nnot a field\r\nSubject: s\r\n\r\nbody\r\n")
    assert env.headers() == [("Subject", "s")]
    assert env.add_header_at_bottom("X-A", "1").message == (
        b" stray continuation\r\nnot a field\r\nSubject: s\r\nX-A: 1\r\n\r\nbody\r\n"
    )


def test_eight_bit_header_bytes_survive_a_no_op_map() -> None:
    message = b"Subject: caf\xe9 \xff\r\nX-A: 1\r\n\r\nbody\r\n"
    env = make(message)
    assert env.map_headers(lambda _n, v: v).message == message
    assert env.set_header("X-A", "2").message == b"Subject: caf\xe9 \xff\r\nX-A: 2\r\n\r\nbody\r\n"


field_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
field_values = (
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
)
header_lists = st.lists(st.tuples(field_names, field_values), max_size=6)
bodies = st.binary(max_size=200) | st.lists(
    st.sampled_from([b"\r\n", b"From: x@y\r\n", b".\r\n", b"\r\n\r\n", b"text", b"\n", b"\r"]),
    max_size=12,
).map(b"".join)


def build(headers: list[tuple[str, str]], body: bytes) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers) + b"\r\n" + body


@given(header_lists, bodies, field_names, field_values)
def test_header_helpers_never_touch_the_body(
    headers: list[tuple[str, str]], body: bytes, name: str, value: str
) -> None:
    env = Envelope(
        info=EnvelopeInfo.create(sender="<>", recipients=[]), message=build(headers, body)
    )
    results = [
        env.add_header(name, value),
        env.add_header_at_bottom(name, value),
        env.set_header(name, value),
        env.set_header_at_bottom(name, value),
        env.filter_headers(lambda n, _v: n.lower() != name.lower()),
        env.map_headers(lambda _n, v: v + "!"),
    ]
    for result in results:
        bodiless, split_body = result.split_bodiless()
        assert split_body == body
        assert result.body == body
        # The header block still ends with the empty line (or is just that line).
        assert bodiless.headers == b"\r\n" or bodiless.headers.endswith(b"\r\n\r\n")
    assert results[0].headers() == [(name, value), *headers]
    assert results[1].headers() == [*headers, (name, value)]
    assert results[2].find_all_headers(name) == [value]
    assert results[4].find_all_headers(name) == []
    assert [v for _, v in results[5].headers()] == [v + "!" for _, v in headers]


# ---------------------------------------------------------------------------------------
# Bodiless


def test_split_bodiless_and_join() -> None:
    env = make()
    bodiless, body = env.split_bodiless()
    assert isinstance(bodiless, EnvelopeBodiless)
    assert bodiless.headers == HEADER_BLOCK
    assert bodiless.headers.endswith(b"\r\n\r\n")
    assert body == BODY
    assert bodiless.info is env.info
    joined = Envelope.of_bodiless(bodiless, body)
    assert joined.message == MESSAGE
    assert joined.id == env.id


def test_split_without_a_blank_line() -> None:
    bodiless, body = make(b"Subject: only headers\r\n").split_bodiless()
    assert bodiless.headers == b"Subject: only headers\r\n"
    assert body == b""


def test_bodiless_has_the_header_helpers() -> None:
    bodiless, body = make().split_bodiless()
    edited = bodiless.add_header("X-Route", "a").filter_headers(lambda n, _v: n != "Received")
    assert isinstance(edited, EnvelopeBodiless)
    assert edited.header_list()[0] == ("X-Route", "a")
    assert edited.last_header("received") is None
    assert edited.subject_decoded() == "café and\tmore"
    assert edited.sender == bodiless.sender
    joined = Envelope.of_bodiless(edited, body)
    assert joined.last_header("X-Route") == "a"
    assert joined.body == BODY
    assert bodiless.headers == HEADER_BLOCK  # unchanged


@given(header_lists, bodies)
def test_bodiless_round_trip_is_byte_exact(headers: list[tuple[str, str]], body: bytes) -> None:
    message = build(headers, body)
    env = Envelope(info=EnvelopeInfo.create(sender="<>", recipients=[]), message=message)
    bodiless, split_body = env.split_bodiless()
    assert bodiless.headers + split_body == message
    assert split_body == body
    assert bodiless.headers.endswith(b"\r\n\r\n") or bodiless.headers == b"\r\n"
    assert Envelope.of_bodiless(bodiless, split_body) == env


@given(st.binary(max_size=300))
def test_split_join_is_byte_exact_for_any_bytes(message: bytes) -> None:
    env = Envelope(info=EnvelopeInfo.create(sender="<>", recipients=[]), message=message)
    bodiless, body = env.split_bodiless()
    assert Envelope.of_bodiless(bodiless, body).message == message
    assert env.body == body


# ---------------------------------------------------------------------------------------
# Routed envelopes and batches


def test_routed_envelope_create_parses_text() -> None:
    routed = RoutedEnvelope.create(
        make(), next_hop_choices=["mx1.example.com", "[::1]:2525"], retry_intervals=["1m", "5m~30s"]
    )
    assert routed.next_hop_choices == (
        HostPort(host="mx1.example.com"),
        HostPort(host="::1", port=2525),
    )
    assert routed.retry_intervals == (RetryInterval(span=60), RetryInterval(span=300, jitter=30))
    assert routed.info is routed.envelope.info
    assert routed.id == routed.envelope.id
    with pytest.raises(ParseError):
        RoutedEnvelope.create(make(), next_hop_choices=["mx:0"])
    with pytest.raises(TypeError, match="single string"):
        RoutedEnvelope.create(make(), next_hop_choices="mx.example.com")


def test_batch_single_envelope_round_trip() -> None:
    routed = RoutedEnvelope.create(make(), next_hop_choices=["mx:25"], retry_intervals=["5m"])
    batch = Batch.single_envelope(routed)
    assert batch.body == BODY
    assert len(batch.envelopes) == 1
    assert batch.envelopes[0].bodiless.headers == HEADER_BLOCK
    assert batch.envelopes[0].next_hop_choices == routed.next_hop_choices
    envelopes = batch.to_envelopes()
    assert envelopes == [routed]
    assert envelopes[0].envelope.message == MESSAGE
    assert envelopes[0].id == routed.id


def test_batch_shares_one_body_among_different_envelopes() -> None:
    first = make()
    second = Envelope.create(
        sender="<>", recipients=["x@example.com", "y@example.com"], message=MESSAGE
    ).set_header("To", "x@example.com, y@example.com")
    members = []
    for env, hop in ((first, "mx1.example.com"), (second, "mx2.example.com:2525")):
        bodiless, _ = env.split_bodiless()
        members.append(
            RoutedBodiless(
                bodiless=bodiless,
                next_hop_choices=(HostPort.parse(hop),),
                retry_intervals=(RetryInterval.parse("1h"),),
            )
        )
    batch = Batch(envelopes=tuple(members), body=BODY)
    out = batch.to_envelopes()
    assert [r.envelope.recipients for r in out] == [first.recipients, second.recipients]
    assert out[0].envelope == first
    assert out[1].envelope == second
    assert [str(r.next_hop_choices[0]) for r in out] == [
        "mx1.example.com:25",
        "mx2.example.com:2525",
    ]
    assert all(r.envelope.body == BODY for r in out)
    assert "bytes" in repr(batch)


def test_batch_and_routing_type_checks() -> None:
    bodiless, body = make().split_bodiless()
    member = RoutedBodiless(bodiless=bodiless, next_hop_choices=[HostPort(host="mx")])
    assert member.next_hop_choices == (HostPort(host="mx"),)  # the list was frozen
    with pytest.raises(TypeError, match="HostPort"):
        RoutedBodiless(bodiless=bodiless, next_hop_choices=("mx",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RoutedBodiless"):
        Batch(envelopes=(bodiless,), body=body)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"body|bytes"):  # (compiled: mypyc's, naming the type)
        Batch(envelopes=(member,), body="text")  # type: ignore[arg-type]
    assert Batch(envelopes=(), body=b"").to_envelopes() == []


def test_recipient_params_follow_their_recipients() -> None:
    info = EnvelopeInfo.create(
        sender="a@example.com",
        recipients=["b@example.org", "c@example.net", "d@example.net"],
        recipient_params={
            "b@example.org": "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@example.org",
            "c@example.net": "NOTIFY=NEVER",
            "d@example.net": "",
        },
    )
    b, c, d = info.recipients
    assert info.params_of(b).notify == ("SUCCESS", "FAILURE")
    assert info.params_of(b).orcpt == ("rfc822", "B@example.org")
    assert info.params_of(c).notify == ("NEVER",) and info.params_of(d).notify is None
    assert len(info.recipient_params) == 2  # only recipients that gave any
    split = info.with_recipients([c, d])
    assert [a for a, _ in split.recipient_params] == [c]
    assert split.params_of(c).notify == ("NEVER",)
    assert info != info.with_recipient_params({})


def test_add_headers_smash_and_modify() -> None:
    envelope = Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org"],
        message=b"To: b@example.org\r\nX-Tag: one\r\nSubject: s\r\nx-tag: two\r\n\r\nbody\r\n",
    )
    added = envelope.add_headers([("A", "1"), ("B", "2")]).add_headers_at_bottom([("Y", "8")])
    assert [n for n, _ in added.header_list()] == ["A", "B", "To", "X-Tag", "Subject", "x-tag", "Y"]
    smashed = envelope.smash_and_add_header("X-Tag", "three")
    assert smashed.header_list() == [
        ("To", "b@example.org"),
        ("Subject", "s"),
        ("X-Tag", "one, two, three"),
    ]
    assert smashed.body == envelope.body
    reversed_ = envelope.modify_headers(lambda fields: [*reversed(fields), ("New", "v")])
    assert reversed_.message == (
        b"x-tag: two\r\nSubject: s\r\nX-Tag: one\r\nTo: b@example.org\r\nNew: v\r\n\r\nbody\r\n"
    )
    assert envelope.modify_headers(lambda fields: fields).message == envelope.message
    bodiless, _ = envelope.split_bodiless()
    assert bodiless.smash_and_add_header("X-Tag", "3").last_header("X-Tag") == "one, two, 3"
    # the last line of a message without a body, moved up, gets its line break
    bare = Envelope(info=envelope.info, message=b"A: 1\r\nB: 2")
    assert bare.modify_headers(lambda f: f[::-1]).message == b"B: 2\r\nA: 1\r\n"
