"""[[milters]] in the MTA, against a scripted milter: every stage, every action, the
negotiated skips, the default action when the milter is down, and its timeouts (on the
fake clock)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from smtpx.envelope import EnvelopeId
from smtpx.errors import ConfigError
from smtpx.mta.app import Mta
from smtpx.mta.config import MilterSettings, MtaConfig
from smtpx.mta.config_toml import to_toml
from smtpx.mta.milter import Milters
from smtpx.mta.milter import protocol as wire
from smtpx.mta.milter.chain import reply_of
from smtpx.mta.reload import changed_keys, merge
from smtpx.mta.routing import FakeDns
from smtpx.protocol.addresses import Sender
from smtpx.protocol.params import MailParams
from smtpx.protocol.replies import Reply
from smtpx.server import Reject, Session, Transaction
from smtpx.spool.message import SpooledMessage, Status
from smtpx.testing.clock import run_virtual
from tests.interop.test_haproxy import dialogue
from tests.mta.helpers import config
from tests.mta.milter.fake import (
    ACCEPT,
    CONTINUE,
    DISCARD,
    HANG,
    PROGRESS,
    REJECT,
    SKIP,
    TEMPFAIL,
    FakeMilter,
    reply,
    serving,
)  # fmt: skip

SUBJECT = b"Subject: hello\r\nX-Tag: one\r\n"


def commands(
    body: bytes = b"body\r\n", recipients: tuple[str, ...] = ("u@example.net",)
) -> list[bytes]:
    return [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        *(f"RCPT TO:<{r}>\r\n".encode() for r in recipients),
        b"DATA\r\n",
        SUBJECT + b"\r\n" + body + b".\r\n",
        b"QUIT\r\n",
    ]


def mta_config(tmp_path: Path, *milters: dict[str, Any]) -> MtaConfig:
    cfg = config(
        tmp_path,
        routing={"routes": {"example.net": ["127.0.0.1:9"]}},
        spool={"retry_intervals": ["1h"]},
    )
    return replace(cfg, milters=MtaConfig.from_dict({"milters": list(milters)}).milters)


@asynccontextmanager
async def mta_with(tmp_path: Path, *milters: FakeMilter, **options: Any) -> AsyncIterator[Mta]:
    async with serving_all(milters) as addresses:
        entries = [
            {"name": f"m{i}", "address": address, **options} for i, address in enumerate(addresses)
        ]
        async with Mta(mta_config(tmp_path, *entries), dns=FakeDns()) as mta:
            yield mta


@asynccontextmanager
async def serving_all(milters: tuple[FakeMilter, ...]) -> AsyncIterator[list[str]]:
    addresses: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        for milter in milters:
            addresses.append(await stack.enter_async_context(serving(milter)))
        yield addresses


async def talk(mta: Mta, sent: list[bytes]) -> list[str]:
    got = await dialogue(mta.server.ports[0], sent, source="127.0.0.1")
    return [str(r) for r in got]


async def spooled(mta: Mta) -> list[tuple[SpooledMessage, bytes]]:
    return [(m, await mta.spool.read_message(m.id)) for m in mta.spool.status()]


async def test_a_milter_sees_every_stage_with_its_macros(tmp_path: Path) -> None:
    milter = FakeMilter(macro_lists={2: "i {mail_addr}", 3: "{rcpt_addr} i"})
    async with mta_with(tmp_path, milter) as mta:
        replies = await talk(mta, commands())
        assert replies[-2].startswith("250 2.0.0 Ok: queued as ")
        ((message, stored),) = await spooled(mta)
    assert milter.codes() == b"OCHMRTLLLNBEQ"
    queue_id = replies[-2].rsplit(" ", 1)[1]
    assert milter.macros[b"M"] == {"i": queue_id, "{mail_addr}": "a@example.com"}
    assert milter.macros[b"R"] == {"{rcpt_addr}": "u@example.net", "i": queue_id}
    assert milter.macros[b"C"]["j"] == "mx.test"
    assert milter.macros[b"C"]["{client_addr}"] == "127.0.0.1"
    received = dict(milter.received)
    assert received[b"H"] == b"client.test\0"
    assert received[b"M"] == b"<a@example.com>\0"
    assert received[b"R"] == b"<u@example.net>\0"
    assert received[b"B"] == b"body\r\n"
    headers = [data for code, data in milter.received if code == b"L"]
    assert headers[0].startswith(b"Received\0from client.test ([127.0.0.1])\n\tby mx.test")
    assert headers[1:] == [b"Subject\0hello\0", b"X-Tag\0one\0"]
    assert stored.endswith(SUBJECT + b"\r\nbody\r\n")
    assert message.status is not Status.QUARANTINED


@pytest.mark.parametrize(
    ("code", "packets", "answer"),
    [
        (b"C", [REJECT], "554 5.7.1 Connection rejected"),
        (b"H", [TEMPFAIL], "451 4.7.1 Service unavailable - try again later"),
        (b"M", [REJECT], "550 5.7.1 Command rejected"),
        (b"M", [TEMPFAIL], "451 4.7.1 Service unavailable - try again later"),
        (b"T", [reply(b"y", "554 5.7.9 Not today")], "554 5.7.9 Not today"),
        (b"L", [REJECT], "550 5.7.1 Command rejected"),
        (b"B", [TEMPFAIL], "451 4.7.1 Service unavailable - try again later"),
        (b"E", [reply(b"y", "550 5.7.1 Spam detected")], "550 5.7.1 Spam detected"),
        (b"E", [reply(b"h", "X-A", "1"), wire.command(b"4")], "421 4.7.0 Service not available"),
    ],
)
async def test_refusals_reach_the_client_and_nothing_is_spooled(
    tmp_path: Path, code: bytes, packets: list[bytes], answer: str
) -> None:
    milter = FakeMilter(script={code: [packets]})
    async with mta_with(tmp_path, milter) as mta:
        replies = await talk(mta, commands())
        assert not mta.spool.status()
        counted = dict(mta.milter_stats.verdicts)
    assert any(r.startswith(answer) for r in replies), replies
    # Counted for /metrics (smtpx_milter_verdicts) by milter, stage and verdict.
    stage = {b"C": "connect", b"H": "helo", b"M": "mail", b"T": "data", b"L": "header"}.get(
        code, {b"B": "body", b"E": "eom"}.get(code)
    )
    verdict = {REJECT: "reject", TEMPFAIL: "tempfail"}.get(packets[-1])
    if verdict is None:
        verdict = "shutdown" if packets[-1] == wire.command(b"4") else "reply"
    assert counted == {("m0", stage, verdict): 1}


async def test_a_rcpt_refusal_refuses_that_recipient_only(tmp_path: Path) -> None:
    milter = FakeMilter(script={b"R": [[REJECT]]})
    async with mta_with(tmp_path, milter) as mta:
        replies = await talk(mta, commands(recipients=("no@example.net", "yes@example.net")))
        ((message, _),) = await spooled(mta)
    assert replies[3:5] == ["550 5.7.1 Command rejected", "250 2.1.5 Ok"]
    assert message.recipients == ["yes@example.net"]


async def test_discard_answers_250_and_keeps_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpx.mta")
    for stage in (b"R", b"E"):
        milter = FakeMilter(script={stage: [[DISCARD]]})
        async with mta_with(tmp_path / stage.decode(), milter) as mta:
            replies = await talk(mta, commands())
            assert replies[-2].startswith("250 2.0.0 Ok: queued as ")
            assert not mta.spool.status()
    assert "milter m0 discarded" in caplog.text


async def test_quarantine_holds_the_message_with_the_reason(tmp_path: Path) -> None:
    milter = FakeMilter(script={b"E": [[reply(b"q", "looks odd"), wire.command(b"c")]]})
    async with mta_with(tmp_path, milter) as mta:
        await talk(mta, commands())
        ((message, _),) = await spooled(mta)
    assert message.status is Status.QUARANTINED
    assert message.quarantine_reason == "milter m0: looks odd"


async def test_header_and_body_changes_land_in_the_spool(tmp_path: Path) -> None:
    changes = [
        reply(b"h", "X-Spam", "no"),
        reply(b"i", "X-Top", "first", index=0),
        reply(b"m", "X-Tag", "", index=1),
        reply(b"m", "Subject", "[tagged] hello", index=1),
        reply(b"b", data=b"new\nbody "),
        reply(b"b", data=b"in two chunks\n"),
        wire.command(b"a"),
    ]
    milter = FakeMilter(script={b"E": [changes]})
    async with mta_with(tmp_path, milter) as mta:
        await talk(mta, commands())
        ((_, stored),) = await spooled(mta)
    assert stored.startswith(b"X-Top: first\r\nReceived: from client.test")
    assert stored.endswith(
        b"Subject: [tagged] hello\r\nX-Spam: no\r\n\r\nnew\r\nbody in two chunks\r\n"
    )


async def test_each_milter_sees_the_changes_of_the_ones_before_it(tmp_path: Path) -> None:
    """As with Postfix: a signing milter placed last signs the header fields as they will
    be sent (a Subject rewritten by a filter before it, a field it added) and the body as
    replaced; a milter's changes land on top of the earlier ones'."""
    tagger = FakeMilter(
        script={
            b"E": [
                [
                    reply(b"m", "Subject", "[spam] hello", index=1),
                    reply(b"h", "X-Spam", "yes"),
                    reply(b"b", data=b"filtered body\r\n"),
                    CONTINUE,
                ]
            ]
        }
    )
    signer = FakeMilter(script={b"E": [[reply(b"i", "DKIM-Signature", "v=1", index=0), ACCEPT]]})
    async with mta_with(tmp_path, tagger, signer) as mta:
        await talk(mta, commands())
        ((_, stored),) = await spooled(mta)
    headers = [data for code, data in signer.received if code == b"L"]
    assert b"Subject\0[spam] hello\0" in headers and b"X-Spam\0yes\0" in headers
    assert b"Subject\0hello\0" not in headers
    assert [data for code, data in signer.received if code == b"B"] == [b"filtered body\r\n"]
    assert stored.startswith(b"DKIM-Signature: v=1\r\n")
    assert b"Subject: [spam] hello\r\nX-Tag: one\r\nX-Spam: yes\r\n\r\n" in stored
    assert stored.endswith(b"\r\n\r\nfiltered body\r\n")


async def test_a_discard_ends_the_message_before_the_next_milter(tmp_path: Path) -> None:
    first = FakeMilter(script={b"E": [[DISCARD]]})
    second = FakeMilter()
    async with mta_with(tmp_path, first, second) as mta:
        replies = await talk(mta, commands())
        assert not mta.spool.status()
    assert replies[-2].startswith("250")
    assert b"E" not in second.codes()  # never asked about a message already dropped


async def test_envelope_changes_apply(tmp_path: Path) -> None:
    changes = [
        reply(b"e", "<bounces@example.com>"),
        reply(b"-", "<U@example.net>"),
        reply(b"+", "<added@example.net>"),
        wire.command(b"c"),
    ]
    milter = FakeMilter(script={b"E": [changes]})
    async with mta_with(tmp_path, milter) as mta:
        await talk(mta, commands(recipients=("u@example.net", "v@example.net")))
        ((message, _),) = await spooled(mta)
    assert message.sender == "<bounces@example.com>"
    assert message.recipients == ["v@example.net", "added@example.net"]


async def test_changes_not_negotiated_break_the_protocol(tmp_path: Path) -> None:
    milter = FakeMilter(actions=0, script={b"E": [[reply(b"h", "X", "y"), ACCEPT]]})
    async with mta_with(tmp_path, milter) as mta:
        replies = await talk(mta, commands())
        assert not mta.spool.status()
    assert replies[-2] == "451 4.7.1 Service unavailable - try again later"


async def test_skipped_stages_are_not_sent_and_no_reply_stages_not_awaited(
    tmp_path: Path,
) -> None:
    skip = wire.Proto.NOHELO | wire.Proto.NOHDRS | wire.Proto.NOEOH | wire.Proto.NODATA
    milter = FakeMilter(protocol=skip | wire.Proto.NR_RCPT | wire.Proto.NR_BODY)
    async with mta_with(tmp_path, milter) as mta:
        replies = await talk(mta, commands())
        assert len(mta.spool.status()) == 1
    assert milter.codes() == b"OCMRBEQ"
    assert replies[-2].startswith("250")


async def test_a_large_body_goes_in_chunks_and_skip_stops_it(tmp_path: Path) -> None:
    body = (b"x" * 998 + b"\r\n") * 150  # 150000 octets: 65535 + 65535 + 18930
    milter = FakeMilter(protocol=wire.Proto.SKIP)
    skipper = FakeMilter(protocol=wire.Proto.SKIP, script={b"B": [[SKIP]]})
    async with mta_with(tmp_path, milter, skipper) as mta:
        await talk(mta, commands(body))
        ((_, stored),) = await spooled(mta)
    sizes = [len(data) for code, data in milter.received if code == b"B"]
    assert sizes == [65535, 65535, len(body) - 2 * 65535]
    assert [code for code, _ in skipper.received if code in b"BE"] == [b"B", b"E"]
    assert stored.endswith(body)


async def test_milters_run_in_order_and_an_accept_ends_the_message(tmp_path: Path) -> None:
    first = FakeMilter(script={b"M": [[ACCEPT]]})
    second = FakeMilter(script={b"E": [[reply(b"h", "X-Second", "yes"), ACCEPT]]})
    third = FakeMilter(script={b"R": [[REJECT]]})
    async with mta_with(tmp_path, first, second, third) as mta:
        replies = await talk(mta, commands())
        assert not mta.spool.status()
    assert first.codes() == b"OCHMQ"  # accepted: nothing more of this message
    # The third refused the recipient, so DATA was refused, and the content's lines came
    # as commands: the four that are no command went to the milter as UNKNOWN.
    assert second.codes() == b"OCHMRUUUUQ"
    assert replies[3] == "550 5.7.1 Command rejected"


async def test_an_unfinished_message_is_aborted_before_the_next(tmp_path: Path) -> None:
    milter = FakeMilter(script={b"R": [[TEMPFAIL]]})
    sent = commands()
    second = [b"RSET\r\n", *sent[1:]]
    async with mta_with(tmp_path, milter) as mta:
        replies = await talk(mta, [*sent[:4], *second])
        assert len(mta.spool.status()) == 1
    assert milter.codes() == b"OCHMRAMRTLLLNBEQ"
    assert replies[3].startswith("451 4.7.1")


@pytest.mark.parametrize(
    ("action", "answer"),
    [
        ("tempfail", "451 4.7.1 Service unavailable - try again later"),
        ("reject", "550 5.7.1 Command rejected"),
        ("accept", "250 2.1.0 Ok"),
        ("quarantine", "250 2.1.0 Ok"),
    ],
)
async def test_a_milter_down_gets_its_default_action(
    tmp_path: Path, action: str, answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    entry = {"name": "gone", "address": f"inet:127.0.0.1:{port}", "default_action": action}
    async with Mta(mta_config(tmp_path, entry), dns=FakeDns()) as mta:
        replies = await talk(mta, commands())
        held = [m for m in mta.spool.status() if m.status is Status.QUARANTINED]
        assert len(mta.spool.status()) == (action in ("accept", "quarantine"))
        if action == "quarantine":  # taken, and kept for an operator
            assert replies[-2].startswith("250 ")
            (message,) = held
            reason = message.quarantine_reason or ""
            assert reason.startswith("milter gone unavailable (default_action = quarantine)")
        else:
            assert not held
        async with TestClient(TestServer(mta.control.app)) as api:
            mta.control.token = "secret"
            metrics = await (
                await api.get("/metrics", headers={"Authorization": "Bearer secret"})
            ).text()
    assert replies[2] == answer
    assert f"milter gone (inet:127.0.0.1:{port}): cannot connect" in caplog.text
    assert 'smtpx_milter_failures_total{milter="gone",stage="open"} 1.0' in metrics
    if action != "accept":  # MAIL got the default action
        assert f'smtpx_milter_default_actions_total{{action="{action}",milter="gone"}} 1.0' in (
            metrics
        )


def test_the_config_reads_milters_and_refuses_bad_ones() -> None:
    loaded = MtaConfig.from_toml(
        '[[milters]]\nname = "a"\naddress = "unix:/run/a.sock"\n'
        '[[milters]]\nname = "b"\naddress = "inet:[::1]:11332"\ndefault_action = "accept"\n'
        'connect_timeout = "5s"\ncommand_timeout = "10s"\ncontent_timeout = "2m"\n'
    )
    assert loaded.milters == (
        MilterSettings(name="a", address="unix:/run/a.sock"),
        MilterSettings(
            name="b",
            address="inet:[::1]:11332",
            default_action="accept",
            connect_timeout=5.0,
            command_timeout=10.0,
            content_timeout=120.0,
        ),
    )
    for document, problem in [
        ({"milters": [{"name": "a"}]}, "milters[0].address: required"),
        ({"milters": [{"name": "a", "address": "tcp:x"}]}, "milters[0].address: not inet"),
        (
            {"milters": [{"name": "a", "address": "unix:/x", "default_action": "discard"}]},
            "milters[0].default_action",
        ),
        (
            {"milters": [{"name": "a", "address": "unix:/x"}, {"name": "a", "address": "unix:/y"}]},
            "milters[1]: a second milter named 'a'",
        ),
    ]:
        with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
            MtaConfig.from_dict(document)


# -- timeouts, on the fake clock -----------------------------------------------------------


def _session() -> Session:
    return Session(id="s", local=("127.0.0.1", 25), remote=("192.0.2.1", 4000))


def _transaction() -> Transaction:
    return Transaction(EnvelopeId.create(), Sender.parse("<a@b.test>"), MailParams())


async def _chain(milter: FakeMilter, **options: Any) -> tuple[Milters, list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []

    async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=theirs)
        tasks.append(asyncio.create_task(milter.handle(reader, writer)))
        return await asyncio.open_connection(sock=ours)

    settings = MilterSettings(name="slow", address="unix:/nowhere", **options)
    return Milters([settings], "mx.test", opener=lambda _: opener), tasks


def test_a_silent_milter_times_out_into_its_default_action() -> None:
    async def scenario() -> tuple[str, float]:
        milter = FakeMilter(script={b"M": [[HANG]]})
        chain, _ = await _chain(milter, command_timeout=30.0)
        session, loop = _session(), asyncio.get_running_loop()
        await chain.connect(session)
        start = loop.time()
        with pytest.raises(Reject) as refused:
            await chain.mail_from(session, _transaction())
        waited = loop.time() - start
        with pytest.raises(Reject):  # still out of use for this session
            await chain.mail_from(session, _transaction())
        await chain.disconnect(session)
        return str(refused.value.reply), waited

    answer, waited = run_virtual(scenario())
    assert answer == "451 4.7.1 Service unavailable - try again later"
    assert 30.0 <= waited < 31.0


@pytest.mark.parametrize(("progress", "finished"), [(2, True), (0, False)])
def test_progress_restarts_the_content_timer(progress: int, finished: bool) -> None:
    async def scenario() -> tuple[bool, float]:
        # With PROGRESS: a packet every 200 s, the verdict after 600 s in all, each wait
        # under the 300 s content timeout. Without: the verdict alone, 400 s late.
        replies = [PROGRESS] * progress + [wire.command(b"c")]
        milter = FakeMilter(script={b"E": [replies]})
        milter.pauses[b"E"] = 200.0 if progress else 400.0
        chain, _ = await _chain(milter, content_timeout=300.0)
        session, transaction = _session(), _transaction()
        loop = asyncio.get_running_loop()
        await chain.connect(session)
        await chain.mail_from(session, transaction)
        start = loop.time()
        try:
            await chain.end_of_message(session, transaction, b"Subject: x\r\n\r\nx\r\n")
        except Reject:
            return False, loop.time() - start
        finally:
            await chain.disconnect(session)
        return True, loop.time() - start

    done, waited = run_virtual(scenario())
    assert done is finished
    assert 600.0 <= waited < 601.0 if finished else 300.0 <= waited < 301.0


def test_a_content_timeout_applies_per_milter() -> None:
    async def scenario() -> str:
        milter = FakeMilter(script={b"E": [[HANG]]})
        chain, _ = await _chain(milter, content_timeout=300.0, default_action="reject")
        session, transaction = _session(), _transaction()
        await chain.connect(session)
        await chain.mail_from(session, transaction)
        with pytest.raises(Reject) as refused:
            await chain.end_of_message(session, transaction, b"Subject: x\r\n\r\nx\r\n")
        return str(refused.value.reply)

    assert run_virtual(scenario()) == "550 5.7.1 Command rejected"


def test_replycode_text_becomes_the_reply() -> None:
    assert reply_of("421 4.3.2 Busy") == Reply.of(421, "Busy", "4.3.2")
    assert reply_of("550 Go away") == Reply.of(550, "Go away")


def test_milters_reload_live_and_show_as_toml(tmp_path: Path) -> None:
    running = config(tmp_path)
    entry = {"name": "rspamd", "address": "inet:127.0.0.1:11332", "default_action": "accept"}
    wanted = replace(running, milters=MtaConfig.from_dict({"milters": [entry]}).milters)
    assert changed_keys(running, wanted) == ["milters"]
    merged, refused = merge(running, wanted)
    assert refused == [] and merged.milters == wanted.milters
    text = to_toml(wanted)
    assert '[[milters]]\nname = "rspamd"\naddress = "inet:127.0.0.1:11332"' in text
    assert MtaConfig.from_toml(text, base_dir=tmp_path) == wanted


async def test_a_reload_gives_new_sessions_the_new_milters(tmp_path: Path) -> None:
    milter = FakeMilter(script={b"M": [[TEMPFAIL]]})
    async with serving(milter) as address:
        plain = mta_config(tmp_path)
        wanted = mta_config(tmp_path, {"name": "new", "address": address})
        async with Mta(plain, dns=FakeDns(), reload_config=lambda: wanted) as mta:
            before = await talk(mta, commands()[:2])
            assert mta.reload()
            after = await talk(mta, commands()[:2])
            assert mta.reload()  # the counters outlive a reload
            assert dict(mta.milter_stats.verdicts) == {("new", "mail", "tempfail"): 1}
    assert before[2] == "250 2.1.0 Ok"
    assert after[2] == "451 4.7.1 Service unavailable - try again later"
    assert milter.sessions == 1


async def test_a_spilled_message_keeps_its_file_under_header_changes(tmp_path: Path) -> None:
    body = (b"y" * 998 + b"\r\n") * 100
    changes = [reply(b"i", "X-Top", "1", index=0), reply(b"m", "X-Tag", "", index=1), ACCEPT]
    milter = FakeMilter(script={b"E": [changes]})
    async with serving(milter) as address:
        cfg = replace(
            mta_config(tmp_path, {"name": "m", "address": address}),
            server=replace(config(tmp_path).server, spill_threshold=1024),
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            await talk(mta, commands(body))
            ((_, stored),) = await spooled(mta)
    sent = b"".join(data for code, data in milter.received if code == b"B")
    assert sent == body
    assert stored.startswith(b"X-Top: 1\r\nReceived: from client.test")
    assert stored.endswith(b"\r\nSubject: hello\r\n\r\n" + body)


async def test_an_unknown_command_goes_to_the_milters_that_want_it(tmp_path: Path) -> None:
    """SMFIC_UNKNOWN (Postfix sends it too): the command as the client sent it, to each
    milter that did not negotiate NOUNKNOWN; a refusal is the client's reply."""
    refusing = FakeMilter(script={b"U": [[reply(b"y", "550 5.7.1 No such trick here")]]})
    uninterested = FakeMilter(protocol=wire.Proto.NOUNKNOWN)
    async with mta_with(tmp_path, uninterested, refusing) as mta:
        replies = await talk(mta, [b"EHLO client.test\r\n", b"XFROB it now\r\n", b"QUIT\r\n"])
    assert replies[2] == "550 5.7.1 No such trick here"
    assert (b"U", b"XFROB it now\0") in refusing.received
    assert b"U" not in uninterested.codes()
