"""send_many: one round trip per message, outcomes in order, failures in the middle."""

from __future__ import annotations

from smtpx.client import (
    Accepted,
    Client,
    ClientConfig,
    RejectedAllRecipients,
    RejectedBody,
    RejectedSender,
    Unsendable,
)
from smtpx.client.status import EnvelopeStatus
from smtpx.envelope import Envelope
from smtpx.protocol import Extensions, Mail, Rcpt, Reply
from smtpx.testing import Handler
from tests.client.helpers import in_memory


def envelope(n: int, *, sender: str = "a@example.com", size: int = 0) -> Envelope:
    body = f"Subject: {n}\r\n\r\nbody {n}\r\n".encode() + b"x" * size
    return Envelope.create(sender=sender, recipients=[f"r{n}@example.org"], message=body)


async def send_all(
    handler: Handler, envelopes: list[Envelope], config: ClientConfig | None = None
) -> tuple[list[str], list[EnvelopeStatus]]:
    statuses: list[EnvelopeStatus] = []

    async def use(client: Client) -> None:
        async for status in client.send_many(envelopes):
            statuses.append(status)

    run = await in_memory(handler, use, config=config)
    assert run.error is None, run.error
    return run.lines(), statuses


async def test_content_travels_with_the_next_envelope() -> None:
    handler = Handler()
    data_only = ClientConfig.for_testing(chunking=False)
    lines, statuses = await send_all(handler, [envelope(i) for i in range(3)], data_only)
    assert [type(s) for s in statuses] == [Accepted] * 3
    assert [m.data for m in handler.messages] == [
        e.message for e in (envelope(i) for i in range(3))
    ]
    # Message 0's content and "." go out in the same flight as message 1's MAIL, RCPT, DATA,
    # before the server's final reply to message 0.
    dot = lines.index("C: .")
    assert lines[dot + 1 : dot + 4] == [
        "C: MAIL FROM:<a@example.com> SIZE=22",
        "C: RCPT TO:<r1@example.org>",
        "C: DATA",
    ]
    assert lines[dot + 4] == "S: 250 2.0.0 Ok: queued as MSG1"


async def test_outcomes_stay_in_order_with_failures_in_the_middle() -> None:
    class Picky(Handler):
        def mail(self, command: Mail) -> Reply:
            if str(command.sender) == "<refused@example.com>":
                return Reply.of(550, "not you", "5.7.1")
            return super().mail(command)

        def rcpt(self, command: Rcpt) -> Reply:
            if str(command.recipient) == "r2@example.org":
                return Reply.of(550, "no such user", "5.1.1")
            return super().rcpt(command)

        def end_of_data(self) -> Reply:
            if len(self._data) and b"body 3" in b"".join(self._data):
                return Reply.of(554, "spam", "5.7.1")
            return super().end_of_data()

    handler = Picky(extensions=Extensions(pipelining=True, size=100))
    batch = [
        envelope(0),
        envelope(1, sender="refused@example.com"),
        envelope(2),
        envelope(3),
        envelope(4, size=200),  # over the server's SIZE: never sent
        envelope(5),
    ]
    _, statuses = await send_all(handler, batch)
    assert [type(s) for s in statuses] == [
        Accepted,
        RejectedSender,
        RejectedAllRecipients,
        RejectedBody,
        Unsendable,
        Accepted,
    ]
    assert [m.data for m in handler.messages] == [batch[0].message, batch[5].message]


async def test_without_pipelining_it_still_works() -> None:
    handler = Handler(extensions=Extensions())
    lines, statuses = await send_all(handler, [envelope(i) for i in range(3)])
    assert all(s.ok for s in statuses) and len(handler.messages) == 3
    mail = lines.index("C: MAIL FROM:<a@example.com>")
    assert lines[mail + 1] == "S: 250 2.1.0 Ok"


async def test_an_empty_batch_sends_nothing() -> None:
    handler = Handler()
    lines, statuses = await send_all(handler, [])
    assert statuses == [] and not any(line.startswith("C: MAIL") for line in lines)
