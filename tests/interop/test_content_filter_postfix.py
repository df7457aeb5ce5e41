"""The content-filter round trip (F126) with a real filter: a private Postfix whose
``header_checks`` stamp each message (as a scanner adds its verdict) and which relays it
back to the round trip's return listener."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from smtpx.envelope import Envelope, HostPort
from smtpx.tools import ContentFilter
from smtpx.tools.content_filter import TAG
from tests.interop.postfix import private_postfix


async def test_a_postfix_content_filter_round_trip() -> None:
    envelope = Envelope.create(
        sender="sender@example.com",
        recipients=["a@example.org", "b@example.org"],
        message=b"From: sender@example.com\r\nSubject: scan me\r\n\r\n..dot\r\nbody\r\n",
    )
    with tempfile.TemporaryDirectory(prefix="smtpx-filter-", dir="/tmp") as scratch:
        os.chmod(scratch, 0o755)  # Postfix's cleanup daemon reads the table
        checks = Path(scratch) / "header_checks"
        checks.write_text("/^Subject:/ PREPEND X-Content-Filter: checked by postfix.test\n")
        os.chmod(checks, 0o644)
        # The return listener first: Postfix is set up to relay to its port.
        async with ContentFilter("127.0.0.1:9", timeout=60) as content_filter:
            with private_postfix(content_filter.port, header_checks=f"regexp:{checks}") as pf:
                content_filter.scanner = HostPort("127.0.0.1", pf.port)
                returned = await content_filter.send_receive(envelope)
    assert returned.info == envelope.info
    assert returned.last_header("X-Content-Filter") == "checked by postfix.test"
    assert returned.find_all_headers(TAG) == []
    received = returned.find_all_headers("Received")
    assert received and "postfix.test" in received[0]  # Postfix's own trace field, kept
    assert returned.body == envelope.body
    assert returned.last_header("Subject") == "scan me"
