"""Helpers for MTA tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from smtpx.client import ClientConfig, TlsConfig, TlsMode, connect
from smtpx.envelope import Envelope
from smtpx.mta.config import MtaConfig
from smtpx.spool.journal_store import NOWHERE
from smtpx.spool.message import SpooledMessage, Status

PLAIN = ClientConfig.for_testing(tls=[("", TlsConfig(mode=TlsMode.NONE))])


def config(tmp_path: Path, **sections: Any) -> MtaConfig:
    document: dict[str, Any] = {
        "hostname": "mx.test",
        "server": {"listen": ["127.0.0.1:0"]},
        "spool": {
            "dir": str(tmp_path / "spool"),
            "fsync": "never",
            "retry_intervals": ["1s", "1s"],
        },
        "local": {"maildir": str(tmp_path / "mail")},
        "relay": {"local_domains": ["example.org", "localhost"]},
        "control": {"socket": str(tmp_path / "control.sock")},
    }
    for name, values in sections.items():
        document.setdefault(name, {}).update(values)
    return MtaConfig.from_dict(document)


def message(n: int = 0, *, sender: str = "a@example.com", to: str = "user@example.org") -> Envelope:
    return Envelope.create(
        sender=sender,
        recipients=[to],
        message=(
            f"From: {sender}\r\nTo: {to}\r\nSubject: {n}\r\nMessage-ID: <{n}@t>\r\n\r\nbody {n}\r\n"
        ).encode(),
    )


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def maildir(tmp_path: Path, address: str) -> list[bytes]:
    local, _, domain = address.partition("@")
    new = tmp_path / "mail" / domain / local / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def sending(*recipients: str, sender: str = "<me@example.com>") -> SpooledMessage:
    """A message as the delivery engine hands it to a local agent (LMTP, maildir)."""
    return SpooledMessage(
        id="m1",
        parent_id="m1",
        spool_date=0.0,
        status=Status.SENDING,
        sender=sender,
        recipients=list(recipients),
        location=NOWHERE,
    )


async def queue_waiting(mta: Any, count: int) -> None:
    """Send ``count`` messages to u0..@example.net and one from boss@corp.example (the
    tests route example.net nowhere), and wait until each has had its first attempt."""
    async with connect("127.0.0.1", mta.server.ports[0], config=PLAIN) as client:
        for n in range(count):
            assert (await client.send(message(n, to=f"u{n}@example.net"))).ok
        assert (await client.send(message(9, sender="boss@corp.example", to="x@example.net"))).ok
    await wait_until(lambda: all(m.attempt_count for m in mta.spool.status()))
