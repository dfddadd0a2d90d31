"""A test double of a remote jobs system: the jobs HTTP API of docs/jobs-api.md on loopback, in memory,
with knobs for the faults a real network and a real jobs system produce.

Jobs stay `pending` until the test ends them (`complete`, `fail`), unless `auto_complete` is set.
`inject()` queues faults for matching requests: `status` (e.g. 503), `reset` (the connection is
closed without an answer), `stall` (no answer until the server closes), `malformed` (a 200 whose
body is not JSON). Counters tell tests how many requests and stream connections were made.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

JOB_TYPES = frozenset({"materialize-view", "refresh-materialized-view", "execute-dml"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})
_DROP = object()  # queued to a stream to make it abort its connection
_END = object()  # queued to a stream to make it end cleanly (server closing)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


@dataclass
class Fault:
    kind: str  # "status" | "reset" | "stall" | "malformed"
    count: int
    status: int = 503
    method: str | None = None
    path_prefix: str = "/"


@dataclass
class FakeJobsApi:
    token: str | None = None
    auto_complete: bool = False
    # With auto_complete: the POST's answer shows the job as created (pending), while its
    # completion is already on the streams, as a fast jobs system's may be.
    answer_pending: bool = False
    no_stream: bool = False
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path_qs)
    submitted_bodies: list[bytes] = field(default_factory=list)
    stream_connects: int = 0
    last_event_ids: list[str | None] = field(default_factory=list)  # header of each connect
    authorizations: list[str] = field(default_factory=list)  # the header of each request
    # Called with each request's path as it arrives, before it is answered (the world
    # changing while the request was on its way).
    on_request: Callable[[str], None] | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._keys: dict[str, tuple[bytes, str]] = {}
        self._log: list[tuple[int, dict[str, Any]]] = []  # (event id, job snapshot)
        self._oldest_kept = 1  # events below this id are "too old": reconnecting gets `reset`
        self._streams: set[asyncio.Queue[object]] = set()
        self._faults: list[Fault] = []
        self._closing = asyncio.Event()
        self.stream_connected = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/jobs", self._submit)
        app.router.add_get("/jobs", self._list)
        app.router.add_get("/jobs/events", self._events)
        app.router.add_get("/jobs/{job_id}", self._get)
        app.router.add_post("/jobs/{job_id}/cancel", self._cancel)
        app.middlewares.append(self._middleware)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        self._closing.set()
        for queue in self._streams:
            queue.put_nowait(_END)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- knobs -------------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        count: int = 1,
        *,
        status: int = 503,
        method: str | None = None,
        path_prefix: str = "/",
    ) -> None:
        self._faults.append(Fault(kind, count, status, method, path_prefix))

    def complete(self, job_id: str, result: dict[str, Any] | None = None) -> None:
        self._transition(job_id, "completed", result=result or {"rows_affected": 1})

    def fail(self, job_id: str, message: str) -> None:
        failure = {"message": message, "timestamp": _now(), "value": None}
        self.jobs[job_id]["failures"].append(failure)
        self._transition(job_id, "failed")

    def vanish(self, job_id: str) -> None:
        del self.jobs[job_id]

    def forget_events(self) -> None:
        """Drop the event history: a later `Last-Event-ID` is answered with `reset`."""
        self._oldest_kept = next(self._event_ids)
        self._log.clear()

    def drop_streams(self) -> None:
        for queue in self._streams:
            queue.put_nowait(_DROP)

    def keepalive(self) -> None:
        for queue in self._streams:
            queue.put_nowait(": keepalive\n\n")

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.split("?")[0] == path)

    def path_counts(self) -> Counter[str]:
        return Counter(p.split("?")[0] for _, p in self.requests)

    # --- jobs --------------------------------------------------------------------------------

    def _transition(self, job_id: str, state: str, *, result: Any = None) -> None:
        job = self.jobs[job_id]
        job.update(state=state, updated_at=_now())
        if result is not None:
            job["result"] = result
        if state in TERMINAL:
            job["ended_at"] = job["updated_at"]
        self._publish(job)

    def _publish(self, job: dict[str, Any]) -> None:
        snapshot = json.loads(json.dumps(job))
        event_id = next(self._event_ids)
        self._log.append((event_id, snapshot))
        for queue in self._streams:
            queue.put_nowait((event_id, snapshot))

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        job_id = f"job-{next(self._ids)}"
        now = _now()
        job = {
            "job_id": job_id,
            "type": body["type"],
            "state": "pending",
            "input": body.get("input", {}),
            "result": None,
            "failures": [],
            "idempotency_key": body.get("idempotency_key"),
            "tags": body.get("tags", []),
            "metadata": body.get("metadata", {}),
            "created_at": now,
            "updated_at": now,
            "ended_at": None,
        }
        self.jobs[job_id] = job
        self._publish(job)
        answer = dict(job) if self.answer_pending else job
        if self.auto_complete:
            self.complete(job_id)
        return answer

    # --- handlers ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        self.authorizations.append(request.headers.get("Authorization", ""))
        if self.on_request is not None:
            self.on_request(request.path)
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return _problem(401, "Unauthorized", "missing or wrong bearer token")
        fault = self._take_fault(request)
        if fault is None:
            response: web.StreamResponse = await handler(request)
            return response
        if fault.kind == "status":
            return _problem(fault.status, "Unavailable", "injected fault")
        if fault.kind == "malformed":
            body = b'{"job_id": "x", trunc'
            return web.Response(status=200, body=body, content_type="application/json")
        if fault.kind == "stall":
            await self._closing.wait()
        assert request.transport is not None
        request.transport.close()  # "reset": the client sees the connection die unanswered
        raise asyncio.CancelledError

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self._faults:
            method_ok = fault.method is None or fault.method == request.method
            if method_ok and request.path.startswith(fault.path_prefix) and fault.count > 0:
                fault.count -= 1
                return fault
        return None

    async def _submit(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.submitted_bodies.append(raw)
        body = json.loads(raw)
        if body.get("type") not in JOB_TYPES:
            return _problem(422, "Invalid job", f"unknown job type {body.get('type')!r}")
        key = body.get("idempotency_key")
        canonical = json.dumps(body, sort_keys=True).encode()
        if key in self._keys:
            seen, job_id = self._keys[key]
            if seen != canonical:
                return _problem(409, "Conflict", f"idempotency key {key} has another body")
            return web.json_response(self.jobs[job_id], status=200)
        job = self._create(body)
        self._keys[key] = (canonical, job["job_id"])
        return web.json_response(job, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return _problem(404, "Not found", "no such job")
        return web.json_response(job)

    async def _cancel(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        if job_id not in self.jobs:
            return _problem(404, "Not found", "no such job")
        if self.jobs[job_id]["state"] in TERMINAL:
            return _problem(409, "Conflict", "job already ended")
        self._transition(job_id, "pending_cancellation")
        self._transition(job_id, "cancelled")
        return web.json_response(self.jobs[job_id])

    async def _list(self, request: web.Request) -> web.Response:
        ids = [i for i in request.query.get("ids", "").split(",") if i]
        if len(ids) > 500:
            return _problem(400, "Too many ids", "at most 500 ids")
        records = [self.jobs[i] for i in ids if i in self.jobs]
        page = {"records": records, "current_page": 1, "total_pages": 1}
        return web.json_response({**page, "total_records": len(records)})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self.no_stream:
            return _problem(404, "Not found", "this jobs API has no event stream")
        last = request.headers.get("Last-Event-ID")
        self.stream_connects += 1
        self.last_event_ids.append(last)
        # Fill the queue and subscribe it without an await in between, so the replay and the
        # live events form one ordered sequence with no gap and no duplicate.
        queue: asyncio.Queue[object] = asyncio.Queue()
        queue.put_nowait(": connected\n\n")
        if last is not None and int(last) + 1 < self._oldest_kept:
            queue.put_nowait('event: reset\ndata: {"reason": "last event id too old"}\n\n')
        elif last is not None:
            for event_id, job in self._log:
                if event_id > int(last):
                    queue.put_nowait((event_id, job))
        self._streams.add(queue)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            self.stream_connected.set()
            await self._serve_stream(request, response, queue)
        finally:
            self._streams.discard(queue)
        return response

    async def _serve_stream(
        self, request: web.Request, response: web.StreamResponse, queue: Any
    ) -> None:
        tag = request.query.get("tag")
        while True:
            item = await queue.get()
            if item is _END:
                return
            if item is _DROP:
                assert request.transport is not None
                request.transport.close()
                return
            if isinstance(item, str):
                await response.write(item.encode())
                continue
            event_id, job = item
            if tag is not None and tag not in job["tags"]:
                continue
            frame = f"id: {event_id}\nevent: job\ndata: {json.dumps(job)}\n\n"
            await response.write(frame.encode())
