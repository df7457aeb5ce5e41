"""What local delivery costs per message: the recipient table's lookup (a mailbox, an
alias, a nested alias with a remote target) and one delivery into a maildir
(MaildirAgent) against one over LMTP to a private Dovecot (LmtpAgent, unix socket).

    .venv/bin/python bench/local.py [--messages 2000] [--size 4096] [--concurrency 10]
                                  [--quick]

Lookups run in one thread, 20,000 each, in a table of 1,000 mailboxes and 1,000 aliases.
Deliveries take one 4 KB message with one recipient, ``--concurrency`` at a time (each
LMTP delivery is a session of its own: connect, LHLO, MAIL, RCPT, DATA, QUIT), and count
the files that arrived. Needs Debian's dovecot-lmtpd (see .ci/run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from smtpx.mta.lmtp import LmtpAgent
from smtpx.mta.local import MaildirAgent
from smtpx.mta.recipients import Deliver, RecipientTable
from smtpx.protocol.addresses import Address
from smtpx.protocol.replies import Reply
from smtpx.spool.journal_store import NOWHERE
from smtpx.spool.message import SpooledMessage, Status
from smtpx.testing.dovecot import PrivateDovecot

DOMAIN = "example.org"


def lookups(count: int = 20000) -> dict[str, float]:
    """Microseconds per RecipientTable.resolve."""
    table = RecipientTable(
        [DOMAIN],
        mailboxes=[f"user{n}" for n in range(1000)],
        aliases={
            **{f"alias{n}": [f"user{n}"] for n in range(998)},
            "team": ["alias1", "alias2", "user3"],
            "list": ["team", "someone@example.net"],
        },
    )
    cases = {
        "mailbox": "user500@example.org",
        "subaddress": "user500+tag@example.org",
        "alias": "alias500@example.org",
        "nested alias + remote": "list@example.org",
    }
    costs = {}
    for name, text in cases.items():
        address = Address.parse(text)
        assert isinstance(table.resolve(address), Deliver)
        began = time.perf_counter()
        for _ in range(count):
            table.resolve(address)
        costs[name] = (time.perf_counter() - began) / count * 1e6
    return costs


def message(n: int, recipient: str) -> SpooledMessage:
    return SpooledMessage(
        id=f"m{n}",
        parent_id=f"m{n}",
        spool_date=0.0,
        status=Status.SENDING,
        sender="<bench@example.net>",
        recipients=[recipient],
        location=NOWHERE,
    )


Deliver_ = Callable[[SpooledMessage, bytes], Awaitable[list[tuple[str, Reply]]]]


async def deliveries(deliver: Deliver_, count: int, concurrency: int, content: bytes) -> float:
    """Messages a second through ``deliver``, ``concurrency`` at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for n in queue:
            ((_, reply),) = await deliver(message(n, f"user{n % 10}@{DOMAIN}"), content)
            if reply.code != 250:
                raise RuntimeError(f"delivery {n}: {reply}")

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - began)


def files(root: Path) -> int:
    return sum(len(names) for folder, _, names in os.walk(root) if folder.endswith("/new"))


async def main_async(args: argparse.Namespace) -> None:
    line = b"x" * 70 + b"\r\n"
    content = b"From: bench@example.net\r\nSubject: bench\r\n\r\n" + line * (args.size // 72)
    with tempfile.TemporaryDirectory(prefix="smtpx-bench-", dir="/tmp") as scratch:
        root = Path(scratch)
        os.chmod(root, 0o755)
        maildir = MaildirAgent(root / "maildir", "bench")
        rate = await deliveries(maildir.deliver, args.messages, args.concurrency, content)
        assert files(root / "maildir") == args.messages
        print(f"  maildir         {rate:8.0f} msg/s  {1e6 / rate:7.0f} us/msg", flush=True)
        dovecot = PrivateDovecot(root / "dovecot", [f"user{n}" for n in range(10)])
        dovecot.start()
        try:
            lmtp = LmtpAgent(dovecot.socket, "bench")
            rate = await deliveries(lmtp.deliver, args.messages, args.concurrency, content)
            assert files(dovecot.mail) == args.messages
        finally:
            dovecot.stop()
        print(f"  lmtp (Dovecot)  {rate:8.0f} msg/s  {1e6 / rate:7.0f} us/msg")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="500 messages")
    args = parser.parse_args()
    if args.quick:
        args.messages = 500
    print("recipient table lookups (1,000 mailboxes, 1,000 aliases):")
    for name, cost in lookups().items():
        print(f"  {name:<22} {cost:6.1f} us")
    print(f"{args.messages} x {args.size} octets, 1 recipient, {args.concurrency} at a time:")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
