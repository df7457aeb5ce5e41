"""smtpx behind a real HAProxy (Debian's haproxy, TCP mode, send-proxy and send-proxy-v2):
the client HAProxy names is the one the relay policy, Received:, the mail log and the
limits see, and nobody but the proxy may connect to the proxied listener."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from smtpx.protocol import Reply, ReplyParser
from smtpx.testing.daemons import HAProxy
from tests.conftest import require_tool
from tests.mta.helpers import config, maildir, wait_until

pytestmark = pytest.mark.interop


async def dialogue(
    port: int, commands: list[bytes], *, source: str, first: bytes = b""
) -> list[Reply]:
    """The greeting and one reply per command, from a client bound to ``source`` (which
    sends ``first`` before the greeting: a PROXY header, say)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    parser, got = ReplyParser(), list[Reply]()
    try:
        for command in [first, *commands]:
            writer.write(command)
            while (reply := parser.next_reply()) is None:
                data = await asyncio.wait_for(reader.read(4096), 10)
                if not data:
                    return got
                parser.feed(data)
            got.append(reply)
    finally:
        writer.close()
    return got


MESSAGE = [
    b"EHLO client.test\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"RCPT TO:<x@example.net>\r\n",  # relaying: only for trusted clients
    b"RCPT TO:<user@example.org>\r\n",
    b"DATA\r\n",
    b"Subject: behind haproxy\r\n\r\nhello\r\n.\r\n",
    b"QUIT\r\n",
]


def proxied_config(tmp_path: Path) -> object:
    return config(
        tmp_path,
        server={"proxied": ["127.0.0.1:0"], "proxy_from": ["127.0.0.1/32"]},
        relay={"trusted_networks": ["127.0.0.1/32"]},
        routing={"routes": {"example.net": ["127.0.0.1:9"]}},
        spool={"retry_intervals": ["1h"]},
        log={"level": "debug"},
    )


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
async def test_the_client_behind_haproxy_is_the_one_smtpx_sees(
    tmp_path: Path, send: str, caplog: pytest.LogCaptureFixture
) -> None:
    require_tool("haproxy")
    caplog.set_level(logging.DEBUG, logger="smtpx.mail")
    async with Mta(proxied_config(tmp_path), dns=FakeDns()) as mta:  # type: ignore[arg-type]
        backend = mta.server.ports[0]
        with HAProxy(tmp_path / "haproxy", backend_port=backend, send=send) as proxy:
            # 127.0.0.2 is not trusted: relaying is refused, local mail is taken.
            untrusted = await dialogue(proxy.port, MESSAGE, source="127.0.0.2")
            # 127.0.0.1 is trusted, though the proxy is the same.
            trusted = await dialogue(proxy.port, MESSAGE, source="127.0.0.1")
            # Straight to the proxied listener, bypassing HAProxy: refused before a greeting.
            bypass = await dialogue(backend, [b"EHLO client.test\r\n"], source="127.0.0.2")
        await wait_until(lambda: len(maildir(tmp_path, "user@example.org")) == 2)
    assert [r.code for r in untrusted] == [220, 250, 250, 550, 250, 354, 250, 221]
    assert str(untrusted[3]).startswith("550 5.7.1")
    assert [r.code for r in trusted] == [220, 250, 250, 250, 250, 354, 250, 221]
    assert [(r.code, r.text) for r in bypass] == [(421, "Not a trusted proxy; closing connection")]
    received = sorted(
        m.split(b"Received: from client.test (")[1][:13]
        for m in maildir(tmp_path, "user@example.org")
    )
    assert received == [b"[127.0.0.1])\n", b"[127.0.0.2])\n"]
    connected = [r for r in caplog.records if r.getMessage() == "connected"]
    seen = sorted((r.mail["remote_ip"], r.mail["proxy_peer"]) for r in connected)  # type: ignore[attr-defined]
    assert seen == [("127.0.0.1", "127.0.0.1"), ("127.0.0.2", "127.0.0.1")]


async def test_early_talkers_behind_haproxy(tmp_path: Path) -> None:
    """The pause before the greeting and the pipelining check see the client HAProxy
    names: bytes it sent early come through the proxy right behind the PROXY header,
    and are caught as if it had connected directly (real time: HAProxy is a process)."""
    require_tool("haproxy")
    cfg = config(
        tmp_path,
        server={
            "proxied": ["127.0.0.1:0"],
            "proxy_from": ["127.0.0.1/32"],
            "greeting_delay": "0.3s",
            "reject_unauth_pipelining": True,
        },
        relay={"trusted_networks": ["127.0.0.1/32"]},
    )
    loop = asyncio.get_running_loop()
    async with Mta(cfg, dns=FakeDns()) as mta:
        backend = mta.server.ports[0]
        with HAProxy(tmp_path / "haproxy", backend_port=backend, send="send-proxy-v2") as proxy:
            start = loop.time()
            patient = await dialogue(proxy.port, [b"QUIT\r\n"], source="127.0.0.2")
            waited = loop.time() - start
            early = await dialogue(proxy.port, [], source="127.0.0.2", first=b"EHLO bot.test\r\n")
            hasty = await dialogue(
                proxy.port, [b"EHLO bot.test\r\nMAIL FROM:<a@example.com>\r\n"], source="127.0.0.2"
            )
            start = loop.time()
            trusted = await dialogue(proxy.port, [b"QUIT\r\n"], source="127.0.0.1")
            at_once = loop.time() - start
        stats = dict(mta.server.stats)
    assert [r.code for r in patient] == [220, 221] and waited >= 0.3
    assert [(r.code, r.text) for r in early] == [
        (554, "mx.test Protocol error: talked before the greeting")
    ]
    assert [str(r) for r in hasty[1:]] == [
        "554 5.5.0 Protocol error: improper use of SMTP command pipelining"
    ]
    assert [r.code for r in trusted] == [220, 221] and at_once < 0.3
    assert (stats["early_talkers_greeting"], stats["early_talkers_pipelining"]) == (1, 1)
