"""The handler configure_logging installs writes the mail log lines of one pass of the
event loop together (smtpx.maillog.batching): later, in order, whole, never lost at exit."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading

import pytest

from smtpx.maillog import Flows, MailLog, configure_logging
from smtpx.maillog.batching import ATOMIC_WRITE, BatchingHandler, _chunks


class Writes(io.StringIO):
    """A stream with a descriptor that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def fileno(self) -> int:
        return 2  # never written to: write() is ours

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def lines(self) -> list[str]:
        return "".join(self.writes).splitlines()


@pytest.fixture
def stream(restore_logging: None) -> Writes:
    """A stream for configure_logging's handler, which the first line of each test sets up
    (set up here, pytest's capture handler would come after it, and the lines would take
    the stdlib's path)."""
    return Writes()


def accepted(n: int) -> None:
    MailLog("smtp-server/session", Flows(("srv##1",))).info("accepted", local_id=f"m{n}")


async def test_lines_of_one_pass_are_written_together_at_the_next(stream: Writes) -> None:
    configure_logging("info", "plain", stream)
    for n in range(3):
        accepted(n)
    assert stream.writes == []  # not yet
    await asyncio.sleep(0)
    assert len(stream.writes) == 1
    assert [line.split()[-2] for line in stream.lines()] == [
        "local_id=m0",
        "local_id=m1",
        "local_id=m2",
    ]
    accepted(3)
    await asyncio.sleep(0)
    assert len(stream.writes) == 2 and stream.writes[1].endswith("local_id=m3 [srv##1]\n")


async def test_a_warning_is_written_at_once_after_the_lines_before_it(stream: Writes) -> None:
    configure_logging("info", "plain", stream)
    accepted(1)
    MailLog("spool").warning("disk nearly full")
    assert len(stream.writes) == 1  # one write: the waiting line, then the warning
    lines = stream.lines()
    assert "local_id=m1" in lines[0] and "disk nearly full" in lines[1]
    await asyncio.sleep(0)
    assert len(stream.writes) == 1  # nothing was left to write


async def test_another_loggers_line_comes_after_the_waiting_ones(stream: Writes) -> None:
    configure_logging("info", "plain", stream)
    accepted(1)
    logging.getLogger("smtpx.server").info("listening on 127.0.0.1:25")
    lines = stream.lines()
    assert "local_id=m1" in lines[0] and lines[1].endswith("listening on 127.0.0.1:25")


async def test_flush_writes_the_waiting_lines(stream: Writes) -> None:
    """logging.shutdown() flushes every handler at exit: a line made just before is kept."""
    configure_logging("info", "plain", stream)
    accepted(1)
    logging.shutdown()
    assert len(stream.lines()) == 1
    await asyncio.sleep(0)
    assert len(stream.lines()) == 1


def test_without_a_running_loop_a_line_is_written_at_once(stream: Writes) -> None:
    configure_logging("info", "plain", stream)
    accepted(1)
    assert len(stream.writes) == 1


async def test_a_line_from_another_thread_is_written_at_once(stream: Writes) -> None:
    configure_logging("info", "plain", stream)
    thread = threading.Thread(target=accepted, args=(1,))
    thread.start()
    thread.join()
    assert len(stream.writes) == 1


async def test_a_stream_without_a_descriptor_gets_each_line_at_once() -> None:
    text = io.StringIO()
    handler = BatchingHandler(text)
    handler.add_line("one")
    assert text.getvalue() == "one\n"


async def test_writes_hold_whole_lines_of_at_most_pipe_buf_octets(stream: Writes) -> None:
    configure_logging("info", "plain", stream)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, BatchingHandler)
    lines = ["a" * 1000, "é" * 1000, "b" * 1500, "c" * 10_000, "d" * 10, "e" * 4000]
    for line in lines:
        handler.add_line(line)
    await asyncio.sleep(0)
    sizes = [len(write.encode()) for write in stream.writes]
    assert stream.lines() == lines
    assert all(write.endswith("\n") for write in stream.writes)
    # 1001 + 2001 octets; 1501 (with the 10,001 it would pass 4096); 10,001 alone;
    # 11 + 4001
    assert sizes == [3002, 1501, 10_001, 4012]
    assert ATOMIC_WRITE >= 512


def test_chunks_keep_every_line_in_order() -> None:
    lines = [f"{n:04d}" * (n % 7 + 1) + "\n" for n in range(500)]
    chunks = _chunks(lines, 100)
    assert "".join(chunks) == "".join(lines)
    assert all(len(chunk) <= 100 for chunk in chunks)
    assert _chunks(["x" * 200], 100) == ["x" * 200]


async def test_a_failing_stream_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(Writes):
        def write(self, text: str) -> int:
            raise OSError(32, "Broken pipe")

    handler = BatchingHandler(Broken())
    handler.add_line("one")
    await asyncio.sleep(0)
    assert "Broken pipe" in capsys.readouterr().err


async def test_a_pipe_gets_the_lines_of_a_pass_in_one_write() -> None:
    """The real thing: a pipe, as under a supervisor or systemd."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    with open(write_end, "w", encoding="utf-8") as pipe, open(read_end, "rb") as reader:
        handler = BatchingHandler(pipe)
        for n in range(3):
            handler.add_line(f"line {n}")
        assert reader.read() is None  # nothing written yet
        await asyncio.sleep(0)
        assert reader.read() == b"line 0\nline 1\nline 2\n"


def test_a_loop_closed_before_its_write_does_not_hold_the_next_loops_lines(
    stream: Writes,
) -> None:
    """asyncio.run() twice (a test, an embedding program): the first loop ends before its
    pass writes its last line; the next loop's lines are written at its own pass."""
    configure_logging("info", "plain", stream)

    async def last_line() -> None:
        accepted(1)
        asyncio.get_running_loop().stop()  # the loop ends with this pass

    loop = asyncio.new_event_loop()
    task = loop.create_task(last_line())
    loop.run_forever()  # the write is scheduled for the next pass, which never comes
    loop.close()
    assert task.done()
    assert stream.writes == []

    async def lines_then_a_pass() -> None:
        accepted(2)
        await asyncio.sleep(0)

    asyncio.run(lines_then_a_pass())
    assert [line.split()[-2] for line in stream.lines()] == ["local_id=m1", "local_id=m2"]


def test_a_new_stream_is_batched_as_its_kind_says() -> None:
    handler = BatchingHandler(io.StringIO())
    text = Writes()
    handler.setStream(text)
    assert handler._batching
