"""Where a control plane listens, and who may talk to it: shared by one MTA's control
plane (:mod:`smtpx.mta.control`) and the workers' supervisor (:mod:`smtpx.mta.aggregate`).

The unix socket is created mode 0600 from the start (there is no moment where others
could connect) and is guarded by that mode; a loopback TCP listener needs a token, and
every request over it must bear it (``Authorization: Bearer TOKEN``).
"""

from __future__ import annotations

import contextlib
import hmac
import os
from pathlib import Path

from aiohttp import web

__all__ = ["close_sites", "open_sites", "token_refused"]


async def open_sites(
    app: web.Application,
    socket_path: Path | None,
    http: tuple[str, int] | None,
    token: str | None,
) -> tuple[web.AppRunner, int | None]:
    """Serve ``app`` on the socket and/or TCP; the runner and the TCP port it got."""
    if http is not None and not token:
        raise ValueError("the HTTP control listener needs a token (control.token_file)")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if socket_path is not None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        old = os.umask(0o177)
        try:
            await web.UnixSite(runner, str(socket_path)).start()
        finally:
            os.umask(old)
    if http is None:
        return runner, None
    await web.TCPSite(runner, http[0], http[1]).start()
    ports = [a[1] for a in runner.addresses if isinstance(a, tuple)]
    return runner, int(ports[0]) if ports else http[1]


async def close_sites(runner: web.AppRunner | None, socket_path: Path | None) -> None:
    if runner is not None:
        await runner.cleanup()
    if socket_path is not None:
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def token_refused(request: web.Request, token: str | None) -> bool:
    """Whether ``request`` came over TCP without the right bearer token (a unix socket's
    peer name is a str, or None: its file mode guards it)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peer, tuple):
        return False
    # A header is not always UTF-8: its undecodable bytes come back as surrogates.
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    expected = f"Bearer {token}" if token else None
    return expected is None or not hmac.compare_digest(given, expected.encode())
