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


async def test_the_plugin_example_works() -> None:
    from smtpx.client import ClientConfig, RejectedAllRecipients, connect
    from smtpx.envelope import Envelope
    from smtpx.server import Listener, Server, ServerConfig

    namespace: dict[str, object] = {}
    exec(block("class Inbox(Plugin)"), namespace)
    plugin = namespace["Inbox"]()  # type: ignore[operator]
    config = ServerConfig(listeners=[Listener(port=0)])
    local = Envelope.create(
        sender="a@example.net", recipients=["b@example.org"], message=b"S: x\r\n\r\n.\r\n"
    )
    relay = Envelope.create(
        sender="a@example.net", recipients=["c@elsewhere.test"], message=b"S: x\r\n\r\n"
    )
    async with (
        Server(plugin, config) as server,
        connect("127.0.0.1", server.ports[0], config=ClientConfig.for_testing()) as client,
    ):
        assert (await client.send(local)).ok
        refused = await client.send(relay)
        assert isinstance(refused, RejectedAllRecipients)
        assert str(refused.reply) == "550 5.7.1 Relay access denied"
    assert [m.recipients for m in plugin.messages] == [local.recipients]
