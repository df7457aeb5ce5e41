"""The header helpers on routed envelopes and their bodiless halves (F3): they keep the
routing, the body, and the bytes of every field they do not touch."""

from __future__ import annotations

from smtpx.envelope import (
    Batch,
    Envelope,
    EnvelopeInfo,
    HostPort,
    RetryInterval,
    RoutedBodiless,
    RoutedEnvelope,
)

MESSAGE = (
    b"Received: from a\r\n\tby b\r\nFrom: x@example.com\r\nFrom: y@example.com\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n"
)


def routed() -> RoutedEnvelope:
    info = EnvelopeInfo.create(sender="x@example.com", recipients=["r@example.org"])
    return RoutedEnvelope.create(
        Envelope(info=info, message=MESSAGE),
        next_hop_choices=["mx1.example.org:25", "mx2.example.org"],
        retry_intervals=["5m~30s", "1h"],
    )


def routing(item: RoutedEnvelope | RoutedBodiless) -> tuple[object, ...]:
    return (item.next_hop_choices, item.retry_intervals, item.info)


def test_every_helper_on_a_routed_envelope_keeps_its_routing_and_body() -> None:
    original = routed()
    edited = (
        original.add_header("X-Top", "1")
        .add_header_at_bottom("X-Bottom", "2")
        .set_header("Subject", "new")
        .set_header_at_bottom("X-Set", "3")
        .smash_and_add_header("From", "z@example.com")
        .filter_headers(lambda name, _value: name != "Received")
        .map_headers(lambda name, value: value.upper() if name == "X-Top" else value)
        .modify_headers(lambda fields: [*fields, ("X-Last", "4")])
        .add_headers([("A", "a"), ("B", "b")])
        .add_headers_at_bottom([("C", "c")])
    )
    assert isinstance(edited, RoutedEnvelope)
    assert routing(edited) == routing(original)
    assert edited.envelope.body == original.envelope.body == b"body\r\n"
    assert [name for name, _ in edited.header_list()] == [
        "A", "B", "X-Top", "Subject", "X-Bottom", "X-Set", "From", "X-Last", "C",
    ]  # fmt: skip
    assert edited.last_header("x-top") == "1"
    assert edited.find_all_headers("From") == ["x@example.com, y@example.com, z@example.com"]
    assert original.subject_decoded() == "café"
    assert original.envelope.message == MESSAGE  # unchanged
    assert edited.id == original.id and edited.sender == original.sender


def test_a_routed_bodiless_edits_its_headers_and_joins_back() -> None:
    original = routed()
    member, body = original.split_bodiless()
    edited = member.set_header("X-Member", "one").filter_headers(lambda n, _v: n != "Received")
    assert isinstance(edited, RoutedBodiless)
    assert routing(edited) == routing(member)
    assert edited.header_list()[0] == ("X-Member", "one")
    assert edited.subject_decoded() == "café"
    # The untouched fields keep their bytes, the folded Received is gone.
    whole = edited.with_body(body)
    assert whole.envelope.message == (
        b"X-Member: one\r\nFrom: x@example.com\r\nFrom: y@example.com\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n"
    )
    assert whole.next_hop_choices == (HostPort("mx1.example.org", 25), HostPort("mx2.example.org"))
    assert whole.retry_intervals[0] == RetryInterval.parse("5m~30s")


def test_members_of_a_batch_get_their_own_headers_over_one_body() -> None:
    member, body = routed().split_bodiless()
    batch = Batch(
        envelopes=(member.add_header("X-Copy", "a"), member.add_header("X-Copy", "b")), body=body
    )
    copies = batch.to_envelopes()
    assert [copy.last_header("X-Copy") for copy in copies] == ["a", "b"]
    assert {copy.envelope.body for copy in copies} == {body}
