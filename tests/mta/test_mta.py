"""The relay MTA end to end on 127.0.0.1: policy, routing into a sink, local delivery,
submission with STARTTLS and AUTH, retries and bounces, restart."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from smtpx.auth import Credentials
from smtpx.client import (
    Accepted,
    CertificateCheck,
    ClientConfig,
    RejectedAllRecipients,
    RejectedSender,
    TlsConfig,
    TlsMode,
    connect,
)
from smtpx.envelope import Envelope, HostPort
from smtpx.io import StaticResolver
from smtpx.mta import app as app_module
from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns, Route, RouteResult
from smtpx.mta.users import Users
from smtpx.protocol import Rcpt, Reply, ReplyParser
from smtpx.spool.message import Status
from smtpx.testing import Handler, ScriptedServer
from tests.mta.helpers import PLAIN, config, maildir, message, wait_until


async def test_local_domains_are_delivered_to_maildirs(tmp_path: Path) -> None:
    async with Mta(config(tmp_path), dns=FakeDns()) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            status = await client.send(message(1))
            assert isinstance(status, Accepted)
            assert status.remote_id.startswith("Ok: queued as ")
        await wait_until(lambda: maildir(tmp_path, "user@example.org"))
    (stored,) = maildir(tmp_path, "user@example.org")
    assert stored.startswith(
        b"Return-Path: <a@example.com>\nDelivered-To: user@example.org\nReceived: from "
    )
    assert b"by mx.test (smtpx) with ESMTP id" in stored
    assert stored.endswith(b"\n\nbody 1\n")


async def test_one_id_for_the_transaction_in_the_reply_received_and_spool(
    tmp_path: Path,
) -> None:
    """The 250's "queued as" id is the Received: field's id, and the parent id of each
    spool message the transaction became (one per domain)."""
    cfg = config(
        tmp_path,
        routing={"routes": {"example.net": ["127.0.0.1:9"], "example.com": ["127.0.0.1:9"]}},
        spool={"retry_intervals": ["1h"]},
    )
    envelope = Envelope.create(
        sender="a@example.org",
        recipients=["x@example.net", "y@example.com"],
        message=b"Subject: two domains\r\nMessage-ID: <two@t>\r\n\r\nbody\r\n",
    )
    async with Mta(cfg, dns=FakeDns()) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            status = await client.send(envelope)
        assert isinstance(status, Accepted)
        queued = status.remote_id.removeprefix("Ok: queued as ")
        assert re.fullmatch(r"[0-9A-Za-z_~]{16}", queued), status.remote_id
        spooled = mta.spool.status()
        assert sorted(m.route or "" for m in spooled) == ["example.com", "example.net"]
        for message in spooled:
            assert message.parent_id == queued and message.id.startswith(queued + "-")
            assert message.message_id == "<two@t>"
            stored = await mta.spool.read_message(message.id)
            received = email.message_from_bytes(stored)["Received"]
            match = re.search(r" id (\S+);", str(received))
            assert match is not None and match[1] == queued, received


@pytest.mark.parametrize(
    "body",
    [b"plain text.\r\n", b".a line with a dot\r\n..two\r\n.\r\n", b"end\r\n\r\n"],
    ids=repr,
)
async def test_a_relayed_message_reads_back_from_the_spool_as_sent(
    tmp_path: Path, body: bytes
) -> None:
    """Content the server took as it came is stored without a second stuffing pass
    (smtpx.protocol.data.WireForm); lines that start with a dot must still come back."""
    cfg = config(
        tmp_path,
        routing={"routes": {"example.net": ["127.0.0.1:9"]}},
        spool={"retry_intervals": ["1h"]},
    )
    content = b"Subject: dots\r\nMessage-ID: <d@t>\r\n\r\n" + body
    envelope = Envelope.create(
        sender="a@example.org", recipients=["x@example.net"], message=content
    )
    async with Mta(cfg, dns=FakeDns()) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            assert isinstance(await client.send(envelope), Accepted)
        (spooled,) = mta.spool.status()
        stored = await mta.spool.read_message(spooled.id)
    assert stored.startswith(b"Received: from ") and stored.endswith(b"\r\n" + content)


async def test_bare_postmaster_reaches_the_first_local_domain(tmp_path: Path) -> None:
    # Accepted from anyone (RFC 5321 4.5.1), and spooled as postmaster@example.org so the
    # maildir, the mail log and any bounce see an ordinary mailbox.
    cfg = config(tmp_path, relay={"trusted_networks": []})
    async with Mta(cfg, dns=FakeDns()) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            assert isinstance(await client.send(message(1, to="<Postmaster>")), Accepted)
        await wait_until(lambda: maildir(tmp_path, "postmaster@example.org"))
    (stored,) = maildir(tmp_path, "postmaster@example.org")
    assert b"Delivered-To: postmaster@example.org\n" in stored


async def test_relay_is_refused_to_strangers(tmp_path: Path) -> None:
    cfg = config(tmp_path, relay={"trusted_networks": []})
    async with (
        Mta(cfg, dns=FakeDns()) as mta,
        connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client,
    ):
        refused = await client.send(message(2, to="victim@elsewhere.test"))
        assert isinstance(refused, RejectedAllRecipients)
        assert str(refused.reply) == "550 5.7.1 Relay access denied"
        assert (await client.send(message(3))).ok  # local mail is still taken
    assert mta.spool.stats["spooled"] == 1


async def test_trusted_clients_relay_through_routes_into_the_sink(tmp_path: Path) -> None:
    async with ScriptedServer(Handler) as sink:
        cfg = config(tmp_path, routing={"routes": {"example.net": [f"127.0.0.1:{sink.port}"]}})
        async with Mta(cfg, dns=FakeDns()) as mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                for n in range(5):
                    assert (await client.send(message(n, to=f"u{n}@example.net"))).ok
            await wait_until(lambda: len(sink.messages()) == 5 and not mta.spool.messages)
    received = sink.messages()
    assert all(m.startswith(b"Received: from ") for m in received)
    assert sorted(m.split(b"Subject: ")[1][:1] for m in received) == [b"0", b"1", b"2", b"3", b"4"]


async def test_mx_routing_with_fake_dns(tmp_path: Path) -> None:
    async with ScriptedServer(Handler) as sink:
        dns = FakeDns(mx={"example.net": [(10, "mx1.example.net")]})
        resolver = StaticResolver({"mx1.example.net": ["127.0.0.1"]})
        # Deliver by MX, but to the sink's port (MX hosts listen on 25; this one is a test).
        cfg = config(tmp_path)
        mta = Mta(cfg, dns=dns, resolver=resolver)
        original = mta.router.route

        async def route(domain: str) -> RouteResult:
            result = await original(domain)
            assert isinstance(result, Route)
            # The MX the router chose, at the sink's port (MX hosts listen on 25).
            return Route(
                name=result.name, hops=tuple(HostPort(h.host, sink.port) for h in result.hops)
            )

        mta.router.route = route  # type: ignore[method-assign]
        async with mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert (await client.send(message(1, to="x@example.net"))).ok
            await wait_until(lambda: len(sink.messages()) == 1)
    assert dns.queries == ["example.net"]


async def test_permanent_failure_bounces_and_null_mx(tmp_path: Path) -> None:
    class Refuses(Handler):
        def rcpt(self, command: Rcpt) -> Reply:
            return Reply.of(550, "no such user", "5.1.1")

    async with ScriptedServer(Refuses) as sink:
        cfg = config(tmp_path, routing={"routes": {"example.net": [f"127.0.0.1:{sink.port}"]}})
        dns = FakeDns(mx={"nullmx.example": [(0, ".")]}, nxdomain=["nowhere.example"])
        async with Mta(cfg, dns=dns) as mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                for n, to in enumerate(
                    ["gone@example.net", "x@nullmx.example", "y@nowhere.example"]
                ):
                    assert (await client.send(message(n, sender="me@example.org", to=to))).ok
            await wait_until(lambda: len(maildir(tmp_path, "me@example.org")) == 3)
            frozen = [m for m in mta.spool.status() if m.status is Status.FROZEN]
            assert len(frozen) == 3
    blocks: dict[str, email.message.Message] = {}
    for data in maildir(tmp_path, "me@example.org"):
        per_message, per_recipient = status_blocks(data)
        assert per_message["Reporting-MTA"] == "dns; mx.test"
        assert per_recipient["Action"] == "failed"
        blocks[per_recipient["Final-Recipient"].split("; ")[1]] = per_recipient
    # The remote MTA refused gone@: the notice names it and quotes its reply.
    gone = blocks["gone@example.net"]
    assert gone["Status"] == "5.1.1" and gone["Remote-MTA"] == "dns; 127.0.0.1"
    assert gone["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    # No remote MTA was ever asked about the null MX and the NXDOMAIN domain.
    null_mx, nowhere = blocks["x@nullmx.example"], blocks["y@nowhere.example"]
    assert null_mx["Status"] == "5.1.10" and nowhere["Status"] == "5.1.2"
    for block in (null_mx, nowhere):
        assert block["Remote-MTA"] is None
        assert str(block["Diagnostic-Code"]).startswith("X-Smtpx; Domain ")
    assert "does not exist (NXDOMAIN)" in str(nowhere["Diagnostic-Code"])


def status_blocks(data: bytes) -> list[email.message.Message]:
    """The header blocks of a notice's message/delivery-status part (RFC 3464 2.1)."""
    report = email.message_from_bytes(data, policy=email.policy.default)
    parts = report.get_payload()
    assert isinstance(parts, list) and isinstance(parts[1], email.message.Message)
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    return [block for block in blocks if isinstance(block, email.message.Message)]


async def test_a_temporary_refusal_is_retried(tmp_path: Path) -> None:
    attempts: list[int] = []

    class BusyOnce(Handler):
        def rcpt(self, command: Rcpt) -> Reply:
            attempts.append(1)
            if len(attempts) == 1:
                return Reply.of(451, "try again later", "4.3.0")
            return super().rcpt(command)

    async with ScriptedServer(BusyOnce) as sink:
        cfg = config(
            tmp_path,
            routing={"routes": {"example.net": [f"127.0.0.1:{sink.port}"]}},
            spool={"retry_intervals": ["1s"]},
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
                assert (await client.send(message(1, to="x@example.net"))).ok
            await wait_until(lambda: len(sink.messages()) == 1)
            await wait_until(lambda: not mta.spool.messages)
    assert len(attempts) == 2


async def test_submission_requires_tls_and_auth(tmp_path: Path, ca: Any, ca_file: str) -> None:
    users_file = tmp_path / "users"
    users = Users()
    users.add("alice", "wonderland")
    users.save(users_file)
    cert = ca.issue_cert("mx.test")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    cfg = config(
        tmp_path,
        server={"listen": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"]},
        tls={"cert_file": str(cert_file), "key_file": str(key_file)},
        auth={"users_file": str(users_file)},
        relay={"trusted_networks": []},
    )
    resolver = StaticResolver({"mx.test": ["127.0.0.1"]})
    verified = TlsConfig(
        mode=TlsMode.REQUIRED, certificate=CertificateCheck.VERIFY, ca_file=ca_file
    )
    async with Mta(cfg, dns=FakeDns()) as mta:
        port25, submission = mta.server.ports
        # Without TLS or AUTH: MAIL is refused, and so is every other command but the few
        # that lead to TLS (RFC 3207 section 4); port 25 requires nothing.
        async with connect("127.0.0.1", submission, config=PLAIN) as client:
            assert not client.supports("AUTH")
            refused = await client.send(message(1))
            assert isinstance(refused, RejectedSender)
            assert str(refused.reply) == "530 5.7.0 Must issue a STARTTLS command first"
        assert await plaintext_codes(submission) == [250, 530, 530, 530, 250, 221]
        assert await plaintext_codes(port25) == [250, 250, 252, 250, 250, 221]
        # With both: the user may relay anywhere.
        async with connect(
            "mx.test",
            submission,
            config=ClientConfig.for_testing(tls=[("", verified)]),
            credentials=Credentials.login("alice", "wonderland"),
            resolver=resolver,
        ) as client:
            assert client.is_using_tls and client.authenticated
            status = await client.send(message(2, to="friend@elsewhere.test"))
            assert status.ok
        assert any(m.route == "elsewhere.test" for m in mta.spool.status())
        stored = await mta.spool.read_message(
            next(m.id for m in mta.spool.status() if m.route == "elsewhere.test")
        )
        assert b"with ESMTPSA" in stored


async def plaintext_codes(port: int) -> list[int]:
    """The reply codes to a pipelined EHLO, MAIL, VRFY, RSET, NOOP, QUIT
    sent in plaintext."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"EHLO c.test\r\nMAIL FROM:<a@example.com>\r\nVRFY user\r\nRSET\r\nNOOP\r\nQUIT\r\n"
    )
    parser = ReplyParser()
    while data := await reader.read(4096):
        parser.feed(data)
    writer.close()
    codes = [reply.code for reply in iter(parser.next_reply, None)]
    assert codes[0] == 220
    return codes[1:]


async def test_reload_tls_swaps_the_certificate_and_keeps_it_on_bad_files(
    tmp_path: Path, ca: Any, ca_file: str
) -> None:
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"

    def install(name: str) -> None:
        cert = ca.issue_cert(name)
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))

    async def presented_name(port: int) -> str:
        context = ssl.create_default_context(cafile=ca_file)
        context.check_hostname = False
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        peer = writer.get_extra_info("peercert")
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        return str(peer["subjectAltName"][0][1])

    install("old.test")
    cfg = config(
        tmp_path,
        server={"listen": ["127.0.0.1:0"], "smtps": ["127.0.0.1:0"]},
        tls={"cert_file": str(cert_file), "key_file": str(key_file)},
    )
    async with Mta(cfg, dns=FakeDns()) as mta:
        smtps = mta.server.ports[1]
        assert await presented_name(smtps) == "old.test"
        install("new.test")
        mta.reload_tls()
        assert await presented_name(smtps) == "new.test"
        # A key that does not match, then a missing file: refused, the old pair stays.
        ca.issue_cert("other.test").private_key_pem.write_to_path(str(key_file))
        with pytest.raises(ValueError, match="previous certificate stays in use"):
            mta.reload_tls()
        key_file.unlink()
        with pytest.raises(ValueError, match="previous certificate stays in use"):
            mta.reload_tls()
        assert await presented_name(smtps) == "new.test"


async def test_a_restart_delivers_what_was_queued(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        routing={"routes": {"example.net": ["127.0.0.1:9"]}},
        spool={"retry_intervals": ["1h"]},
    )
    async with Mta(cfg, dns=FakeDns()) as mta:
        async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
            assert (await client.send(message(1, to="x@example.net"))).ok
        await wait_until(lambda: any(m.status is Status.SEND_AT for m in mta.spool.status()))
    async with ScriptedServer(Handler) as sink:
        cfg = config(
            tmp_path,
            routing={"routes": {"example.net": [f"127.0.0.1:{sink.port}"]}},
            spool={"retry_intervals": ["1h"]},
        )
        async with Mta(cfg, dns=FakeDns()) as mta:
            (entry,) = mta.spool.status()
            await mta.spool.send([entry.id])
            await wait_until(lambda: len(sink.messages()) == 1)
    assert sink.messages()[0].endswith(b"body 1\r\n")


def test_a_second_mta_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    from smtpx.spool.journal import SpoolLocked

    async def scenario() -> None:
        cfg = config(tmp_path)
        async with Mta(cfg, dns=FakeDns()):
            with pytest.raises(SpoolLocked):
                async with Mta(cfg, dns=FakeDns()):
                    pass

    asyncio.run(scenario())


async def test_a_slow_shutdown_says_where_it_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A shutdown past SLOW_SHUTDOWN logs the chain each task waits in: here the spool's
    close, held up by its connection cache (a Python object: the compiled build's store
    cannot be patched)."""
    monkeypatch.setattr(app_module, "SLOW_SHUTDOWN", 0.05)
    release = asyncio.Event()
    mta = Mta(config(tmp_path), dns=FakeDns())
    await mta.start()
    closing = mta.spool.cache.close

    async def held_close() -> None:
        await release.wait()
        await closing()

    monkeypatch.setattr(mta.spool.cache, "close", held_close)
    shutdown = asyncio.create_task(mta.close())
    await wait_until(lambda: "shutdown still running" in caplog.text)
    release.set()
    await shutdown
    report = next(r.getMessage() for r in caplog.records if "still running" in r.getMessage())
    assert "Mta.close (app.py:" in report
    assert "Spool.kill_and_flush (spool.py:" in report
    assert "held_close (test_mta.py:" in report and "Event.wait" in report
