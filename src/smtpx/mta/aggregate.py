"""The control plane of ``[server] workers = N``: one MTA to operators and the CLI.

The supervisor serves the configured control socket (and HTTP with its token); each
worker serves its own private socket (:func:`smtpx.mta.workers.worker_socket`). Every
endpoint of :mod:`smtpx.mta.control` and :mod:`smtpx.mta.observe` is answered by asking
the workers and merging:

* the queue (list, count, one message, the actions, events): with the journal each worker
  has its own shard, so lists are joined (oldest first), counts added, a message is shown
  by the worker that has it, and an action on ids goes to the worker holding each id (an
  id no worker has: 404, nothing done). ``send`` of all or of the frozen goes to all.
  With PostgreSQL the queue is shared: one worker answers for it.
* ``/v1/server``, ``/v1/cache``: counts added; ``/v1/server`` lists each worker
  (``workers``: index, pid, restarts, sessions, its stats).
* ``/metrics``: every sample added across workers (``smtpx_queue_messages`` of a shared
  queue from one worker), plus ``smtpx_workers_up`` and ``smtpx_worker_restarts_total``;
  a restarted worker's counters go on from its earlier lives', and a worker restarting
  is shown as last seen (:mod:`smtpx.mta.workermetrics`): no counter goes down.
* ``/healthz``: ``ok`` when every worker answers and accepts, else 503 ``degraded``.
* streams (events, errors, envelopes, cache): merged as they come, each line with
  ``"worker": I``; when a worker restarts, its stream is opened again and the merged
  one goes on (without what happened while the worker was down).

A worker that does not answer (restarting) makes the queue endpoints answer 503: a
partial list would look like lost mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from smtpx._version import __version__
from smtpx.mta import console
from smtpx.mta.console.rates import merge_rates
from smtpx.mta.controlsite import ControlSite, json_error, list_limit
from smtpx.mta.fanout import (
    Answer,
    WorkerClient,
    WorkerDown,
    merge_cache,
    merge_metrics,
    merge_streams,
    sum_counts,
    worker_counter,
)
from smtpx.mta.workermetrics import WorkerMetrics

__all__ = ["Aggregator", "Pool"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ACTIONS = ("freeze", "remove", "recover", "purge", "send", "quarantine")
_JSON = "application/json"
_STREAMS = ("/v1/spool/events", "/v1/errors", "/v1/server/envelopes", "/v1/cache/stream")


class Pool(Protocol):
    """What the aggregator knows of the workers (the supervisor)."""

    def status(self) -> list[dict[str, Any]]:
        """One entry a worker: ``worker``, ``pid``, ``running``, ``restarts``."""
        ...


class Aggregator(ControlSite):
    """The public control plane of a supervisor (see the module docstring)."""

    def __init__(
        self,
        pool: Pool,
        sockets: list[Path],
        *,
        shared_queue: bool,
        socket_path: Path | None,
        http: tuple[str, int] | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(socket_path=socket_path, http=http, token=token)
        self.pool = pool
        self.workers = [WorkerClient(index, path) for index, path in enumerate(sockets)]
        self.shared_queue = shared_queue
        self.worker_metrics = WorkerMetrics()
        # The web console's page and cross-origin check come first, as on one MTA.
        self.app.middlewares.insert(0, console.front)
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/metrics", self.metrics),
                web.get("/v1/spool/messages", self.list_messages),
                web.get("/v1/spool/count", self.count),
                web.get("/v1/spool/messages/{id}", self.show),
                *(web.post(f"/v1/spool/{action}", self.action) for action in _ACTIONS),
                *(web.get(path, self.stream) for path in _STREAMS),
                web.get("/v1/cache", self.cache),
                web.get("/v1/server", self.server),
                web.get("/v1/process", self.process),
                web.post("/v1/tls/reload", self.reload_tls),
                web.get("/v1/console/shape", self.console_shape),
                web.get("/v1/console/rates", self.console_rates),
            ]
        )

    def error_reply(self, exc: Exception) -> web.Response | None:
        if isinstance(exc, _Refused):
            return exc.response
        if isinstance(exc, WorkerDown):
            return json_error(503, str(exc))
        return super().error_reply(exc)

    # -- asking the workers ---------------------------------------------------------------

    def _queue_workers(self) -> list[WorkerClient]:
        """Who answers for the queue: all (shards), or the first (a shared queue)."""
        return self.workers[:1] if self.shared_queue else self.workers

    async def _all(
        self,
        method: str,
        path: str,
        query: Any = None,
        body: Any = None,
        workers: list[WorkerClient] | None = None,
    ) -> list[Any]:
        """Every worker's JSON answer; the first error answer is the request's."""
        chosen = self.workers if workers is None else workers
        answers = await asyncio.gather(*(w.call(method, path, query, body) for w in chosen))
        for answer in answers:
            _ok(answer)
        return [answer.json() for answer in answers]

    # -- handlers -------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        workers = self.pool.status()
        answers = await asyncio.gather(
            *(w.call("GET", "/healthz") for w in self.workers), return_exceptions=True
        )
        for entry, answer in zip(workers, answers, strict=True):
            # Alive and accepting (a worker starting waits for the supervisor's word).
            entry["healthy"] = (
                isinstance(answer, Answer)
                and answer.status == 200
                and answer.json().get("serving", True) is True
            )
        healthy = all(entry["healthy"] for entry in workers)
        return web.json_response(
            {
                "status": "ok" if healthy else "degraded",
                "version": __version__,
                "uptime": time.time() - self.started,
                "workers": workers,
            },
            status=200 if healthy else 503,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        before = self.pool.status()
        answers = await asyncio.gather(
            *(w.call("GET", "/metrics") for w in self.workers), return_exceptions=True
        )
        after = self.pool.status()
        texts = []
        for worker, answer, was, now in zip(self.workers, answers, before, after, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, WorkerDown):
                raise answer
            # The answer is the process's whose pid the supervisor gave before and after.
            pid = now["pid"] if was["pid"] == now["pid"] else None
            if isinstance(answer, Answer) and answer.status == 200 and pid is not None:
                texts.append(self.worker_metrics.seen(worker.index, pid, answer.body.decode()))
            elif (last := self.worker_metrics.last(worker.index)) is not None:
                texts.append(last)  # restarting: as last seen (smtpx_workers_up says so)
        shared = frozenset({"smtpx_queue_messages"}) if self.shared_queue else frozenset()
        body = merge_metrics([*texts, self._own_metrics()], first_only=shared)
        return web.Response(
            body=body.encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    def _own_metrics(self) -> str:
        lines = [
            "# HELP smtpx_workers_up Worker processes running, of [server] workers",
            "# TYPE smtpx_workers_up gauge",
            "# HELP smtpx_worker_restarts_total Worker processes restarted after they died",
            "# TYPE smtpx_worker_restarts_total counter",
        ]
        for entry in self.pool.status():
            label = f'{{worker="{entry["worker"]}"}}'
            lines.insert(2, f"smtpx_workers_up{label} {int(entry['running'])}")
            lines.append(f"smtpx_worker_restarts_total{label} {entry['restarts']}")
        return "\n".join(lines) + "\n"

    async def list_messages(self, request: web.Request) -> web.Response:
        limit = list_limit(request.query.get("limit"))
        parts = await self._listings(request)
        messages = _oldest_first(parts)
        return web.json_response(
            {
                "messages": messages if limit is None else messages[:limit],
                "total": sum(part.get("total", len(part["messages"])) for part in parts),
            }
        )

    async def _messages(self, request: web.Request) -> list[dict[str, Any]]:
        """The queue as the workers list it (with the request's filters), oldest first."""
        return _oldest_first(await self._listings(request))

    async def _listings(self, request: web.Request) -> list[dict[str, Any]]:
        # Each worker applies the filters and the limit (its N oldest hold the N oldest
        # of all); the merge keeps the N oldest of theirs.
        return await self._all(
            "GET", "/v1/spool/messages", request.query, None, self._queue_workers()
        )

    async def console_shape(self, request: web.Request) -> web.Response:
        by = request.query.get("by", "recipient")
        return web.json_response(console.shape_json(await self._messages(request), by))

    async def console_rates(self, request: web.Request) -> web.Response:
        # A shared queue: every worker hears every event, so one worker's count is all.
        parts = await self._all("GET", request.path, None, None, self._queue_workers())
        return web.json_response(merge_rates(parts))

    async def count(self, request: web.Request) -> web.Response:
        parts = await self._all("GET", request.path, request.query, None, self._queue_workers())
        by_status = worker_counter(parts, "by_status")
        return web.json_response(
            {"count": sum(p["count"] for p in parts), "by_status": dict(by_status)}
        )

    async def show(self, request: web.Request) -> web.Response:
        answers = [
            await worker.call("GET", request.path, request.query)
            for worker in self._queue_workers()
        ]
        found = next((a for a in answers if a.status != 404), answers[0])
        return web.Response(
            body=found.body,
            status=found.status,
            content_type=found.content_type,
            headers=found.headers,
        )

    async def action(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        ids = body.get("ids", [])
        if self.shared_queue or not ids or not isinstance(ids, list):
            # A shared queue, or no ids (send all / frozen; or a body the workers refuse).
            parts = await self._all("POST", request.path, None, body, self._queue_workers())
            return web.json_response(_merge_action(parts))
        owners = await self._owners(ids)
        chosen = sorted(set(owners.values()))
        calls = [
            self.workers[index].call(
                "POST", request.path, None, {**body, "ids": [i for i in ids if owners[i] == index]}
            )
            for index in chosen
        ]
        answers = [_ok(answer).json() for answer in await asyncio.gather(*calls)]
        return web.json_response(_merge_action(answers, ids))

    async def _owners(self, ids: list[Any]) -> dict[str, int]:
        """The worker holding each id (404, nothing done, for an id none holds)."""
        parts = await self._all("GET", "/v1/spool/messages")
        where = {m["id"]: n for n, part in enumerate(parts) for m in part["messages"]}
        for message_id in ids:
            if message_id not in where:
                raise _Refused(json_error(404, f"{message_id}: not found"))
        return {message_id: where[message_id] for message_id in ids}

    async def stream(self, request: web.Request) -> web.StreamResponse:
        workers = self.workers
        if request.path == "/v1/spool/events":
            workers = self._queue_workers()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(self.streams.streaming())
            replies = [
                (w, await stack.enter_async_context(w.stream(request.path, request.query)))
                for w in workers
            ]
            for _, reply in replies:
                if reply.status != 200:  # a bad ?ping=, say: the same for every worker
                    body = await reply.read()
                    return web.Response(body=body, status=reply.status, content_type=_JSON)
            await response.prepare(request)
            merged = await stack.enter_async_context(
                contextlib.aclosing(
                    merge_streams(replies, request.path, request.query, tag=len(workers) > 1)
                )
            )
            async for line in merged:
                try:
                    await response.write(line)
                except (ConnectionError, RuntimeError):
                    break
        return response

    async def cache(self, request: web.Request) -> web.Response:
        return web.json_response(merge_cache(await self._all("GET", request.path)))

    async def server(self, request: web.Request) -> web.Response:
        parts = await self._all("GET", request.path)
        workers = self.pool.status()
        for entry, part in zip(workers, parts, strict=True):
            entry.update(sessions=part["sessions"], stats=part["stats"], spool=part["spool"])
        merged = {
            **parts[0],
            "sessions": sum(p["sessions"] for p in parts),
            "stats": dict(worker_counter(parts, "stats")),
            "spool": dict(worker_counter(parts, "spool")),
            "workers": workers,
        }
        return web.json_response(merged)

    async def process(self, request: web.Request) -> web.Response:
        parts = await self._all("GET", request.path)
        return web.json_response({"pid": os.getpid(), "supervisor": True, "workers": parts})

    async def reload_tls(self, request: web.Request) -> web.Response:
        parts = await self._all("POST", request.path, None, {})
        return web.json_response({"reloaded": all(p["reloaded"] for p in parts)})


class _Refused(Exception):
    """An answer that ends the request (a worker's error, or an unknown id)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _ok(answer: Answer) -> Answer:
    """``answer`` if it is a success; else the request ends with it."""
    if answer.status != 200:
        raise _Refused(
            web.Response(body=answer.body, status=answer.status, content_type=answer.content_type)
        )
    return answer


def _merge_action(parts: list[dict[str, Any]], ids: list[Any] | None = None) -> dict[str, Any]:
    """``{"frozen": ids}`` and the like (the ids in the order asked), ``{"released": n}``
    added up."""
    merged = sum_counts(parts)
    if ids is not None:
        for key, value in merged.items():
            if isinstance(value, list):
                merged[key] = ids
    return merged


def _oldest_first(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((m for part in parts for m in part["messages"]), key=lambda m: m["spool_date"])
