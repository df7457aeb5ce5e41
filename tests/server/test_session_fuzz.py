"""Whatever a client sends, in whatever pieces, a server session answers with well-formed
replies, ends (at the client's end of stream, or at a deadline), and tells the plugin
once; with the pause before the greeting and the pipelining check on or off. On the
virtual clock, over memory."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpx.io import memory_pair
from smtpx.protocol import ReplyParser
from smtpx.server import Session
from smtpx.testing.clock import run_virtual
from tests.protocol.test_connection import VOCABULARY
from tests.server.helpers import Keep, server


class Checking(Keep):
    def __init__(self, delay: float, strict: bool) -> None:
        super().__init__()
        self.delay = delay
        self.strict = strict

    def greeting_delay(self, session: Session) -> float:
        return self.delay

    def enforce_sync(self, session: Session) -> bool:
        return self.strict


@given(
    st.lists(st.one_of(st.sampled_from(VOCABULARY), st.binary(max_size=24)), max_size=30),
    st.sampled_from([0.0, 3.0]),
    st.booleans(),
    st.booleans(),
    st.floats(0.0, 5.0),
)
@settings(max_examples=150, deadline=None)
def test_any_input_gets_replies_and_an_end(
    pieces: list[bytes], delay: float, strict: bool, close: bool, gap: float
) -> None:
    async def scenario() -> tuple[list[int], list[str], float]:
        loop = asyncio.get_running_loop()
        plugin = Checking(delay, strict)
        srv = server(plugin, command_timeout=60, data_timeout=60, max_errors=5)
        client, server_end = memory_pair()
        task = loop.create_task(srv.serve_stream(server_end))
        start = loop.time()
        for piece in pieces:
            await asyncio.sleep(gap)
            try:
                client.write(piece)
            except ConnectionResetError:  # the server hung up: nothing more goes
                break
        if close:
            client.close()
        await asyncio.wait_for(task, 600)  # the deadlines end it at the latest
        parser, codes = ReplyParser(), []
        while data := await client.read():
            parser.feed(data)
            while (reply := parser.next_reply()) is not None:
                codes.append(reply.code)
        await srv.close()
        return codes, plugin.calls, loop.time() - start

    codes, calls, took = run_virtual(scenario())
    assert all(200 <= code <= 599 for code in codes)
    assert calls == ["connect", "disconnect"]
    assert took < 60 + 5 * 31 + 3 + 5  # the pieces' gaps, a pause, a command deadline
