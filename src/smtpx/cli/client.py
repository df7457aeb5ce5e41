"""Talking to a running ``smtpx serve``: its control plane (see
:mod:`smtpx.mta.control` for the API), over the unix socket or over loopback HTTP with a
bearer token.

Errors become :class:`~smtpx.cli.common.Failure` with the documented exit codes: 3 when the
daemon cannot be reached (or the connection is lost), 2 for a refused token or a request
the API calls bad, 1 when the API refuses the operation (unknown id, wrong state).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import click

from smtpx.cli.common import EXIT_FAILURE, EXIT_UNREACHABLE, EXIT_USAGE, Failure
from smtpx.cli.locate import describe_down
from smtpx.errors import describe

__all__ = ["ControlClient", "Target", "watch"]

REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where the control plane is: a unix socket, or an ``http://`` URL and a token."""

    socket: Path | None = None
    url: str | None = None
    token: str | None = None
    found: str = "--socket"  # how the socket was found (said when nothing answers there)
    offline: bool = False  # the command also works --offline (suggested when down)

    def describe(self) -> str:
        if self.socket is not None:
            return f"the smtpx control socket at {self.socket}"
        return f"the smtpx control plane at {self.url}"


class ControlClient:
    """An aiohttp session on the control plane; an async context manager."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ControlClient:
        headers = {"Accept": "application/json"}
        if self.target.token:
            headers["Authorization"] = f"Bearer {self.target.token}"
        timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=None)
        if self.target.socket is not None:
            connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=str(self.target.socket))
            base = "http://smtpx"
        else:
            assert self.target.url is not None
            connector = aiohttp.TCPConnector()
            base = self.target.url.rstrip("/")
        self._session = aiohttp.ClientSession(
            base_url=base + "/", connector=connector, headers=headers, timeout=timeout
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use ControlClient as an async context manager"
        return self._session

    # -- requests ----------------------------------------------------------------------

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        async with self._request("GET", path, params=params) as response:
            return await self._json(response)

    async def post_json(self, path: str, body: Mapping[str, Any]) -> Any:
        async with self._request("POST", path, json=body) as response:
            return await self._json(response)

    async def get_bytes(self, path: str, params: Mapping[str, str] | None = None) -> bytes:
        async with self._request("GET", path, params=params) as response:
            try:
                return await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._lost(exc) from None

    @contextlib.asynccontextmanager
    async def stream(self, path: str) -> AsyncIterator[aiohttp.StreamReader]:
        """The body of a streaming response (NDJSON events), as it arrives."""
        async with self._request("GET", path, timeout=None) as response:
            yield response.content

    def _lost(self, exc: BaseException) -> Failure:
        detail = describe(exc)
        return Failure(
            f"lost the connection to {self.target.describe()} ({detail})", EXIT_UNREACHABLE
        )

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        timeout: float | None = REQUEST_TIMEOUT,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        where = self.target.describe()
        try:
            response = await self.session.request(
                method,
                path.lstrip("/"),
                params=params,
                json=json,
                timeout=aiohttp.ClientTimeout(total=timeout, connect=10.0),
            )
        except aiohttp.ClientConnectorError as exc:
            raise Failure(_unreachable(self.target, exc.os_error), EXIT_UNREACHABLE) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._lost(exc) from None
        try:
            if response.status >= 400:
                raise await _refusal(response, where)
            yield response
        finally:
            response.release()

    async def _json(self, response: aiohttp.ClientResponse) -> Any:
        try:
            return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._lost(exc) from None
        except ValueError:
            raise Failure(
                f"{self.target.describe()} answered something that is not JSON "
                "(is this really smtpx serve?)",
                EXIT_UNREACHABLE,
            ) from None


def _unreachable(target: Target, error: OSError) -> str:
    where = target.describe()
    if isinstance(error, PermissionError):
        return (
            f"cannot reach {where}: permission denied (the socket is mode 0600: run this "
            "as the user smtpx serve runs as)"
        )
    if target.socket is not None and isinstance(error, FileNotFoundError | ConnectionRefusedError):
        return describe_down(target.socket, target.found, offline=target.offline)
    hint = " (or read the spool on disk with --offline)" if target.offline else ""
    return f"cannot reach {where}: {error.strerror or error}{hint}"


async def _refusal(response: aiohttp.ClientResponse, where: str) -> Failure:
    try:
        text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        text = ""
    try:
        body = json.loads(text)
        message = str(body["error"]) if isinstance(body, dict) and "error" in body else text
    except ValueError:
        message = text.strip() or response.reason or "no detail"
    if response.status == 401:
        return Failure(
            f"{where} refused the request: {message} (give the right --token-file)", EXIT_USAGE
        )
    if response.status == 400:
        return Failure(message, EXIT_USAGE)
    if response.status in (404, 409):
        return Failure(message, EXIT_FAILURE)
    return Failure(f"{where} answered {response.status}: {message}", EXIT_FAILURE)


async def watch(
    target: Target, path: str, *, follow: bool, timeout: float, what: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The NDJSON lines of the stream at ``path``, as (text, object). Without ``follow``,
    it ends after ``timeout`` seconds or at the first ping or heartbeat (included),
    whichever comes first."""
    loop = asyncio.get_running_loop()
    deadline = None if follow else loop.time() + timeout
    async with ControlClient(target) as client, client.stream(path) as content:
        how = "until interrupted" if follow else f"for up to {timeout:g}s"
        click.echo(f"watching {what} of {target.describe()} {how}", err=True)
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    line = await content.readline()
            except TimeoutError:
                return
            except aiohttp.ClientError as exc:
                raise Failure(
                    f"lost the connection to {target.describe()} ({exc})", EXIT_UNREACHABLE
                ) from None
            if not line:
                raise Failure(
                    f"{target.describe()} closed the {what} stream (is smtpx serve stopping?)",
                    EXIT_UNREACHABLE,
                )
            text = line.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                event = {"kind": "?", "detail": text}
            yield text, event
            if event.get("kind") in ("ping", "heartbeat") and not follow:
                return
