"""The journal's group commits, synced by a helper process instead of a thread.

Why: group commits synced in a worker thread cost the event loop's process 3.8
voluntary context switches a message with kept connections and 6.6 with a new
connection per message (measured; the same server without a spool: none).
The worker needs the GIL back after its write, after its ``fdatasync`` and after waking
the loop, and each time it waits for the loop thread to let go of it, at the loop's next
system call. A process holds no GIL: the loop writes the group itself (into the page
cache: microseconds) and hands the file to :mod:`smtpx.spool.fsync_helper`, whose answer
arrives as one more readable socket in the loop's ``epoll``. On ``smtpx serve`` intake
this took 12-17% of the CPU a message costs (``docs/performance.md``).

What the sync means does not change: ``fdatasync`` flushes the file, whichever process
asks (the helper gets the journal's own open file, ``SCM_RIGHTS``), and a group is
acknowledged only once the helper answered that its call succeeded. The helper's
``errno`` is raised here as the :class:`OSError` it was; a helper that is gone (killed,
out of memory) fails the group it had not answered with :class:`HelperGone`: the
journal treats both as a failed fsync (the group is refused and never retried on that
segment), and starts a new helper for the next group. A request that could not even be
sent (:class:`HelperUnreachable`: the helper had ended) is sent to a new helper.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

from smtpx.compiled import mypyc_attr
from smtpx.spool.fsync_helper import ANSWER, REQUEST

__all__ = ["FsyncHelper", "HelperGone", "HelperUnreachable", "helper_supported"]

log = logging.getLogger("smtpx.spool")
_PROGRAM = Path(__file__).with_name("fsync_helper.py")
_DESCRIPTOR = struct.Struct("i")  # one file descriptor in SCM_RIGHTS data


@mypyc_attr(native_class=False)
class HelperGone(OSError):
    """The helper process ended before it answered."""


@mypyc_attr(native_class=False)
class HelperUnreachable(HelperGone):
    """The helper process had ended before the request could be sent: it never saw it."""


def helper_supported() -> bool:
    """Whether this platform can pass a file to another process (Linux and the BSDs)."""
    return hasattr(socket, "send_fds") and hasattr(os, "fdatasync") and _PROGRAM.exists()


class FsyncHelper:
    """One helper process and the requests it has not answered yet, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the helper (raises :class:`OSError` when it cannot be started)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = [sys.executable, "-I", "-S", str(_PROGRAM), str(theirs.fileno())]
            self._process = subprocess.Popen(
                argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._channel = ours
        self._loop = loop
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._sequence = 0
        self.gone = False
        loop.add_reader(ours.fileno(), self._answers)

    @property
    def pid(self) -> int:
        return self._process.pid

    async def sync(self, fd: int) -> None:
        """``fdatasync(fd)`` in the helper; raises the :class:`OSError` it got, or
        :class:`HelperGone`."""
        if self.gone:
            raise HelperUnreachable(errno.EPIPE, "the fsync helper has ended")
        self._sequence += 1
        future: asyncio.Future[None] = self._loop.create_future()
        try:
            # (what ``socket.send_fds`` sends, without its interpreted frame)
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, _DESCRIPTOR.pack(fd))
            self._channel.sendmsg([REQUEST.pack(self._sequence)], [rights])
        except OSError as exc:
            why = f"cannot reach the fsync helper: {exc}"
            self._end(why)
            raise HelperUnreachable(errno.EPIPE, why) from exc
        self._waiting.append((self._sequence, future))
        await future

    def _answers(self) -> None:
        while True:
            try:
                data = self._channel.recv(ANSWER.size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._end(f"the fsync helper's socket failed: {exc}")
                return
            if len(data) != ANSWER.size or not self._waiting:
                self._end("the fsync helper has ended" if not data else "a stray answer")
                return
            sequence, error = ANSWER.unpack(data)
            expected, future = self._waiting.popleft()
            if sequence != expected:
                self._end(f"answer {sequence} where {expected} was due")
                if not future.done():
                    future.set_exception(HelperGone(errno.EPROTO, "the fsync helper lost count"))
                return
            if future.done():
                continue
            if error:
                future.set_exception(OSError(error, os.strerror(error)))
            else:
                future.set_result(None)

    def _end(self, why: str) -> None:
        """Stop using the helper: fail what it has not answered."""
        if self.gone:
            return
        self.gone = True
        if self._waiting:
            log.error("spool journal: %s; %d group(s) unanswered", why, len(self._waiting))
        if not self._loop.is_closed():
            self._loop.remove_reader(self._channel.fileno())
        self._channel.close()
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(HelperGone(errno.EPIPE, why))

    def close(self) -> None:
        """Close our end (the helper stops on it) and reap the helper."""
        self._end("closed")
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
