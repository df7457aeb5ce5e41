"""Protocol core throughput: commands per second and DATA MB/s through ServerConnection.

    .venv/bin/python bench/protocol.py [--quick]

Measures, each as the best of several rounds (the machine is shared; the best round is the
least disturbed one):

* commands/s: pipelined MAIL / RCPT / RSET lines through ``ServerConnection`` with a reply
  sent for each (what a server pays per command), and ``parse_command`` alone;
* DATA MB/s: 1 MB messages (78-octet lines, some dot-stuffed) fed in 64 KiB reads through
  ``ServerConnection``, decoded content counted;
* client encoding MB/s: ``dot_stuff`` of the same message, next to the standard library's
  ``smtplib`` encoding (``_fix_eols`` + ``quotedata``) in the same run, with the ratio.

Issue #2 targets on the 2-core machine: >= 150,000 commands/s and >= 300 MB/s.
"""

from __future__ import annotations

import argparse
import platform
import smtplib
import sys
import time
from collections.abc import Callable

from smtpx.protocol import (
    NEED_DATA,
    DataChunk,
    EndOfData,
    Mail,
    Rcpt,
    ServerConnection,
    dot_stuff,
    parse_command,
    replies,
)

SENDER_OK = replies.sender_ok()
RECIPIENT_OK = replies.recipient_ok()
OK = replies.ok()
GREETING = replies.service_ready("bench.example")
EHLO = replies.ehlo_ok("bench.example", "hi", ["PIPELINING", "SIZE 0", "8BITMIME"])


def best(rounds: int, run: Callable[[], float]) -> float:
    return max(run() for _ in range(rounds))


def ready_connection() -> ServerConnection:
    conn = ServerConnection()
    conn.send(GREETING)
    conn.receive_data(b"EHLO client.example\r\n")
    conn.next_event()
    conn.send(EHLO)
    conn.data_to_send()
    return conn


COMMANDS = b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.org>\r\nRSET\r\n"


def commands_through_connection(n: int) -> float:
    conn = ready_connection()
    conn.receive_data(COMMANDS * (n // 3))
    count = 0
    start = time.perf_counter()
    while (event := conn.next_event()) is not NEED_DATA:
        count += 1
        if isinstance(event, Mail):
            conn.send(SENDER_OK)
        elif isinstance(event, Rcpt):
            conn.send(RECIPIENT_OK)
        else:
            conn.send(OK)
    conn.data_to_send()
    return count / (time.perf_counter() - start)


def commands_parsed(n: int) -> float:
    lines = (COMMANDS * (n // 3)).split(b"\r\n")[:-1]
    start = time.perf_counter()
    for line in lines:
        parse_command(line)
    return len(lines) / (time.perf_counter() - start)


def message(size: int = 1 << 20) -> bytes:
    line = b"x" * 76 + b"\r\n"
    dotted = b".dot-stuffed line" + b"y" * 59 + b"\r\n"
    lines = [dotted if i % 100 == 0 else line for i in range(size // len(line))]
    return b"".join(lines)


def data_through_connection(body: bytes, messages: int) -> float:
    conn = ready_connection()
    wire = dot_stuff(body)
    read = 65536
    total = 0
    start = time.perf_counter()
    for _ in range(messages):
        conn.receive_data(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        conn.next_event()
        conn.send(SENDER_OK)
        conn.next_event()
        conn.send(RECIPIENT_OK)
        conn.next_event()
        conn.send(replies.start_mail_input())
        for offset in range(0, len(wire), read):
            conn.receive_data(wire[offset : offset + read])
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, DataChunk):
                    total += len(event.data)
                elif isinstance(event, EndOfData):
                    conn.send(OK)
        conn.data_to_send()
    elapsed = time.perf_counter() - start
    assert total == len(body) * messages, (total, len(body) * messages)
    return total / elapsed / 1e6


def encode_smtpx(body: bytes, messages: int) -> float:
    start = time.perf_counter()
    for _ in range(messages):
        dot_stuff(body)
    return len(body) * messages / (time.perf_counter() - start) / 1e6


def encode_smtplib(body: bytes, messages: int) -> float:
    start = time.perf_counter()
    for _ in range(messages):
        # What SMTP.data() does to a bytes message before sending it.
        smtplib.quotedata(smtplib._fix_eols(body.decode("latin-1")))  # type: ignore[attr-defined]
    return len(body) * messages / (time.perf_counter() - start) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (CI smoke run)")
    args = parser.parse_args()
    rounds = 2 if args.quick else 7
    n = 30_000
    body = message()
    messages = 5 if args.quick else 20

    print(f"smtpx protocol benchmark  python {platform.python_version()}  {platform.machine()}")
    through = best(rounds, lambda: commands_through_connection(n))
    parsed = best(rounds, lambda: commands_parsed(n))
    data = best(rounds, lambda: data_through_connection(body, messages))
    ours = best(rounds, lambda: encode_smtpx(body, messages))
    stdlib = best(rounds, lambda: encode_smtplib(body, messages))
    print(f"commands/s through ServerConnection (with replies): {through:12,.0f}  target 150,000")
    print(f"commands/s parse_command alone:                     {parsed:12,.0f}")
    print(f"DATA MB/s through ServerConnection (1 MB messages): {data:12,.1f}  target 300")
    ratio = ours / stdlib
    print(f"client encoding MB/s: smtpx {ours:,.0f}  smtplib {stdlib:,.0f}  ratio {ratio:.1f}x")
    ok = through >= 150_000 and data >= 300
    print("targets met" if ok else "TARGETS NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
