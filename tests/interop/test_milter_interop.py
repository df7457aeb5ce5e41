"""[[milters]] against real milters on loopback: OpenDKIM signs (the signature verified
with dkimpy against the generated key), rspamd in milter mode rejects GTUBE and adds its
headers to clean mail, and a libmilter milter (python3-milter) replaces the body and
changes the sender, the recipients and the header."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dkim
import pytest

from smtpx.mta.app import Mta
from smtpx.mta.config import MtaConfig
from smtpx.mta.routing import FakeDns
from smtpx.spool.message import SpooledMessage
from tests.conftest import REQUIRE_INTEROP, require_tool
from tests.interop import milters
from tests.interop.test_haproxy import dialogue
from tests.mta.helpers import config

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HEAD = (
    b"From: Alice <a@example.com>\r\nTo: u@example.net\r\nSubject: milters\r\n"
    b"Date: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\n"
)


@pytest.fixture(scope="session")
def opendkim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bytes]]:
    binary = require_tool("opendkim")
    yield from milters.opendkim(binary, tmp_path_factory.mktemp("opendkim"), "example.com", "sel")


@pytest.fixture(scope="session")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = require_tool("rspamd")
    yield from milters.rspamd(binary, tmp_path_factory.mktemp("rspamd"))


@pytest.fixture(scope="session")
def pymilter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = milters.system_python_with_milter()
    if python is None:
        message = "python3-milter is not installed"
        if REQUIRE_INTEROP:
            pytest.fail(message + " (SMTPX_REQUIRE_INTEROP=1)")
        pytest.skip(message)
    yield from milters.pymilter(python, tmp_path_factory.mktemp("pymilter"))


def mta_config(tmp_path: Path, *addresses: str, **options: Any) -> MtaConfig:
    cfg = config(
        tmp_path,
        routing={"routes": {"example.net": ["127.0.0.1:9"]}},
        spool={"retry_intervals": ["1h"]},
    )
    entries = [
        {"name": f"m{i}", "address": a, "default_action": "reject", **options}
        for i, a in enumerate(addresses)
    ]
    return replace(cfg, milters=MtaConfig.from_dict({"milters": entries}).milters)


async def send(
    tmp_path: Path, body: bytes, *addresses: str, rcpts: tuple[str, ...] = ("u@example.net",)
) -> tuple[list[str], list[tuple[SpooledMessage, bytes]]]:
    sent = [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        *(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts),
        b"DATA\r\n",
        HEAD + body + b".\r\n",
        b"QUIT\r\n",
    ]
    async with Mta(mta_config(tmp_path, *addresses), dns=FakeDns()) as mta:
        replies = await dialogue(mta.server.ports[0], sent, source="127.0.0.1")
        stored = [(m, await mta.spool.read_message(m.id)) for m in mta.spool.status()]
    return [str(r) for r in replies], stored


def verify(message: bytes, record: bytes) -> bool:
    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"sel._domainkey.example.com." else None

    return bool(dkim.verify(message, dnsfunc=txt))


async def test_opendkim_signs_through_the_milter(
    tmp_path: Path, opendkim: tuple[str, bytes]
) -> None:
    address, record = opendkim
    replies, stored = await send(tmp_path, b"Signed by OpenDKIM.\r\n", address)
    assert replies[-2].startswith("250 2.0.0 Ok: queued as "), replies
    ((_, message),) = stored
    assert message.startswith(
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.com;"
    )
    assert verify(message, record)
    assert not verify(message.replace(b"Signed by", b"Forged by"), record)


async def test_rspamd_rejects_gtube(tmp_path: Path, rspamd: str) -> None:
    replies, stored = await send(tmp_path, GTUBE + b"\r\n", rspamd)
    assert replies[-2] == "554 5.7.1 Gtube pattern"
    assert stored == []


async def test_rspamd_adds_its_headers_and_opendkim_signs_after_it(
    tmp_path: Path, rspamd: str, opendkim: tuple[str, bytes]
) -> None:
    address, record = opendkim
    replies, stored = await send(tmp_path, b"A clean message.\r\n", rspamd, address)
    assert replies[-2].startswith("250 "), replies
    ((_, message),) = stored
    head = message.split(b"\r\n\r\n")[0]
    assert b"\r\nX-Spamd-Result: default: False [" in head
    assert b"\r\nX-Rspamd-Queue-Id: " in head
    assert b"\r\nX-Spam-Status: No, score=" in head
    assert verify(message, record)


async def test_a_libmilter_milter_edits_body_envelope_and_header(
    tmp_path: Path, pymilter: str
) -> None:
    rcpts = ("keep@example.net", "drop@example.net")
    replies, stored = await send(tmp_path, b"Original body.\r\n", pymilter, rcpts=rcpts)
    assert replies[-2].startswith("250 "), replies
    ((spooled, message),) = stored
    assert spooled.sender == "<changed@example.com>"
    assert spooled.recipients == ["keep@example.net", "added@example.net"]
    head, _, body = message.partition(b"\r\n\r\n")
    assert body == b"Replaced by libmilter.\r\nSecond line.\r\n"
    assert b"\r\nSubject: rewritten\r\n" in head
    assert head.endswith(b"\r\nX-Pymilter: seen")
    replies, stored = await send(tmp_path / "2", b"reject me\r\n", pymilter)
    assert replies[-2] == "550 5.7.1 Rejected by pymilter"
    assert stored == []


async def test_opendkim_after_a_rewriting_milter_signs_what_is_sent(
    tmp_path: Path, pymilter: str, opendkim: tuple[str, bytes]
) -> None:
    """The libmilter milter rewrites the Subject and replaces the body; OpenDKIM, next,
    is sent the message with those changes, so its signature holds for what is stored
    (with each milter seeing the original, it signed a body that was then replaced)."""
    address, record = opendkim
    replies, stored = await send(tmp_path, b"Original body.\r\n", pymilter, address)
    assert replies[-2].startswith("250 "), replies
    ((_, message),) = stored
    assert b"\r\nSubject: rewritten\r\n" in message
    assert message.endswith(b"\r\n\r\nReplaced by libmilter.\r\nSecond line.\r\n")
    assert message.startswith(b"DKIM-Signature: ")
    assert verify(message, record)


async def test_a_libmilter_milter_answers_an_unknown_command(tmp_path: Path, pymilter: str) -> None:
    """SMFIC_UNKNOWN to a real libmilter milter (its unknown callback): it refuses XFROB
    with its own reply; another unknown command keeps smtpx's own 500."""
    sent = [b"EHLO client.test\r\n", b"XFROB now\r\n", b"XOTHER\r\n", b"QUIT\r\n"]
    async with Mta(mta_config(tmp_path, pymilter), dns=FakeDns()) as mta:
        replies = await dialogue(mta.server.ports[0], sent, source="127.0.0.1")
    assert [str(r) for r in replies[2:4]] == [
        "550 5.7.1 pymilter knows no XFROB",
        "500 5.5.1 Command unrecognized: XOTHER",
    ]
