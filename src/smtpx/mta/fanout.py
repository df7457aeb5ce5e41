"""Asking every worker's private control socket, and merging what they say: the parts of
:mod:`smtpx.mta.aggregate` that are not HTTP handlers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from smtpx.io.tasks import cancel_and_wait

__all__ = [
    "Answer",
    "Families",
    "Family",
    "WorkerClient",
    "WorkerDown",
    "merge_cache",
    "merge_families",
    "merge_metrics",
    "merge_streams",
    "parse_metrics",
    "render_metrics",
    "sum_counts",
    "worker_counter",
]


class WorkerDown(Exception):
    """A worker's control socket does not answer (it is starting or restarting)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One worker's answer: status, body, content type and the headers worth passing on."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


PASSED_HEADERS = ("X-Smtpx-Damaged",)


class WorkerClient:
    """HTTP over one worker's unix socket (a new connection per request: a restarted
    worker is reached at once)."""

    def __init__(self, index: int, path: Path, timeout: float = 30.0) -> None:
        self.index = index
        self.path = path
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def _client(self, timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientSession:
        connector = aiohttp.UnixConnector(path=str(self.path), force_close=True)
        return aiohttp.ClientSession(connector=connector, timeout=timeout or self.timeout)

    async def call(
        self, method: str, path: str, query: Mapping[str, str] | None = None, body: Any = None
    ) -> Answer:
        try:
            async with (
                self._client() as session,
                session.request(method, f"http://worker{path}", params=query, json=body) as reply,
            ):
                data = await reply.read()
                headers = {h: reply.headers[h] for h in PASSED_HEADERS if h in reply.headers}
                return Answer(reply.status, data, reply.content_type, headers)
        except (aiohttp.ClientConnectionError, OSError, TimeoutError) as exc:
            raise WorkerDown(f"worker {self.index} does not answer ({exc})") from None

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, query: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An NDJSON stream: the response, open (its status may be an error)."""
        async with self._client(aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
            try:
                reply = await session.get(f"http://worker{path}", params=query)
            except (aiohttp.ClientConnectionError, OSError) as exc:
                raise WorkerDown(f"worker {self.index} does not answer ({exc})") from None
            async with reply:
                yield reply


RECONNECT_DELAY = 0.2  # seconds between attempts to reach a restarting worker's stream


async def merge_streams(
    replies: list[tuple[WorkerClient, aiohttp.ClientResponse]],
    path: str,
    query: Mapping[str, str],
    *,
    tag: bool,
) -> AsyncGenerator[bytes, None]:
    """The lines of every reply as they come (each with ``"worker": I`` when ``tag``),
    for as long as the caller reads. When one worker's stream ends (the worker stopped:
    the supervisor restarts it), it is asked again for ``path`` until it answers, and its
    lines go on; what happened while it was down is not in the stream."""
    lines: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)

    async def pump(worker: WorkerClient, reply: aiohttp.ClientResponse) -> None:
        index = worker.index if tag else None
        await _pump_lines(reply, lines, index)
        while True:
            await asyncio.sleep(RECONNECT_DELAY)
            with contextlib.suppress(WorkerDown):
                async with worker.stream(path, query) as again:
                    if again.status == 200:
                        await _pump_lines(again, lines, index)

    tasks = [asyncio.ensure_future(pump(worker, reply)) for worker, reply in replies]
    try:
        while True:
            yield await lines.get()
    finally:
        await cancel_and_wait(tasks)


async def _pump_lines(
    reply: aiohttp.ClientResponse, lines: asyncio.Queue[bytes], index: int | None
) -> None:
    """``reply``'s non-blank lines into ``lines`` until it ends."""
    try:
        async for line in reply.content:
            if line.strip():
                await lines.put(line if index is None else _tagged(line, index))
    except (aiohttp.ClientError, OSError):
        pass


def _tagged(line: bytes, index: int) -> bytes:
    try:
        data = json.loads(line)
    except ValueError:
        return line
    if isinstance(data, dict):
        data["worker"] = index
    return json.dumps(data).encode() + b"\n"


def sum_counts(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Numbers added key by key (the first's value for a key that is not a number)."""
    total: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
            else:
                total.setdefault(key, value)
    return total


def merge_cache(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /v1/cache`` of every worker as one: counts added, destination by destination."""
    total = sum_counts({k: v for k, v in part.items() if k != "destinations"} for part in parts)
    names = dict.fromkeys(name for part in parts for name in part.get("destinations", {}))
    total["destinations"] = {
        name: sum_counts(p["destinations"][name] for p in parts if name in p["destinations"])
        for name in names
    }
    return total


@dataclass
class Family:
    """One metric family of a Prometheus text exposition."""

    comments: list[str]  # its "# HELP" and "# TYPE" lines
    kind: str  # counter, gauge, histogram... ("" without a TYPE line)
    samples: dict[str, float]  # sample (name and labels) -> value


Families = dict[str, Family]  # by name, in the exposition's order


def parse_metrics(text: str) -> Families:
    """A text exposition's families (samples before any comment: family "")."""
    families: Families = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# "):
            parts = line.split(" ", 3)
            name = parts[2] if len(parts) > 2 else ""
            current = families.setdefault(name, Family([], "", {}))
            current.comments.append(line)
            if parts[1] == "TYPE" and len(parts) > 3:
                current.kind = parts[3].strip()
        elif line.strip():
            if current is None:
                current = families.setdefault("", Family([], "", {}))
            key, _, value = line.rpartition(" ")
            current.samples[key] = float(value)
    return families


def render_metrics(families: Families) -> str:
    """The text exposition of ``families``."""
    lines = []
    for family in families.values():
        lines += family.comments
        lines += (f"{key} {_number(value)}" for key, value in family.samples.items())
    return "\n".join(lines) + "\n"


def merge_families(
    parts: Iterable[Families], *, first_only: frozenset[str] = frozenset()
) -> Families:
    """Families added sample by sample (same name and labels), the comments of the first
    part that has each; ``*_created`` samples keep the earliest. The families in
    ``first_only`` come from the first part alone."""
    merged: Families = {}
    for number, part in enumerate(parts):
        for name, family in part.items():
            into = merged.setdefault(name, Family(family.comments, family.kind, {}))
            if number and name in first_only:
                continue
            for key, value in family.samples.items():
                into.samples[key] = _combine(key, into.samples.get(key), value)
    return merged


def merge_metrics(texts: list[str], *, first_only: frozenset[str] = frozenset()) -> str:
    """Prometheus text expositions added as :func:`merge_families` does (the shared
    queue's counts, the same in every one, in ``first_only``)."""
    parts = [parse_metrics(text) for text in texts]
    return render_metrics(merge_families(parts, first_only=first_only))


def _combine(key: str, old: float | None, new: float) -> float:
    if old is None:
        return new
    if key.partition("{")[0].endswith("_created"):
        return min(old, new)
    return old + new


def _number(value: float) -> str:
    """A sample value as Prometheus writes it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def worker_counter(answers: Iterable[Mapping[str, Any]], key: str) -> Counter[str]:
    """The ``key`` dict of each answer, added up."""
    total: Counter[str] = Counter()
    for answer in answers:
        total.update(answer.get(key, {}))
    return total
