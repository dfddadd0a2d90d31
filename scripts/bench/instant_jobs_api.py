"""An in-memory jobs API (docs/jobs-api.md) that completes jobs at once or after a fixed delay.

The benches put it behind workflowd to isolate workflowd's own cost: no DuckDB, no worker
threads, just the HTTP surface the jobs client speaks (`POST /jobs` with idempotency, `GET
/jobs/{id}`, `GET /jobs?ids=…`, `POST /jobs/{id}/cancel`, the shared SSE stream
`GET /jobs/events` with `Last-Event-ID` replay). Besides the ISO strings it stamps every job
with `time.time_ns()` at creation and at its end, readable at `GET /bench/timings`, so the
benches compute gaps with nanosecond resolution on the same clock as their own.

Run it as its own process (`python scripts/bench/instant_jobs_api.py --listen 127.0.0.1:0
--delay-s 0`): it prints `listening on PORT` and serves until SIGTERM, so its event loop is
shared neither with workflowd nor with the bench's clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

TERMINAL = frozenset({"completed", "failed", "cancelled"})
# Replay window for `Last-Event-ID`; older ids get a `reset` event, as the data plane does.
REPLAY_EVENTS = 500_000
KEEPALIVE_S = 15.0
MAX_IDS = 500
MAX_REQUEST_LINE = 32 * 1024


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


@dataclass(slots=True)
class Job:
    job_id: str
    type: str
    input: dict[str, Any]
    idempotency_key: str | None
    tags: list[str]
    metadata: dict[str, str]
    created_ns: int
    state: str = "pending"
    updated_ns: int = 0
    ended_ns: int | None = None
    result: dict[str, Any] | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def body_matches(self, body: dict[str, Any]) -> bool:
        return (
            body.get("type") == self.type
            and body.get("input") == self.input
            and list(body.get("tags") or []) == self.tags
            and dict(body.get("metadata") or {}) == self.metadata
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "type": self.type,
            "state": self.state,
            "input": self.input,
            "result": self.result,
            "failures": [],
            "idempotency_key": self.idempotency_key,
            "tags": self.tags,
            "metadata": self.metadata,
            "created_at": _iso(self.created_ns),
            "updated_at": _iso(self.updated_ns or self.created_ns),
            "ended_at": None if self.ended_ns is None else _iso(self.ended_ns),
        }


def _result(job: Job, sequence: int) -> dict[str, Any]:
    if job.type == "materialize-view":
        return {
            "dataset_id": sequence,
            "dataset_name": job.input.get("dataset_name"),
            "created": True,
            "snapshot_id": f"snap-{sequence}",
            "recalculation_id": f"recalc-{sequence}",
            "row_count": 1,
        }
    if job.type == "execute-dml":
        return {"dataset_id": sequence, "statement_type": "INSERT", "rows_affected": 1}
    return {"dataset_id": sequence, "snapshot_id": f"snap-{sequence}", "row_count": 1}


class _Subscriber:
    """One SSE client. Its writer drains everything queued in one write, so a burst of ten
    thousand completions costs a few socket writes, not ten thousand."""

    def __init__(self, tag: str | None) -> None:
        self.tag = tag
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()

    def offer(self, job: Job, chunk: bytes) -> None:
        if self.tag is None or self.tag in job.tags:
            self.pending.append(chunk)
            self.wake.set()


class InstantJobsApi:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.jobs: dict[str, Job] = {}
        self._by_key: dict[str, Job] = {}
        self._event_ids = itertools.count(1)
        self._sequence = itertools.count(1)
        self._log: deque[tuple[int, Job, bytes]] = deque(maxlen=REPLAY_EVENTS)
        self._subscribers: set[_Subscriber] = set()
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_post("/jobs", self._submit)
        app.router.add_get("/jobs", self._list)
        app.router.add_get("/jobs/events", self._events)
        app.router.add_get("/jobs/{job_id}", self._get)
        app.router.add_post("/jobs/{job_id}/cancel", self._cancel)
        app.router.add_get("/bench/timings", self._timings)
        app.router.add_post("/bench/release", self._release)
        # The contract allows 500 ids in `GET /jobs?ids=`: ~18.5 KB of URL with UUIDs, more
        # than aiohttp's default 8190-byte request line (the data plane keeps that default).
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, max_line_size=MAX_REQUEST_LINE
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=4096)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        self._closing.set()
        for sub in self._subscribers:
            sub.wake.set()
        await self._runner.cleanup()

    # --- state changes -----------------------------------------------------------------------

    def _publish(self, job: Job) -> None:
        event_id = next(self._event_ids)
        data = json.dumps(job.to_json(), separators=(",", ":"))
        chunk = f"id: {event_id}\nevent: job\ndata: {data}\n\n".encode()
        self._log.append((event_id, job, chunk))
        for sub in self._subscribers:
            sub.offer(job, chunk)

    def _move(self, job: Job, state: str) -> None:
        now = time.time_ns()
        job.state, job.updated_ns = state, now
        if state in TERMINAL:
            job.ended_ns = now
            job.timer = None
            if state == "completed":
                job.result = _result(job, next(self._sequence))
        self._publish(job)

    # --- handlers ----------------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return web.json_response({"title": "a job needs a type"}, status=400)
        key = body.get("idempotency_key")
        if isinstance(key, str) and key in self._by_key:
            existing = self._by_key[key]
            if existing.body_matches(body):
                return web.json_response(existing.to_json(), status=200)
            return web.json_response({"title": "idempotency key reused"}, status=409)
        job = Job(
            job_id=str(uuid.uuid4()),
            type=body["type"],
            input=dict(body.get("input") or {}),
            idempotency_key=key if isinstance(key, str) else None,
            tags=list(body.get("tags") or []),
            metadata=dict(body.get("metadata") or {}),
            created_ns=time.time_ns(),
        )
        self.jobs[job.job_id] = job
        if job.idempotency_key is not None:
            self._by_key[job.idempotency_key] = job
        self._publish(job)
        # One timer per job, not one task: ten thousand waiting jobs cost ten thousand handles.
        # A negative delay holds every job until `POST /bench/release`.
        if self.delay_s >= 0:
            loop = asyncio.get_running_loop()
            job.timer = loop.call_later(self.delay_s, self._move, job, "completed")
        return web.json_response(job.to_json(), status=201)

    async def _release(self, _: web.Request) -> web.Response:
        """Complete every held job now (with `--delay-s -1`), and from now on at once."""
        self.delay_s = 0.0
        held = [job for job in self.jobs.values() if job.state not in TERMINAL]
        for job in held:
            self._move(job, "completed")
        return web.json_response({"released": len(held)})

    async def _get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return web.json_response({"title": "no such job"}, status=404)
        return web.json_response(job.to_json())

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        per_page = max(1, min(int(query.get("per_page", "50")), MAX_IDS))
        offset = max(0, int(query.get("offset", "0")))
        ids = [i for i in query.get("ids", "").split(",") if i]
        if len(ids) > MAX_IDS:
            return web.json_response({"title": f"at most {MAX_IDS} ids"}, status=400)
        found: Iterable[Job] = (
            (self.jobs[i] for i in ids if i in self.jobs) if ids else self.jobs.values()
        )
        run_id = query.get("workflow_run_id")
        matching = [
            job
            for job in found
            if (run_id is None or job.metadata.get("workflow_run_id") == run_id)
            and ("tag" not in query or query["tag"] in job.tags)
            and ("state" not in query or job.state == query["state"])
        ]
        page = matching[offset : offset + per_page]
        return web.json_response(
            {
                "records": [job.to_json() for job in page],
                "current_page": offset // per_page + 1,
                "total_pages": -(-len(matching) // per_page),
                "total_records": len(matching),
            }
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return web.json_response({"title": "no such job"}, status=404)
        if job.state in TERMINAL:
            return web.json_response({"title": f"job already {job.state}"}, status=409)
        if job.timer is not None:
            job.timer.cancel()
        self._move(job, "pending_cancellation")
        self._move(job, "cancelled")
        return web.json_response(job.to_json())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        sub = _Subscriber(request.query.get("tag"))
        last = request.headers.get("Last-Event-ID")
        # Subscribe before replaying, and replay synchronously, so no event falls in between.
        self._subscribers.add(sub)
        try:
            if last is not None:
                self._replay(sub, int(last))
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):  # the client left: end the stream
                await self._pump(response, sub)
            return response
        finally:
            self._subscribers.discard(sub)

    def _replay(self, sub: _Subscriber, after: int) -> None:
        oldest = self._log[0][0] if self._log else after + 1
        if after < oldest - 1:
            sub.pending.append(b'event: reset\ndata: {"reason": "event id not retained"}\n\n')
            sub.wake.set()
            return
        for event_id, job, chunk in self._log:
            if event_id > after:
                sub.offer(job, chunk)

    async def _pump(self, response: web.StreamResponse, sub: _Subscriber) -> None:
        while not self._closing.is_set():
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    await sub.wake.wait()
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            sub.wake.clear()
            chunks, sub.pending = sub.pending, []
            if chunks:
                await response.write(b"".join(chunks))

    async def _timings(self, request: web.Request) -> web.Response:
        """Nanosecond creation and end of every job, with the run and task it belongs to."""
        return web.json_response(
            {
                job.job_id: {
                    "created_ns": job.created_ns,
                    "ended_ns": job.ended_ns,
                    "run_id": job.metadata.get("workflow_run_id"),
                    "task": job.metadata.get("task_name"),
                    "state": job.state,
                }
                for job in self.jobs.values()
            }
        )


# --- processes the benches start ---------------------------------------------------------------


class Child:
    """A process a bench started: `spawn()` waits for its ready line, `stop()` ends it.

    Its stderr goes to a file (a full pipe would stall it); stdout stays readable for the
    lines the bench asks for.
    """

    def __init__(self, proc: asyncio.subprocess.Process, ready: re.Match[str]) -> None:
        self.proc = proc
        self.ready = ready

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        ready: str,
        stderr: Path,
        timeout_s: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> Child:
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=err, env=env
            )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                while raw := await proc.stdout.readline():
                    match = re.search(ready, raw.decode())
                    if match is not None:
                        return cls(proc, match)
        except TimeoutError:
            pass
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"{argv[0]} did not start; see {stderr}")

    async def readline(self) -> str:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"process {self.proc.pid} ended (exit {self.proc.returncode})")
        return raw.decode()

    def status_mb(self, field_name: str) -> float:
        """A memory figure of /proc/<pid>/status in MB (VmHWM: peak RSS; VmRSS: current)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field_name} in /proc/{self.proc.pid}/status")

    def cpu_s(self) -> float:
        """User plus system CPU seconds the process has used (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout_s):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def spawn_instant_api(delay_s: float, stderr: Path) -> tuple[Child, str]:
    """The instant API in its own process; returns it and its base URL."""
    child = await Child.spawn(
        [sys.executable, __file__, "--listen", "127.0.0.1:0", "--delay-s", str(delay_s)],
        r"listening on (\d+)",
        stderr,
    )
    return child, f"http://127.0.0.1:{child.ready.group(1)}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always one of the observed values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def _serve(host: str, port: int, delay_s: float) -> None:
    api = InstantJobsApi(delay_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = await api.start(host, port)
    print(f"listening on {bound}", flush=True)
    await stop.wait()
    await api.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT")
    parser.add_argument(
        "--delay-s", type=float, default=0.0, help="job duration (negative: until released)"
    )
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(_serve(host, int(port), args.delay_s))


if __name__ == "__main__":
    main()
