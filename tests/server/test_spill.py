"""Large messages go to a file as they arrive, within a memory budget shared by all
sessions; the plugin gets every octet; nothing is left open; a full disk gets 452."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from smtpx.client import ClientConfig, connect
from smtpx.content import SpilledMessage
from smtpx.envelope import Envelope
from smtpx.server import Listener, Plugin, Server, ServerConfig, Session, Transaction
from tests.conftest import small_filesystem

CLIENT = ClientConfig.for_testing()


def big(n: int, size: int) -> Envelope:
    line = f"{n:04d} " + "x" * 70 + "\r\n"
    body = (line * (size // len(line) + 1)).encode()[:size]
    return Envelope.create(
        sender="a@example.com",
        recipients=["b@example.org"],
        message=f"Subject: {n}\r\n\r\n".encode() + body.rsplit(b"\r\n", 1)[0] + b"\r\n",
    )


class Record(Plugin):
    """Reads each message during process(), as a plugin must for a spilled one."""

    hostname = "mx.test"

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bytes]] = []

    async def process(self, session: Session, transaction: Transaction, envelope: Envelope) -> str:
        spilled = isinstance(envelope.content, SpilledMessage)
        self.seen.append((spilled, b"".join(envelope.chunks())))
        return "Ok"


async def send_with_bdat(port: int, message: bytes, chunk: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n")
    for start in range(0, len(message), chunk):
        part = message[start : start + chunk]
        last = b" LAST" if start + chunk >= len(message) else b""
        writer.write(b"BDAT %d%s\r\n" % (len(part), last) + part)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    replies = b""
    while data := await reader.read(65536):
        replies += data
    writer.close()
    codes = [line[:3] for line in replies.split(b"\r\n") if line[3:4] == b" "]
    assert codes[4:] == [b"250"] * -(-len(message) // chunk) + [b"221"], replies


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def config(**values: object) -> ServerConfig:
    return ServerConfig(listeners=[Listener(port=0)], **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
async def test_a_large_message_is_spilled_and_arrives_whole(chunking: bool) -> None:
    plugin = Record()
    before = open_files()
    async with Server(plugin, config(spill_threshold=64 * 1024)) as server:
        small, large = big(1, 10_000), big(2, 2_000_000)
        async with connect("127.0.0.1", server.ports[0], config=CLIENT) as client:
            assert (await client.send(small)).ok
            if not chunking:
                assert (await client.send(large)).ok
        if chunking:
            await send_with_bdat(server.ports[0], large.message, chunk=300_000)
        assert server.buffers.used == 0 and server.buffers.spills == 1
    assert plugin.seen == [(False, small.message), (True, large.message)]
    assert open_files() == before  # the spilled file is closed


async def test_all_sessions_together_stay_within_the_memory_budget() -> None:
    plugin = Record()
    budget = 300_000
    cfg = config(spill_threshold=1_000_000, max_buffered=budget)
    async with Server(plugin, cfg) as server:
        messages = [big(n, 200_000) for n in range(8)]

        async def send(envelope: Envelope) -> None:
            async with connect("127.0.0.1", server.ports[0], config=CLIENT) as client:
                assert (await client.send(envelope)).ok

        await asyncio.gather(*(send(m) for m in messages))
        assert server.buffers.peak <= budget
        assert server.buffers.spills >= 1 and server.buffers.used == 0
    assert sorted(data for _, data in plugin.seen) == sorted(m.message for m in messages)


async def test_a_session_cut_off_mid_data_leaves_nothing_behind() -> None:
    before = open_files()
    async with Server(Record(), config(spill_threshold=1024)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        writer.write(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
        writer.write(b"Subject: x\r\n\r\n" + b"y" * 68 + b"\r\n" * 1000)
        await writer.drain()
        while b"354" not in await reader.read(4096):
            pass
        while server.buffers.spills == 0:
            await asyncio.sleep(0.01)
        writer.close()
        while server.sessions:
            await asyncio.sleep(0.01)
        assert server.buffers.used == 0
    assert open_files() == before


async def test_no_room_for_the_file_is_452_and_the_session_goes_on(tmp_path: Path) -> None:
    plugin = Record()
    with small_filesystem(tmp_path / "small", "64k") as small:
        cfg = config(spill_threshold=16 * 1024, spill_directory=str(small))
        async with (
            Server(plugin, cfg) as server,
            connect("127.0.0.1", server.ports[0], config=CLIENT) as client,
        ):
            refused = await client.send(big(1, 500_000))
            assert not refused.ok and refused.reply.code == 452, refused
            assert str(refused.reply.enhanced) == "4.3.1"
            assert (await client.send(big(2, 1000))).ok
    assert [n for _, n in plugin.seen] == [big(2, 1000).message]


async def test_the_files_budget_exhausted_is_452_and_the_session_goes_on() -> None:
    plugin = Record()
    cfg = config(spill_threshold=16 * 1024, max_spilled=100 * 1024)
    async with (
        Server(plugin, cfg) as server,
        connect("127.0.0.1", server.ports[0], config=CLIENT) as client,
    ):
        refused = await client.send(big(1, 500_000))  # read to its end, then refused
        assert not refused.ok and refused.reply.code == 452, refused
        assert str(refused.reply.enhanced) == "4.3.1"
        assert "Insufficient system storage" in refused.reply.text
        assert (await client.send(big(2, 90_000))).ok  # within the budget: spilled, kept
        assert server.buffers.refused == 1 and server.buffers.spilled == 0
    assert [n for _, n in plugin.seen] == [big(2, 90_000).message]


async def test_the_files_budget_is_shared_by_the_sessions() -> None:
    plugin = Record()
    cfg = config(spill_threshold=16 * 1024, max_spilled=100 * 1024)
    async with Server(plugin, cfg) as server:
        # A first client is half-way through a message: 80 KB of it are in a file.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        writer.write(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
        writer.write(b"Subject: x\r\n\r\n" + (b"y" * 78 + b"\r\n") * 1000)
        await writer.drain()
        while server.buffers.spilled < 80_000:
            await asyncio.sleep(0.01)
        async with connect("127.0.0.1", server.ports[0], config=CLIENT) as client:
            refused = await client.send(big(3, 40_000))  # 80 + 40 KB: over
            assert refused.reply.code == 452, refused
            writer.write(b".\r\nQUIT\r\n")  # the first message ends: its file goes
            await writer.drain()
            answers = b""
            while b"\r\n221 " not in answers:
                answers += await asyncio.wait_for(reader.read(4096), 5)
            assert answers.split(b"\r\n")[-3].startswith(b"250 "), answers  # it was taken
            while server.buffers.spilled:
                await asyncio.sleep(0.01)
            assert (await client.send(big(4, 40_000))).ok
        writer.close()
    assert len(plugin.seen) == 2 and plugin.seen[1][1] == big(4, 40_000).message
