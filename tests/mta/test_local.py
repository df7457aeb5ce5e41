"""Local maildir delivery: what reaches the disk, and in which order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpx.mta import local
from smtpx.mta.local import MaildirAgent
from tests.mta.helpers import sending


async def test_the_message_then_its_name_in_new_are_flushed_before_the_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync of the file in tmp/, the rename into new/, then fsync of new/ itself: a crash
    after the spool forgot the message cannot leave it in tmp/ (readers skip tmp/)."""
    steps: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        steps.append("fsync " + str(Path(os.readlink(f"/proc/self/fd/{fd}")).relative_to(tmp_path)))
        real_fsync(fd)

    def rename(source: str | Path, target: str | Path) -> None:
        steps.append("rename")
        real_rename(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    agent = MaildirAgent(tmp_path, hostname="h")
    results = await agent.deliver(sending("bob@example.org"), b"Subject: hi\r\n\r\nbody\r\n")
    assert [reply.code for _, reply in results] == [250]
    name = next((tmp_path / "example.org" / "bob" / "new").iterdir()).name
    assert steps == [
        f"fsync example.org/bob/tmp/{name}",
        "rename",
        "fsync example.org/bob/new",
    ]


async def test_a_directory_that_cannot_be_flushed_fails_the_recipient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename might not survive a crash: the recipient is tried again (a reader may
    see the message twice, never lose it)."""

    def failing(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local, "fsync_directory", failing)
    agent = MaildirAgent(tmp_path, hostname="h")
    [(recipient, reply)] = await agent.deliver(
        sending("bob@example.org"), b"Subject: x\r\n\r\n.\r\n"
    )
    assert recipient == "bob@example.org" and not reply.is_completion
    assert "Input/output error" in str(reply)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_chunks_turn_crlf_into_lf_however_they_are_cut(size: int) -> None:
    content = b"a\r\n\r\nb\rc\r\n.d\n\r\r\n" * 3 + b"\r"
    chunks = [content[i : i + size] for i in range(0, len(content), size)]
    parts = list(local.lf_chunks(chunks))
    assert b"".join(parts) == content.replace(b"\r\n", b"\n")
    assert all(len(part) <= size + 1 for part in parts)


async def test_a_message_larger_than_a_slice_reaches_the_maildir_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "SLICE", 7)  # many slices, CRLFs across their edges
    content = b"Subject: sliced\r\n\r\n" + b"line one\r\n.dot\r\n" * 50
    agent = MaildirAgent(tmp_path, hostname="h")
    [(_, reply)] = await agent.deliver(sending("bob@example.org"), content)
    assert reply.code == 250
    (path,) = (tmp_path / "example.org" / "bob" / "new").iterdir()
    expected = b"Return-Path: <me@example.com>\nDelivered-To: bob@example.org\n"
    assert path.read_bytes() == expected + content.replace(b"\r\n", b"\n")


class Unreadable:
    """Content whose second read fails (the spool's disk), as a stored body's would."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.passes = 0

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        self.passes += 1
        if self.passes == 2:
            raise OSError(5, "Input/output error")
        yield self.content


async def test_content_that_cannot_be_read_is_not_the_mailbox_s_fault(tmp_path: Path) -> None:
    """The first recipient has the message; the second gets a 4xx that names the
    message, not its mailbox, and no half-written file is left in its tmp/."""
    agent = MaildirAgent(tmp_path, hostname="h")
    content = Unreadable(b"Subject: x\r\n\r\nbody\r\n")
    (first, ok), (second, failed) = await agent.deliver(
        sending("a@example.org", "b@example.org"), content
    )
    assert (first, ok.code) == ("a@example.org", 250)
    assert second == "b@example.org" and not failed.is_completion
    assert str(failed) == "451 4.3.0 Cannot read the message: Input/output error"
    assert [p for p in (tmp_path / "example.org" / "b").rglob("*") if p.is_file()] == []
