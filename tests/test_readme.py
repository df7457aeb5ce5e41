"""The README's examples run as written (a newcomer copies them first)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from tests.interop.conftest import CoreServer

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS: list[str] = re.findall(r"```python\n(.*?)```", README, re.S)


def block(containing: str) -> str:
    (found,) = [b for b in BLOCKS if containing in b]
    return found


def test_the_five_line_send_example_sends() -> None:
    code = block("from smtpx import simplemail")
    assert len(code.strip().splitlines()) == 5
    server = CoreServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        exec(code.replace("port=2525", f"port={server.port}"), {})
    finally:
        server.shutdown()
        server.server_close()
    (message,) = server.messages()
    assert b"Subject: Hello" in message and b"Hi!" in message


def test_the_protocol_core_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(block('conn.receive_data(b"EHLO client.example'), namespace)
    assert "conn" in namespace


def test_the_in_memory_session_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(block("from smtpx.testing import Session"), namespace)
    session = namespace["session"]
    assert len(session.handler.messages) == 1  # type: ignore[attr-defined]
