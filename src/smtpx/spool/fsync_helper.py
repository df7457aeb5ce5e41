"""The journal's fsync helper: a small process that syncs the segment files it is handed.

Run by :class:`smtpx.spool.syncer.FsyncHelper` as ``python -I -S <this file> <fd>``, with
one end of a ``SOCK_SEQPACKET`` socket pair as ``<fd>``. Each request is an 8-octet
sequence number with one file descriptor attached (``SCM_RIGHTS``: the same open file
as the journal's); the helper calls ``fdatasync`` on it, closes it, and answers with the
sequence number and the ``errno`` it got (0: the data is on disk). It stops when the
journal closes its end (or dies). SIGINT and SIGTERM are ignored: a Ctrl-C or a stop
sent to the whole process group must not take the helper away from a journal that is
still draining; the journal's end closing is what stops it.

Only the standard library, and nothing of smtpx: ``-S`` skips site-packages and ``-I``
keeps this directory off the path (its ``types.py`` would hide the standard one), so the
helper starts in a few milliseconds and needs nothing installed.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import sys

REQUEST = struct.Struct("<Q")  # sequence number
ANSWER = struct.Struct("<Qi")  # sequence number, errno (0: synced)


def serve(channel: socket.socket) -> None:
    """Answer requests until the other end closes."""
    while True:
        try:
            data, fds, _flags, _address = socket.recv_fds(channel, REQUEST.size, 1)
        except ConnectionError:
            return
        if not data:
            return
        error = errno.EBADF if not fds else 0
        for fd in fds:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                error = exc.errno or errno.EIO
            finally:
                os.close(fd)
        (sequence,) = REQUEST.unpack(data[: REQUEST.size].ljust(REQUEST.size, b"\0"))
        channel.send(ANSWER.pack(sequence, error))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = socket.socket(fileno=int(argv[1]))
    try:
        serve(channel)
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
